package tundev

import "strconv"

// EventKind says what changed on the link.
type EventKind uint8

const (
	// EventUp: the link is administratively up and running (carrier on,
	// which for a TUN device means at least one queue is attached).
	EventUp EventKind = iota + 1
	// EventDown: the link is down or not running.
	EventDown
	// EventMTU: the MTU changed; Event.MTU holds the new value.
	EventMTU
	// EventRemoved: the link was deleted (for example with ip link del);
	// the queues return os.ErrClosed from now on. No event follows.
	EventRemoved
)

func (k EventKind) String() string {
	switch k {
	case EventUp:
		return "up"
	case EventDown:
		return "down"
	case EventMTU:
		return "mtu"
	case EventRemoved:
		return "removed"
	}
	return "EventKind(" + strconv.Itoa(int(k)) + ")"
}

// Event is a change of the link's state. The first event on a Device's
// channel is EventUp or EventDown describing the state when monitoring
// started.
type Event struct {
	Kind EventKind
	// MTU is the link's MTU at the time of the event.
	MTU int
}

func (e Event) String() string {
	return e.Kind.String() + " mtu=" + strconv.Itoa(e.MTU)
}

// eventBuffer is the capacity of a Device's event channel. When a consumer
// falls further behind, the oldest events are dropped so that the newest
// state is always delivered.
const eventBuffer = 8

// LinkStats are the kernel's counters of a TUN link (see Device.LinkStats).
type LinkStats struct {
	RxPackets, TxPackets uint64
	RxDropped, TxDropped uint64
	RxErrors, TxErrors   uint64
}
