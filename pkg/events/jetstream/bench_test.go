package jetstream_test

import (
	"context"
	"testing"
	"time"

	"github.com/stevedore/stevedore/internal/testutil/natstest"
	"github.com/stevedore/stevedore/pkg/events"
	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
)

// BenchmarkAppend measures synchronous appends to the file-backed log.
func BenchmarkAppend(b *testing.B) {
	s := natstest.Start(b)
	pub := sdjs.NewPublisher(s.JS)
	ctx := context.Background()
	ev, err := events.New(events.Meta{Namespace: "default", Operation: "bench"}, events.TypePullRequested, events.PullAggregate("bench"), events.PullRequested{Ref: "registry.example/app:1"})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	for b.Loop() {
		if _, err := pub.Publish(ctx, ev); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkAppendParallel measures appends from many goroutines at once,
// as a cluster's workers make them: each append still waits for its
// acknowledgement, but they overlap.
func BenchmarkAppendParallel(b *testing.B) {
	s := natstest.Start(b)
	pub := sdjs.NewPublisher(s.JS)
	ctx := context.Background()
	ev, err := events.New(events.Meta{Namespace: "default", Operation: "bench"}, events.TypePullRequested, events.PullAggregate("bench"), events.PullRequested{Ref: "registry.example/app:1"})
	if err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(8) // 8 × GOMAXPROCS appenders
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := pub.Publish(ctx, ev); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}
