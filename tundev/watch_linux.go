package tundev

import (
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// resubscribeDelay is how long runWatcher waits before subscribing again
// after the kernel ended a subscription (for example on a receive buffer
// overflow).
const resubscribeDelay = 100 * time.Millisecond

// linkState is the last state runWatcher reported.
type linkState struct {
	known   bool
	up      bool
	mtu     int
	removed bool
}

// subscribe starts a netlink link subscription in the device's namespace.
// It stops when done is closed; the returned channel is then closed.
func (d *Device) subscribe(done <-chan struct{}) (<-chan netlink.LinkUpdate, error) {
	ch := make(chan netlink.LinkUpdate, 16)
	opts := netlink.LinkSubscribeOptions{
		ListExisting: true, // the dump gives the current state first
		// Receive errors end the subscription (the channel closes);
		// runWatcher then resubscribes. Nothing to do here.
		ErrorCallback: func(error) {},
	}
	if d.ns.IsOpen() {
		ns := d.ns
		opts.Namespace = &ns
	}
	if err := netlink.LinkSubscribeWithOptions(ch, done, opts); err != nil {
		return nil, err
	}
	return ch, nil
}

// startWatcher subscribes once synchronously, so Open reports a failure,
// and hands the subscription to runWatcher.
func (d *Device) startWatcher() error {
	sub := make(chan struct{})
	ch, err := d.subscribe(sub)
	if err != nil {
		close(sub)
		return wrapSys("monitor link", d.subject(), err)
	}
	d.stop = make(chan struct{})
	d.watchDone = make(chan struct{})
	go d.runWatcher(sub, ch)
	return nil
}

// runWatcher turns link updates of the device into Events until Close. It
// owns the subscription: sub is closed to end it, ch is drained until the
// netlink package closes it, so none of that package's goroutines is left
// blocked.
func (d *Device) runWatcher(sub chan struct{}, ch <-chan netlink.LinkUpdate) {
	defer close(d.watchDone)
	defer close(d.events)
	var st linkState
	for {
		stopped := false
	recv:
		for {
			select {
			case u, ok := <-ch:
				if !ok {
					break recv
				}
				d.handleUpdate(&u, &st)
			case <-d.stop:
				stopped = true
				break recv
			}
		}
		close(sub)
		for range ch {
		}
		if stopped {
			return
		}
		// The kernel ended the subscription; subscribe again. The
		// dump that starts the new one lets handleUpdate catch up on
		// anything missed, reporting only real changes.
		for {
			select {
			case <-d.stop:
				return
			case <-time.After(resubscribeDelay):
			}
			sub = make(chan struct{})
			var err error
			if ch, err = d.subscribe(sub); err == nil {
				break
			}
			close(sub)
		}
	}
}

// handleUpdate compares one update with the last reported state and emits
// the differences.
func (d *Device) handleUpdate(u *netlink.LinkUpdate, st *linkState) {
	if int(u.Index) != d.index || st.removed || u.Link == nil {
		return
	}
	if u.Header.Type == unix.RTM_DELLINK {
		st.removed = true
		d.emit(Event{Kind: EventRemoved, MTU: st.mtu})
		return
	}
	up := u.Flags&unix.IFF_UP != 0 && u.Flags&unix.IFF_RUNNING != 0
	mtu := u.Link.Attrs().MTU
	if !st.known {
		*st = linkState{known: true, up: up, mtu: mtu}
		d.emit(Event{Kind: upDown(up), MTU: mtu})
		return
	}
	if mtu != st.mtu {
		st.mtu = mtu
		d.emit(Event{Kind: EventMTU, MTU: mtu})
	}
	if up != st.up {
		st.up = up
		d.emit(Event{Kind: upDown(up), MTU: mtu})
	}
}

func upDown(up bool) EventKind {
	if up {
		return EventUp
	}
	return EventDown
}

// emit delivers ev without blocking: when the buffer is full the oldest
// event is dropped. runWatcher is the only sender, so the loop ends after
// at most one drop.
func (d *Device) emit(ev Event) {
	for {
		select {
		case d.events <- ev:
			return
		default:
		}
		select {
		case <-d.events:
		default:
		}
	}
}
