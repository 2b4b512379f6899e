package jetstream_test

import (
	"context"
	"testing"

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
	for b.Loop() {
		if _, err := pub.Publish(ctx, ev); err != nil {
			b.Fatal(err)
		}
	}
}
