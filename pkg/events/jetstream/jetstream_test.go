package jetstream_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stevedore/stevedore/internal/testutil/natstest"
	"github.com/stevedore/stevedore/pkg/events"
	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
)

func newEvent(t *testing.T, op string, typ events.Type) *events.Envelope {
	t.Helper()
	ev, err := events.New(events.Meta{Namespace: "default", Operation: op, Actor: "test"}, typ, events.PullAggregate(op), events.PullRequested{Ref: "r/" + op})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func TestPublishDedupAndExpectedSequence(t *testing.T) {
	s := natstest.Start(t)
	ctx := context.Background()
	pub := sdjs.NewPublisher(s.JS)

	ev := newEvent(t, "op1", events.TypePullRequested)
	seq1, err := pub.Publish(ctx, ev, events.WithMsgID("x/op1"))
	if err != nil {
		t.Fatal(err)
	}
	seq2, err := pub.Publish(ctx, ev, events.WithMsgID("x/op1"))
	if err != nil {
		t.Fatal(err)
	}
	if seq1 != seq2 {
		t.Fatalf("retried append with the same id got a new sequence: %d then %d", seq1, seq2)
	}
	last, err := sdjs.LastSeq(ctx, s.JS)
	if err != nil || last != seq1 {
		t.Fatalf("log has last seq %d (err %v), want %d: the retry was stored twice", last, err, seq1)
	}

	// Serialized appends: the second writer expecting the old sequence loses.
	ev2 := newEvent(t, "op1", events.TypePullRequested)
	if _, err := pub.Publish(ctx, ev2, events.WithExpectLastSubjectSeq(seq1)); err != nil {
		t.Fatalf("append expecting the right last sequence: %v", err)
	}
	ev3 := newEvent(t, "op1", events.TypePullRequested)
	_, err = pub.Publish(ctx, ev3, events.WithExpectLastSubjectSeq(seq1))
	if !errors.Is(err, sdjs.ErrWrongLastSequence) {
		t.Fatalf("append expecting a stale sequence: got %v, want ErrWrongLastSequence", err)
	}
}

func TestConsumeRetriesThenRecordsFailure(t *testing.T) {
	s := natstest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pub := sdjs.NewPublisher(s.JS)

	var mu sync.Mutex
	attempts := map[string]int{}
	failed := map[string]error{}
	h := events.HandlerFunc(func(ctx context.Context, ev *events.Envelope) error {
		mu.Lock()
		attempts[ev.Operation]++
		n := attempts[ev.Operation]
		mu.Unlock()
		if d := events.DeliveryFrom(ctx); d.Attempt != n {
			return events.Permanent(fmt.Errorf("delivery attempt %d, handler saw %d", d.Attempt, n))
		}
		switch ev.Operation {
		case "flaky": // fails once, then succeeds
			if n == 1 {
				return errors.New("transient")
			}
			return nil
		case "permanent":
			return events.Permanent(errors.New("no such image"))
		case "always":
			return errors.New("still down")
		}
		return nil
	})
	cfg := sdjs.ConsumerConfig{
		Durable: "test", Filters: []string{events.FilterSubject("", events.KindPull, "", "")},
		AckWait: time.Second, MaxAttempts: 3, Backoff: []time.Duration{50 * time.Millisecond},
		OnFailure: func(ctx context.Context, ev *events.Envelope, cause error) error {
			mu.Lock()
			defer mu.Unlock()
			failed[ev.Operation] = cause
			return nil
		},
	}
	if _, err := sdjs.EnsureConsumer(ctx, s.JS, cfg); err != nil {
		t.Fatal(err)
	}
	go func() { _ = sdjs.Consume(ctx, s.JS, cfg, h) }()
	for _, op := range []string{"ok", "flaky", "permanent", "always"} {
		if _, err := pub.Publish(ctx, newEvent(t, op, events.TypePullRequested)); err != nil {
			t.Fatal(err)
		}
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(failed) == 2 && attempts["flaky"] == 2
	}, "want failures for permanent and always")
	time.Sleep(300 * time.Millisecond) // any stray redelivery would show now
	mu.Lock()
	defer mu.Unlock()
	want := map[string]int{"ok": 1, "flaky": 2, "permanent": 1, "always": 3}
	for op, n := range want {
		if attempts[op] != n {
			t.Errorf("%s handled %d times, want %d", op, attempts[op], n)
		}
	}
	if !events.IsPermanent(failed["permanent"]) || failed["permanent"].Error() != "no such image" {
		t.Errorf("permanent failure recorded as %v", failed["permanent"])
	}
	if failed["always"] == nil || failed["flaky"] != nil || failed["ok"] != nil {
		t.Errorf("failures recorded: %v", failed)
	}
}

