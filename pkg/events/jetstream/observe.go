package jetstream

import (
	"sync/atomic"
	"time"
)

// Observer is told what the adapter does, for metrics: the daemons install
// pkg/metrics' with SetObserver. Without one nothing is counted, and a
// client such as ctl does not link a metrics library at all.
type Observer interface {
	// Published: an event of type t was appended.
	Published(t string)
	// Skipped: reader (a consumer or follower) skipped a message, for
	// reason "undecodable" or "newer-schema".
	Skipped(reader, reason string)
	// Redelivered: consumer got an event of type t again.
	Redelivered(consumer, t string)
	// Handled: consumer's handler took took for an event of type t, with
	// outcome ok, retry, failed or shutdown.
	Handled(consumer, t, outcome string, took time.Duration)
	// FailureRecorded: consumer gave up on an event of type t and recorded
	// the failure.
	FailureRecorded(consumer, t string)
	// ConsumerLag: consumer's num_pending and num_ack_pending, sampled.
	ConsumerLag(consumer string, pending, ackPending uint64)
}

type observerBox struct{ o Observer }

var observer atomic.Pointer[observerBox]

// SetObserver makes o the process's observer (nil: none).
func SetObserver(o Observer) {
	if o == nil {
		observer.Store(nil)
		return
	}
	observer.Store(&observerBox{o})
}

func obs() Observer {
	if b := observer.Load(); b != nil {
		return b.o
	}
	return nopObserver{}
}

type nopObserver struct{}

func (nopObserver) Published(string)                              {}
func (nopObserver) Skipped(string, string)                        {}
func (nopObserver) Redelivered(string, string)                    {}
func (nopObserver) Handled(string, string, string, time.Duration) {}
func (nopObserver) FailureRecorded(string, string)                {}
func (nopObserver) ConsumerLag(string, uint64, uint64)            {}
