package jetstream_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stevedore/stevedore/internal/testutil/natstest"
	"github.com/stevedore/stevedore/pkg/events"
	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
)

// A handler that runs for several AckWaits keeps its event: the consumer's
// in-progress acks stop the server from redelivering it, to this process or
// another instance, while it works.
func TestLongHandlerIsNotRedelivered(t *testing.T) {
	const ackWait = time.Second
	s := natstest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var mu sync.Mutex
	var attempts []int // the delivery attempt of every call
	done := make(chan struct{}, 4)
	h := events.HandlerFunc(func(ctx context.Context, ev *events.Envelope) error {
		mu.Lock()
		attempts = append(attempts, events.DeliveryFrom(ctx).Attempt)
		mu.Unlock()
		select {
		case <-time.After(3*ackWait + ackWait/2):
		case <-ctx.Done():
			return ctx.Err()
		}
		done <- struct{}{}
		return nil
	})
	cfg := sdjs.ConsumerConfig{
		Durable: "slow", Filters: []string{events.FilterSubject("", events.KindPull, "", "")},
		AckWait: ackWait, Concurrency: 2,
		OnFailure: func(_ context.Context, ev *events.Envelope, cause error) error {
			t.Errorf("%s failed: %v", ev.Operation, cause)
			return nil
		},
	}
	if _, err := sdjs.EnsureConsumer(ctx, s.JS, cfg); err != nil {
		t.Fatal(err)
	}
	// Two instances, so a redelivery would find an idle worker.
	_, js2 := s.Connect(t)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = sdjs.Consume(ctx, s.JS, cfg, h) }()
	go func() { defer wg.Done(); _ = sdjs.Consume(ctx, js2, cfg, h) }()
	defer func() { cancel(); wg.Wait() }()

	if _, err := sdjs.NewPublisher(s.JS).Publish(ctx, newEvent(t, "long", events.TypePullRequested)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the long handler did not finish")
	}
	time.Sleep(ackWait) // a redelivery after the ack would show now
	mu.Lock()
	defer mu.Unlock()
	if len(attempts) != 1 || attempts[0] != 1 {
		t.Errorf("handler calls with delivery attempts %v, want one call, attempt 1: the event was redelivered while its handler ran", attempts)
	}
}
