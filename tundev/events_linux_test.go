package tundev

import (
	"errors"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tunrouter/router/tundev/tundevtest"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

func timeout() <-chan time.Time { return time.After(5 * time.Second) }

func nextEvent(t *testing.T, d *Device) Event {
	t.Helper()
	select {
	case ev, ok := <-d.Events():
		if !ok {
			t.Fatal("event channel closed")
		}
		return ev
	case <-timeout():
		t.Fatal("timed out waiting for an event")
	}
	return Event{}
}

// checkNoWatchers fails t if a link watcher or netlink subscription
// goroutine is still running (after every Device of the test is closed).
func checkNoWatchers(t *testing.T) {
	t.Helper()
	var stacks string
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		buf := make([]byte, 1<<20)
		stacks = string(buf[:runtime.Stack(buf, true)])
		if !strings.Contains(stacks, "tundev.(*Device).runWatcher") &&
			!strings.Contains(stacks, "netlink.linkSubscribeAt") &&
			!strings.Contains(stacks, "tundevtest.InNetns") {
			return
		}
	}
	t.Errorf("goroutines left behind after Close:\n%s", stacks)
}

func TestEvents(t *testing.T) {
	tundevtest.RequirePrivileges(t)
	nsName, nsPath := tundevtest.NewNetns(t, "tundev")
	d, err := Open(Config{Name: "ev0", Netns: nsPath, Addresses: []netip.Prefix{nsAddr4}, Up: true})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		ip   []string // ip(8) command run in the namespace first; nil for none
		want Event
	}{
		{"initial-state", nil, Event{EventUp, DefaultMTU}},
		{"mtu-change", []string{"link", "set", "ev0", "mtu", "1300"}, Event{EventMTU, 1300}},
		{"admin-down", []string{"link", "set", "ev0", "down"}, Event{EventDown, 1300}},
		{"admin-up", []string{"link", "set", "ev0", "up"}, Event{EventUp, 1300}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.ip != nil {
				tundevtest.IP(t, nsName, st.ip...)
			}
			if got := nextEvent(t, d); got != st.want {
				t.Errorf("event %v, want %v", got, st.want)
			}
		})
	}
	// No spurious events: an unrelated link change is not reported.
	tundevtest.IP(t, nsName, "tuntap", "add", "dev", "other9", "mode", "tun")
	tundevtest.IP(t, nsName, "link", "set", "other9", "up")
	tundevtest.IP(t, nsName, "link", "set", "other9", "mtu", "1280")
	select {
	case ev := <-d.Events():
		t.Errorf("unexpected event %v after a change on another link", ev)
	case <-time.After(200 * time.Millisecond):
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-d.Events(); ok {
		t.Errorf("event channel not closed by Close")
	}
	checkNoWatchers(t)
}

func TestEventRemoved(t *testing.T) {
	tundevtest.RequirePrivileges(t)
	nsName, nsPath := tundevtest.NewNetns(t, "tundev")
	d := openTest(t, Config{Name: "ev1", Netns: nsPath, Up: true})
	if ev := nextEvent(t, d); ev.Kind != EventUp {
		t.Fatalf("initial event %v", ev)
	}
	tundevtest.IP(t, nsName, "link", "del", "ev1")
	// The kernel drops the carrier before it unregisters the link, so a
	// down event may come first.
	ev := nextEvent(t, d)
	if ev.Kind == EventDown {
		ev = nextEvent(t, d)
	}
	if ev.Kind != EventRemoved {
		t.Fatalf("event %v, want removed", ev)
	}
	// The queue is detached: reads fail instead of blocking.
	q := d.Queues()[0]
	bufs := [][]byte{make([]byte, testOffset+65535)}
	if _, err := q.Read(bufs, []int{0}, testOffset); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Read on removed device: %v, want os.ErrClosed", err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("Close after removal: %v", err)
	}
	checkNoWatchers(t)
}

// update builds a synthetic netlink link update.
func update(typ uint16, index int32, flags uint32, mtu int) netlink.LinkUpdate {
	var u netlink.LinkUpdate
	u.Header.Type = typ
	u.IfInfomsg = nl.IfInfomsg{IfInfomsg: unix.IfInfomsg{Index: index, Flags: flags}}
	u.Link = &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Index: int(index), MTU: mtu}}
	return u
}

func TestHandleUpdate(t *testing.T) {
	const up = unix.IFF_UP | unix.IFF_RUNNING
	d := &Device{index: 7, events: make(chan Event, 16)}
	var st linkState
	steps := []struct {
		name string
		u    netlink.LinkUpdate
		want []Event
	}{
		{"other-link-ignored", update(unix.RTM_NEWLINK, 8, up, 1500), nil},
		{"first-state", update(unix.RTM_NEWLINK, 7, up, 1500), []Event{{EventUp, 1500}}},
		{"unchanged", update(unix.RTM_NEWLINK, 7, up, 1500), nil},
		{"admin-up-no-carrier-is-down", update(unix.RTM_NEWLINK, 7, unix.IFF_UP, 1500), []Event{{EventDown, 1500}}},
		{"mtu-and-up-together", update(unix.RTM_NEWLINK, 7, up, 9000), []Event{{EventMTU, 9000}, {EventUp, 9000}}},
		{"removed", update(unix.RTM_DELLINK, 7, 0, 9000), []Event{{EventRemoved, 9000}}},
		{"after-removal-ignored", update(unix.RTM_NEWLINK, 7, up, 1400), nil},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			d.handleUpdate(&s.u, &st)
			var got []Event
			for len(d.events) > 0 {
				got = append(got, <-d.events)
			}
			if len(got) != len(s.want) {
				t.Fatalf("events %v, want %v", got, s.want)
			}
			for i := range got {
				if got[i] != s.want[i] {
					t.Errorf("event %d = %v, want %v", i, got[i], s.want[i])
				}
			}
		})
	}
}

func TestEmitDropsOldest(t *testing.T) {
	d := &Device{events: make(chan Event, eventBuffer)}
	const extra = 3
	for i := 0; i < eventBuffer+extra; i++ {
		d.emit(Event{Kind: EventMTU, MTU: 1000 + i})
	}
	if len(d.events) != eventBuffer {
		t.Fatalf("%d events buffered, want %d", len(d.events), eventBuffer)
	}
	for i := extra; i < eventBuffer+extra; i++ {
		if ev := <-d.events; ev.MTU != 1000+i {
			t.Fatalf("got %v, want mtu %d: the oldest events must be the ones dropped", ev, 1000+i)
		}
	}
}