func TestConsumeSharesWorkAcrossInstances(t *testing.T) {
	s := natstest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := sdjs.ConsumerConfig{
		Durable: "shared", Filters: []string{events.FilterSubject("", events.KindPull, "", "")}, Concurrency: 1,
		OnFailure: func(context.Context, *events.Envelope, error) error { return nil },
	}
	if _, err := sdjs.EnsureConsumer(ctx, s.JS, cfg); err != nil {
		t.Fatal(err)
	}
	var a, b atomic.Int32
	var seen sync.Map
	var dup atomic.Int32
	mk := func(c *atomic.Int32) events.Handler {
		return events.HandlerFunc(func(ctx context.Context, ev *events.Envelope) error {
			if _, loaded := seen.LoadOrStore(ev.Operation, true); loaded {
				dup.Add(1)
			}
			c.Add(1)
			time.Sleep(20 * time.Millisecond)
			return nil
		})
	}
	_, js2 := s.Connect(t)
	go func() { _ = sdjs.Consume(ctx, s.JS, cfg, mk(&a)) }()
	go func() { _ = sdjs.Consume(ctx, js2, cfg, mk(&b)) }()
	pub := sdjs.NewPublisher(s.JS)
	const n = 40
	for i := 0; i < n; i++ {
		if _, err := pub.Publish(ctx, newEvent(t, fmt.Sprintf("op%d", i), events.TypePullRequested)); err != nil {
			t.Fatal(err)
		}
	}
	natstest.Eventually(t, 10*time.Second, func() bool { return a.Load()+b.Load() == n }, "all events handled")
	if a.Load() == 0 || b.Load() == 0 {
		t.Errorf("work not shared: %d and %d", a.Load(), b.Load())
	}
	if dup.Load() != 0 {
		t.Errorf("%d events handled twice", dup.Load())
	}
}

