package jetstream_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stevedore/stevedore/internal/testutil/natstest"
	"github.com/stevedore/stevedore/pkg/events"
	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
	"github.com/stevedore/stevedore/pkg/metrics"
)

// typeRenamed is a test-only event type whose payload field "name" became
// "ref" after schema version 0 (an envelope without "v").
const typeRenamed events.Type = "test-renamed"

// The daemons count through pkg/metrics; so do these tests.
func init() { sdjs.SetObserver(metrics.JetStream{}) }

func init() {
	events.RegisterUpcaster(typeRenamed, 0, func(p json.RawMessage) (json.RawMessage, error) {
		var old struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal(p, &old); err != nil {
			return nil, err
		}
		return json.Marshal(map[string]string{"ref": old.Name})
	})
}

// publishRaw appends a stored envelope as given, bypassing the Publisher.
func publishRaw(t *testing.T, s *natstest.Server, subject, data string) uint64 {
	t.Helper()
	ack, err := s.JS.Publish(context.Background(), subject, []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// The log holds an old event, a current one, one from a newer build and
// one that is not an event: followers see the old one upcast, the current
// one as is, and skip the other two without stopping.
func TestFollowUpcastsAndSkipsNewer(t *testing.T) {
	s := natstest.Start(t)
	subj := events.Subject("default", events.KindPull, "op1", typeRenamed, "")
	oldSeq := publishRaw(t, s, subj, `{"id":"a","type":"test-renamed","ns":"default","payload":{"name":"r/app:1"}}`)
	newerSeq := publishRaw(t, s, subj, `{"id":"b","type":"test-renamed","v":99,"ns":"default","payload":{"whatever":1}}`)
	junkSeq := publishRaw(t, s, subj, `not json`)
	cur := newEvent(t, "op1", events.TypePullRequested)
	curSeq, err := sdjs.NewPublisher(s.JS).Publish(context.Background(), cur)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("Follow", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var got []*events.Envelope
		var undecodable []uint64
		var newer []uint64
		err := sdjs.Follow(ctx, s.JS, sdjs.FollowConfig{
			Undecodable: func(seq uint64, _ string, err error) error {
				if errors.Is(err, events.ErrNewerVersion) {
					newer = append(newer, seq)
				} else {
					undecodable = append(undecodable, seq)
				}
				return nil
			},
		}, func(ev *events.Envelope) error {
			got = append(got, ev)
			if ev.Seq == curSeq {
				cancel()
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].Seq != oldSeq || got[1].Seq != curSeq {
			t.Fatalf("delivered %+v, want the old and the current event", got)
		}
		if got[0].Version != events.SchemaVersion || string(got[0].Payload) != `{"ref":"r/app:1"}` {
			t.Errorf("old event read as v%d %s, want it upcast", got[0].Version, got[0].Payload)
		}
		if got[1].ID != cur.ID || string(got[1].Payload) != string(cur.Payload) {
			t.Errorf("current event read as %+v", got[1])
		}
		if len(newer) != 1 || newer[0] != newerSeq || len(undecodable) != 1 || undecodable[0] != junkSeq {
			t.Errorf("skipped newer %v and undecodable %v, want [%d] and [%d]", newer, undecodable, newerSeq, junkSeq)
		}
	})

	t.Run("Follow without Undecodable skips newer, stops on junk", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		skippedBefore := metrics.Value(metrics.EventsSkipped.WithLabelValues("follow", "newer-schema"))
		var seen []uint64
		err := sdjs.Follow(ctx, s.JS, sdjs.FollowConfig{}, func(ev *events.Envelope) error {
			seen = append(seen, ev.Seq)
			return nil
		})
		if err == nil || errors.Is(err, events.ErrNewerVersion) {
			t.Fatalf("err = %v, want the junk message's decode error", err)
		}
		if len(seen) != 1 || seen[0] != oldSeq {
			t.Fatalf("delivered %v before the junk, want [%d]", seen, oldSeq)
		}
		if d := metrics.Value(metrics.EventsSkipped.WithLabelValues("follow", "newer-schema")) - skippedBefore; d != 1 {
			t.Errorf("newer-schema skips counted: %v, want 1", d)
		}
	})

	t.Run("FollowBatches", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var seqs []uint64
		var types []events.Type
		err := sdjs.FollowBatches(ctx, s.JS, sdjs.FollowConfig{
			Undecodable: func(uint64, string, error) error { return nil },
		}, func(batch []*events.Envelope, pending uint64) error {
			for _, ev := range batch {
				seqs = append(seqs, ev.Seq)
				types = append(types, ev.Type)
			}
			if seqs[len(seqs)-1] == curSeq {
				cancel()
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		want := []uint64{oldSeq, newerSeq, junkSeq, curSeq}
		if len(seqs) != len(want) {
			t.Fatalf("delivered %v, want %v", seqs, want)
		}
		for i := range want {
			if seqs[i] != want[i] {
				t.Fatalf("delivered %v, want %v", seqs, want)
			}
		}
		if types[0] != typeRenamed || types[1] != "" || types[2] != "" || types[3] != events.TypePullRequested {
			t.Fatalf("types %v: skipped messages must come as bare sequences", types)
		}
	})
}

// A worker acknowledges an event from a newer build without handling it,
// and goes on with the next one.
func TestConsumeSkipsNewer(t *testing.T) {
	s := natstest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var handled []string
	cfg := sdjs.ConsumerConfig{
		Durable: "schema", Filters: []string{events.FilterSubject("", events.KindPull, "", "")},
		AckWait: time.Second, OnFailure: func(context.Context, *events.Envelope, error) error { return nil },
	}
	if _, err := sdjs.EnsureConsumer(ctx, s.JS, cfg); err != nil {
		t.Fatal(err)
	}
	// The metrics are the process's: count from where they stand.
	skipped := metrics.Value(metrics.EventsSkipped.WithLabelValues("schema", "newer-schema"))
	observed := metrics.Value(metrics.HandlerDuration.WithLabelValues("schema", string(typeRenamed), "ok").(prometheus.Metric))
	subj := events.Subject("default", events.KindPull, "op1", typeRenamed, "")
	publishRaw(t, s, subj, `{"id":"new","type":"test-renamed","v":99,"ns":"default","payload":{}}`)
	publishRaw(t, s, subj, `{"id":"old","type":"test-renamed","v":0,"ns":"default","payload":{"name":"x"}}`)
	done := make(chan error, 1)
	go func() {
		done <- sdjs.Consume(ctx, s.JS, cfg, events.HandlerFunc(func(_ context.Context, ev *events.Envelope) error {
			mu.Lock()
			defer mu.Unlock()
			handled = append(handled, ev.ID+" "+string(ev.Payload))
			return nil
		}))
	}()
	natstest.Eventually(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(handled) == 1
	}, "the old event was not handled")
	mu.Lock()
	if handled[0] != `old {"ref":"x"}` {
		t.Errorf("handled %q, want the old event upcast", handled[0])
	}
	mu.Unlock()
	natstest.Eventually(t, 10*time.Second, func() bool {
		return metrics.Value(metrics.EventsSkipped.WithLabelValues("schema", "newer-schema")) == skipped+1
	}, "the newer event was not counted as skipped")
	c, err := s.JS.Consumer(ctx, events.EventsStream, "schema")
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		info, err := c.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	}, "the newer event was not acknowledged")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := metrics.Value(metrics.HandlerDuration.WithLabelValues("schema", string(typeRenamed), "ok").(prometheus.Metric)) - observed; n != 1 {
		t.Errorf("handler latency observations = %v, want 1", n)
	}
}
