package client_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stevedore/stevedore/internal/testutil/natstest"
	"github.com/stevedore/stevedore/pkg/client"
	"github.com/stevedore/stevedore/pkg/events"
	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
)

// publishFast appends n events of container id from workers goroutines at
// once through pub and returns, by log sequence, the id of each event it
// appended.
func publishFast(pub *sdjs.Publisher, id string, n, workers int) (map[uint64]string, error) {
	var mu sync.Mutex
	ids := make(map[uint64]string, n)
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				ev, err := events.New(events.Meta{Namespace: "default", Operation: "op-" + id, Actor: "tester", Node: "node-1"},
					events.TypeContainerLabelsUpdated, events.ContainerAggregate(id),
					events.ContainerLabelsUpdated{ID: id, Labels: map[string]string{"n": fmt.Sprint(i)}})
				if err != nil {
					errc <- err
					return
				}
				seq, err := pub.Publish(context.Background(), ev)
				if err != nil {
					errc <- fmt.Errorf("publish %s %d: %w", id, i, err)
					return
				}
				mu.Lock()
				ids[seq] = ev.ID
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		return nil, err
	}
	if len(ids) != n {
		return nil, fmt.Errorf("published %d events of %s, the log acknowledged %d distinct sequences", n, id, len(ids))
	}
	return ids, nil
}

// A subscriber of the log (the read `ctl events` does) that falls far
// behind a fast publisher — its callback blocked while thousands of events
// are appended, then slow — still receives every event exactly once, in
// log order, with no gap, and then the events appended after it caught up:
// the log is a durable replay, not a bus that drops what a slow reader
// cannot take.
//
// Blocked for longer than twice the consumer's idle heartbeat (5s in the
// NATS client), the subscriber also misses heartbeats while it is stuck.
func TestEventsSlowSubscriberMissesNothing(t *testing.T) {
	t.Run("blocked 1s", func(t *testing.T) { slowSubscriber(t, time.Second) })
	t.Run("blocked past the heartbeat window", func(t *testing.T) {
		if testing.Short() {
			t.Skip("takes 12s")
		}
		slowSubscriber(t, 11*time.Second)
	})
}

// slowSubscriber runs TestEventsSlowSubscriberMissesNothing with the
// subscriber blocked for at least blockFor.
func slowSubscriber(t *testing.T, blockFor time.Duration) {
	const (
		behind  = 5000 // appended while the subscriber is blocked
		after   = 300  // appended once it has caught up
		slowFor = 500  // events it then takes a millisecond each over
	)
	s := natstest.Start(t)
	a := newAppender(t, s)
	burst(a, "old", 20)()
	c := newClient(t, s)
	_, js := s.Connect(t)
	pub := sdjs.NewPublisher(js)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Tail from now, as `ctl events` does: append markers until the tail
	// sees one, so it is known to be subscribed.
	stopMarkers := make(chan struct{})
	var markers sync.WaitGroup
	markers.Add(1)
	go func() {
		defer markers.Done()
		for {
			select {
			case <-stopMarkers:
				return
			case <-time.After(20 * time.Millisecond):
				a.at(0, "default", "", "tester", "", events.TypeContainerDeleted, events.ContainerAggregate("marker"), events.ContainerDeleted{ID: "marker"})
			}
		}
	}()

	var (
		got       []*events.Envelope
		published map[uint64]string // by sequence, the id of each event of the bursts
		behindEnd uint64            // the log's end when the subscriber was unblocked
		afterIDs  map[uint64]string
		afterErr  error
		afterDone = make(chan struct{})
		unblocked time.Time
	)
	err := c.Events(ctx, client.EventsOptions{}, func(ev *events.Envelope) error {
		got = append(got, ev)
		switch {
		case len(got) == 1:
			// Block the subscriber while a fast publisher appends
			// thousands of events: it falls far behind.
			close(stopMarkers)
			markers.Wait()
			t0 := time.Now()
			var err error
			if published, err = publishFast(pub, "fast", behind, 8); err != nil {
				return err
			}
			if behindEnd, err = sdjs.LastSeq(ctx, js); err != nil {
				return err
			}
			t.Logf("appended %d events in %v", behind, time.Since(t0).Round(time.Millisecond))
			time.Sleep(blockFor) // and it stays blocked a while longer
			t.Logf("subscriber blocked at %d for %v while the log grew to %d", ev.Seq, time.Since(t0).Round(time.Millisecond), behindEnd)
			unblocked = time.Now()
		case len(got) <= slowFor:
			time.Sleep(time.Millisecond) // then slow
		}
		switch ev.Seq {
		case behindEnd:
			// Caught up: append more, which must follow with no gap.
			t.Logf("caught up with %d events in %v after being unblocked", behindEnd-got[0].Seq, time.Since(unblocked).Round(time.Millisecond))
			go func() {
				defer close(afterDone)
				afterIDs, afterErr = publishFast(pub, "after", after, 4)
			}()
		case behindEnd + after:
			return errEnough // nothing else appends
		}
		return nil
	})
	if !errors.Is(err, errEnough) {
		var last uint64
		if len(got) > 0 {
			last = got[len(got)-1].Seq
		}
		t.Fatalf("Events ended with %v after %d events, the last at %d; want every event to %d", err, len(got), last, behindEnd+after)
	}
	<-afterDone
	if afterErr != nil {
		t.Fatal(afterErr)
	}
	for seq, id := range afterIDs {
		published[seq] = id
	}

	// Every sequence from the first one seen to the log's end, exactly once
	// and in order.
	last, err := sdjs.LastSeq(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if final := got[len(got)-1].Seq; final != last {
		t.Fatalf("the subscriber stopped at %d, the log ends at %d", final, last)
	}
	checkContiguous(t, got, got[0].Seq)
	if want := last - got[0].Seq + 1; uint64(len(got)) != want {
		t.Fatalf("received %d events from %d to %d, want %d", len(got), got[0].Seq, last, want)
	}
	// And each is the event appended at its sequence: all of both bursts.
	if len(published) != behind+after {
		t.Fatalf("%d events appended, want %d", len(published), behind+after)
	}
	seen := 0
	for _, ev := range got {
		id, ok := published[ev.Seq]
		if !ok {
			continue // a marker
		}
		if ev.ID != id {
			t.Fatalf("event at %d is %s, the publisher appended %s there", ev.Seq, ev.ID, id)
		}
		seen++
	}
	if seen != behind+after {
		t.Fatalf("received %d of the %d events appended", seen, behind+after)
	}
}
