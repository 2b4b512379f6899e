package handlers_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stevedore/stevedore/internal/testutil/natstest"
	"github.com/stevedore/stevedore/pkg/events"
	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
	"github.com/stevedore/stevedore/pkg/handlers"
)

// Every node-local worker consumes only its node's events: the server, not
// the handler, keeps another node's work away. Each worker's consumer is
// offered every event type it handles, on its node and on another, and must
// hold exactly the ones on its node.
func TestWorkersConsumeOnlyTheirNode(t *testing.T) {
	s := natstest.Start(t)
	ctx := context.Background()
	pub := sdjs.NewPublisher(s.JS)
	blob := digest.FromString("layer")
	type ev struct {
		typ events.Type
		agg events.Aggregate
	}
	web := events.ContainerAggregate("web")
	workers := []struct {
		kind    string
		filters []string
		events  []ev
	}{
		{"fetcher", (&handlers.Fetcher{Node: "n1"}).Filters(), []ev{
			{events.TypePullRequested, events.PullAggregate("op")},
			{events.TypeDescriptorResolved, events.BlobAggregate(blob)},
			{events.TypeContentDeleteRequested, events.BlobAggregate(blob)}}},
		{"unpacker", (&handlers.Unpacker{Node: "n1"}).Filters(), []ev{
			{events.TypeBlobCommitted, events.BlobAggregate(blob)},
			{events.TypeUnpackRequested, events.ImageAggregate("r/a:1")}}},
		{"executor", (&handlers.Executor{Node: "n1"}).Filters(), []ev{
			{events.TypeContainerCreateRequested, web}, {events.TypeTaskStartRequested, web},
			{events.TypeTaskKillRequested, web}, {events.TypeContainerDeleteRequested, web}}},
	}

	var cons []string
	for _, w := range workers {
		name := events.WorkerDurable(w.kind, "n1")
		cons = append(cons, name)
		if _, err := sdjs.EnsureConsumer(ctx, s.JS, sdjs.ConsumerConfig{Durable: name, Filters: w.filters,
			OnFailure: func(context.Context, *events.Envelope, error) error { return nil }}); err != nil {
			t.Fatal(err)
		}
	}
	for _, w := range workers {
		for _, e := range w.events {
			for _, node := range []string{"n2", "n1", ""} {
				env, err := events.New(events.Meta{Namespace: "default", Node: node}, e.typ, e.agg, struct{}{})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := pub.Publish(ctx, env); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	for i, w := range workers {
		c, err := s.JS.Consumer(ctx, events.EventsStream, cons[i])
		if err != nil {
			t.Fatal(err)
		}
		// The consumer's count follows the stream's appends a moment
		// later: wait for it to settle, then it must be the node's events
		// only (a filter that let other nodes' in would count 3 times as
		// many).
		want := uint64(len(w.events))
		var got uint64
		settled := func() bool {
			info, err := c.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got = info.NumPending
			return got >= want
		}
		deadline := time.Now().Add(5 * time.Second)
		for !settled() && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond)
		settled()
		if got != want {
			t.Errorf("%s of n1 has %d events pending, want %d (its node's only); filters %v", w.kind, got, want, w.filters)
		}
		if len(w.filters) != len(w.events) {
			t.Errorf("%s: %d filters, test offers %d event types: %s", w.kind, len(w.filters), len(w.events), fmt.Sprint(w.filters))
		}
	}
}