func TestFollowFromSequence(t *testing.T) {
	s := natstest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pub := sdjs.NewPublisher(s.JS)
	var seqs []uint64
	for i := 0; i < 5; i++ {
		seq, err := pub.Publish(ctx, newEvent(t, fmt.Sprintf("op%d", i), events.TypePullRequested))
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	got := make(chan *events.Envelope, 10)
	go func() {
		_ = sdjs.Follow(ctx, s.JS, sdjs.FollowConfig{StartSeq: seqs[2]}, func(ev *events.Envelope) error {
			got <- ev
			return nil
		})
	}()
	// Events after the follower started are delivered too, in order.
	if _, err := pub.Publish(ctx, newEvent(t, "op5", events.TypePullRequested)); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"op2", "op3", "op4", "op5"} {
		select {
		case ev := <-got:
			if ev.Operation != want || ev.Seq == 0 {
				t.Fatalf("got %s (seq %d), want %s", ev.Operation, ev.Seq, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("timed out waiting for %s", want)
		}
	}
}

func TestSerializedAppendsAcrossAnAggregatesSubjects(t *testing.T) {
	s := natstest.Start(t)
	ctx := context.Background()
	pub := sdjs.NewPublisher(s.JS)
	filter := events.FilterSubject("default", events.KindContainer, "c1", "")
	mk := func(typ events.Type) *events.Envelope {
		ev, err := events.New(events.Meta{Namespace: "default"}, typ, events.ContainerAggregate("c1"), events.ContainerDeleted{ID: "c1"})
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	last, err := sdjs.LastFor(ctx, s.JS, filter)
	if err != nil || last != nil {
		t.Fatalf("LastFor on an empty aggregate = %v, %v", last, err)
	}
	seq1, err := pub.Publish(ctx, mk(events.TypeContainerCreated), events.WithExpectLastSeqFor(0, filter))
	if err != nil {
		t.Fatal(err)
	}
	// Another container's event does not count.
	other, _ := events.New(events.Meta{Namespace: "default"}, events.TypeTaskStarted, events.ContainerAggregate("c2"), events.TaskStarted{ID: "c2"})
	if _, err := pub.Publish(ctx, other); err != nil {
		t.Fatal(err)
	}
	seq2, err := pub.Publish(ctx, mk(events.TypeTaskStarted), events.WithExpectLastSeqFor(seq1, filter))
	if err != nil {
		t.Fatalf("append after the container's last event: %v", err)
	}
	// A writer still expecting seq1 (it lost the race) is refused, even
	// though its event has another type and so another subject.
	if _, err := pub.Publish(ctx, mk(events.TypeTaskExited), events.WithExpectLastSeqFor(seq1, filter)); !errors.Is(err, sdjs.ErrWrongLastSequence) {
		t.Fatalf("stale append: %v, want ErrWrongLastSequence", err)
	}
	last, err = sdjs.LastFor(ctx, s.JS, filter)
	if err != nil || last == nil || last.Seq != seq2 || last.Type != events.TypeTaskStarted {
		t.Fatalf("LastFor = %+v, %v; want task-started at %d", last, err, seq2)
	}
}

// Two nodes' workers of one kind each consume through their own durable and
// node filter: each is handed exactly its node's events, whichever node
// recorded them first.
func TestNodeConsumersSplitWork(t *testing.T) {
	s := natstest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pub := sdjs.NewPublisher(s.JS)

	var mu sync.Mutex
	got := map[string][]string{} // node -> container ids handled
	for _, node := range []string{"n1", "n2"} {
		cfg := sdjs.ConsumerConfig{
			Durable: events.WorkerDurable("executor", node),
			Filters: []string{events.NodeFilterSubject(node, "", events.KindContainer, "", events.TypeTaskStartRequested)},
			OnFailure: func(ctx context.Context, ev *events.Envelope, cause error) error {
				t.Errorf("%s failed: %v", ev.Aggregate.ID, cause)
				return nil
			},
		}
		if _, err := sdjs.EnsureConsumer(ctx, s.JS, cfg); err != nil {
			t.Fatal(err)
		}
		go func() {
			_ = sdjs.Consume(ctx, s.JS, cfg, events.HandlerFunc(func(ctx context.Context, ev *events.Envelope) error {
				mu.Lock()
				defer mu.Unlock()
				got[node] = append(got[node], ev.Aggregate.ID)
				return nil
			}))
		}()
	}
	want := map[string][]string{"n1": {"a", "c"}, "n2": {"b"}}
	for _, c := range []struct{ id, node string }{{"a", "n1"}, {"b", "n2"}, {"c", "n1"}, {"d", "n3"}} {
		ev, err := events.New(events.Meta{Namespace: "default", Node: c.node}, events.TypeTaskStartRequested,
			events.ContainerAggregate(c.id), events.TaskStartRequested{ID: c.id, Node: c.node})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pub.Publish(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got["n1"]) >= 2 && len(got["n2"]) >= 1
	}, "each node's events handled")
	time.Sleep(200 * time.Millisecond) // a stray delivery would show now
	mu.Lock()
	defer mu.Unlock()
	for _, ids := range got {
		slices.Sort(ids) // handlers run concurrently: any order
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("handled %v, want %v", got, want)
	}
	// A filter for any node still sees one container's events from every node.
	last, err := sdjs.LastFor(ctx, s.JS, events.FilterSubject("default", events.KindContainer, "d", ""))
	if err != nil || last == nil || last.Node != "n3" {
		t.Errorf("LastFor(any node) = %+v, %v; want d's event on n3", last, err)
	}
}

// TestEnsureStreamShortMaxAgeCapsDedupWindow provisions the events stream
// with a max age shorter than the default dedup window (as
// `gateway --log-max-age 1m` does): JetStream refuses a window longer than
// the max age, so EnsureStream must cap it, and dedup must still work.
func TestEnsureStreamShortMaxAgeCapsDedupWindow(t *testing.T) {
	s := natstest.Start(t)
	ctx := context.Background()

	st, err := sdjs.EnsureStream(ctx, s.JS, sdjs.StreamConfig{MaxAge: time.Minute})
	if err != nil {
		t.Fatalf("provision stream with max age 1m: %v", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxAge != time.Minute || info.Config.Duplicates != time.Minute {
		t.Fatalf("stream has max age %v and dedup window %v, want 1m and 1m", info.Config.MaxAge, info.Config.Duplicates)
	}

	pub := sdjs.NewPublisher(s.JS)
	ev := newEvent(t, "op-short", events.TypePullRequested)
	seq1, err := pub.Publish(ctx, ev, events.WithMsgID("x/op-short"))
	if err != nil {
		t.Fatal(err)
	}
	seq2, err := pub.Publish(ctx, ev, events.WithMsgID("x/op-short"))
	if err != nil {
		t.Fatal(err)
	}
	if seq1 != seq2 {
		t.Fatalf("retried append with the same id got a new sequence: %d then %d", seq1, seq2)
	}

	// A max age longer than the default window keeps the default.
	st, err = sdjs.EnsureStream(ctx, s.JS, sdjs.StreamConfig{MaxAge: time.Hour})
	if err != nil {
		t.Fatalf("provision stream with max age 1h: %v", err)
	}
	if info, err = st.Info(ctx); err != nil {
		t.Fatal(err)
	}
	if info.Config.Duplicates != sdjs.DefaultDuplicates {
		t.Fatalf("max age 1h: dedup window %v, want %v", info.Config.Duplicates, sdjs.DefaultDuplicates)
	}
}
