package jetstream_test

import (
	"context"
	"testing"
	"time"

	"github.com/stevedore/stevedore/internal/testutil/natstest"
	"github.com/stevedore/stevedore/pkg/events"
	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
)

// Catching up, FollowBatches delivers big batches; at the head of the log
// it delivers each new event at once.
func TestFollowBatches(t *testing.T) {
	s := natstest.Start(t)
	pub := sdjs.NewPublisher(s.JS)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 2500
	for i := 0; i < n; i++ {
		if _, err := s.JS.PublishAsync(events.Subject("default", events.KindPull, "op", events.TypePullRequested, ""),
			[]byte(`{"id":"x","type":"pull-requested","v":1,"ns":"default","payload":{}}`)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-s.JS.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatal("publishing timed out")
	}

	type batch struct {
		first, last uint64
		size        int
		pending     uint64
		at          time.Time
	}
	got := make(chan batch, 100)
	errc := make(chan error, 1)
	go func() {
		errc <- sdjs.FollowBatches(ctx, s.JS, sdjs.FollowConfig{BatchSize: 1000, BatchDelay: time.Second},
			func(b []*events.Envelope, pending uint64) error {
				for i := 1; i < len(b); i++ {
					if b[i].Seq != b[i-1].Seq+1 {
						t.Errorf("batch out of order at %d: %d after %d", i, b[i].Seq, b[i-1].Seq)
					}
				}
				got <- batch{b[0].Seq, b[len(b)-1].Seq, len(b), pending, time.Now()}
				return nil
			})
	}()
	var next uint64 = 1
	var batches int
	for next <= n {
		b := <-got
		if b.first != next || b.size > 1000 {
			t.Fatalf("batch %+v, want one starting at %d of at most 1000", b, next)
		}
		next = b.last + 1
		batches++
	}
	if batches > 10 {
		t.Errorf("%d batches for %d events: catch-up is not batching", batches, n)
	}

	// At the head, one new event comes alone and promptly, not after the delay.
	sent := time.Now()
	if _, err := pub.Publish(ctx, newEvent(t, "live", events.TypePullRequested)); err != nil {
		t.Fatal(err)
	}
	b := <-got
	if b.size != 1 || b.first != n+1 || b.pending != 0 {
		t.Fatalf("live batch %+v, want event %d alone", b, n+1)
	}
	if took := b.at.Sub(sent); took > 500*time.Millisecond {
		t.Errorf("a live event took %v to be delivered; the batch delay is 1s and should not apply at the head", took)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
