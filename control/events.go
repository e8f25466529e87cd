package control

import (
	"sync"
	"sync/atomic"

	"github.com/tunrouter/router/conntrack"
)

// Event is one connection event as the event stream sends it (conntrack -E).
type Event struct {
	Type  string `json:"type"` // NEW, UPDATE, DESTROY
	Entry Entry  `json:"entry"`
}

// EventHub fans connection events out to subscribers. It implements
// conntrack.EventSink: Event is called on worker goroutines, never blocks,
// and costs one atomic load when nobody listens. A subscriber that does not
// keep up loses events (counted in Lost).
type EventHub struct {
	mu   sync.Mutex
	subs map[chan Event]struct{}
	n    atomic.Int32
	lost atomic.Uint64
}

// NewEventHub returns a hub with no subscribers.
func NewEventHub() *EventHub { return &EventHub{subs: map[chan Event]struct{}{}} }

// Event implements conntrack.EventSink.
func (h *EventHub) Event(t conntrack.EventType, info *conntrack.EntryInfo) {
	if h.n.Load() == 0 {
		return
	}
	ev := Event{Type: t.String(), Entry: EntryOf(info)}
	h.mu.Lock()
	for ch := range h.subs {
		select {
		case ch <- ev:
		default:
			h.lost.Add(1)
		}
	}
	h.mu.Unlock()
}

// Subscribe returns a channel of events (buffer n) and a cancel function.
func (h *EventHub) Subscribe(n int) (<-chan Event, func()) {
	ch := make(chan Event, n)
	h.mu.Lock()
	h.subs[ch] = struct{}{}
	h.n.Add(1)
	h.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			h.mu.Lock()
			delete(h.subs, ch)
			h.n.Add(-1)
			h.mu.Unlock()
		})
	}
}

// Lost returns the number of events dropped for slow subscribers.
func (h *EventHub) Lost() uint64 { return h.lost.Load() }
