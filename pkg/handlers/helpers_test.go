package handlers_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/rs/zerolog"

	"github.com/stevedore/stevedore/internal/testutil/natstest"
	"github.com/stevedore/stevedore/internal/testutil/registry"
	"github.com/stevedore/stevedore/internal/testutil/testimage"
	"github.com/stevedore/stevedore/pkg/content"
	"github.com/stevedore/stevedore/pkg/content/local"
	"github.com/stevedore/stevedore/pkg/events"
	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
	"github.com/stevedore/stevedore/pkg/handlers"
	"github.com/stevedore/stevedore/pkg/remotes"
)

const (
	testNode = "node-1"
	amd64    = "linux/amd64"
	// pullTimeout bounds one pull in a test; pulls here take well under a second.
	pullTimeout = 20 * time.Second
)

// env is one test's world: an embedded NATS server with the events stream,
// a loopback registry and a content store directory that every fetcher of
// the test shares, as fetchers on one node do.
type env struct {
	nats  *natstest.Server
	reg   *registry.Registry
	root  string
	store *local.Store // the test's own view of the store
	pub   *sdjs.Publisher
}

func newEnv(t *testing.T, opts ...registry.Option) *env {
	t.Helper()
	e := &env{nats: natstest.Start(t), reg: registry.Start(t, opts...), root: t.TempDir()}
	st, err := local.New(e.root)
	if err != nil {
		t.Fatalf("content store: %v", err)
	}
	e.store = st
	e.pub = sdjs.NewPublisher(e.nats.JS)
	return e
}

// ref returns the normalized reference of repoTag ("app:1") in the registry.
func (e *env) ref(t *testing.T, repoTag string) string {
	t.Helper()
	return normalize(t, e.reg.Host()+"/"+repoTag)
}

func normalize(t *testing.T, s string) string {
	t.Helper()
	r, err := remotes.ParseReference(s)
	if err != nil {
		t.Fatalf("ParseReference(%q): %v", s, err)
	}
	return r.String()
}

// push pushes img as repoTag and returns it built.
func (e *env) push(t *testing.T, repoTag string, img *testimage.Image, opts ...testimage.PushOption) *testimage.Built {
	t.Helper()
	b, err := img.Build()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := testimage.Push(ctx, e.reg.Host(), repoTag, img, opts...); err != nil {
		t.Fatalf("push %s: %v", repoTag, err)
	}
	return b
}

func randomLayer(t *testing.T, size, seed int64, c testimage.Compression) *testimage.Layer {
	t.Helper()
	l, err := testimage.RandomLayerWith(size, seed, c)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// fetcher is one running fetcher worker: a handlers.Fetcher with its own
// NATS connection, content store instance and registry client, consuming
// the shared durable consumer like a separate process would. It counts what
// it handled.
type fetcher struct {
	name  string
	f     *handlers.Fetcher
	store *local.Store
	stop  func()

	mu       sync.Mutex
	resolved map[digest.Digest]int // descriptor-resolved events handled, by digest
	roles    map[string]int        // descriptor-resolved events handled, by role
	results  map[events.Type][]error
}

type fetcherOption func(*handlers.Fetcher, *sdjs.ConsumerConfig)

func withLimits(l handlers.Limits) fetcherOption {
	return func(f *handlers.Fetcher, _ *sdjs.ConsumerConfig) { f.Limits = l }
}

func withConcurrency(n int) fetcherOption {
	return func(_ *handlers.Fetcher, c *sdjs.ConsumerConfig) { c.Concurrency = n }
}

func withRemote(r *remotes.Remote) fetcherOption {
	return func(f *handlers.Fetcher, _ *sdjs.ConsumerConfig) { f.Remote = remotes.StringRefs(r) }
}

func newRemote(t *testing.T) *remotes.Remote {
	t.Helper()
	r, err := remotes.New(remotes.WithResponseHeaderTimeout(10 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// startFetcher runs a fetcher until the test ends or its stop is called. The
// durable consumer exists when it returns, so events published afterwards
// reach it.
func (e *env) startFetcher(t *testing.T, name string, opts ...fetcherOption) *fetcher {
	t.Helper()
	nc, js := e.nats.Connect(t)
	st, err := local.New(e.root)
	if err != nil {
		t.Fatalf("content store for %s: %v", name, err)
	}
	x := &fetcher{
		name: name, store: st,
		resolved: map[digest.Digest]int{}, roles: map[string]int{}, results: map[events.Type][]error{},
	}
	x.f = &handlers.Fetcher{
		Remote:           remotes.StringRefs(newRemote(t)),
		Store:            st,
		Pub:              sdjs.NewPublisher(js),
		Progress:         sdjs.NewProgress(nc),
		Node:             testNode,
		Log:              zerolog.Nop(),
		ProgressInterval: 50 * time.Millisecond,
		BusyPoll:         20 * time.Millisecond,
	}
	cfg := sdjs.ConsumerConfig{
		Durable:     events.WorkerDurable("fetcher", testNode),
		Concurrency: 4,
		AckWait:     2 * time.Second,
		MaxAttempts: 5,
		Backoff:     []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond},
	}
	for _, o := range opts {
		o(x.f, &cfg)
	}
	cfg.Filters = x.f.Filters()
	cfg.OnFailure = x.f.OnFailure

	ctx, cancel := context.WithCancel(context.Background())
	ectx, ecancel := context.WithTimeout(ctx, 10*time.Second)
	defer ecancel()
	if _, err := sdjs.EnsureConsumer(ectx, js, cfg); err != nil {
		cancel()
		t.Fatalf("fetcher %s: %v", name, err)
	}
	done := make(chan error, 1)
	go func() { done <- sdjs.Consume(ctx, js, cfg, x) }()
	x.stop = sync.OnceFunc(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("fetcher %s: Consume: %v", name, err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("fetcher %s did not stop within 15s of its context ending", name)
		}
	})
	t.Cleanup(x.stop)
	return x
}

// Handle runs the Fetcher and records what it handled.
func (x *fetcher) Handle(ctx context.Context, ev *events.Envelope) error {
	err := x.f.Handle(ctx, ev)
	x.mu.Lock()
	defer x.mu.Unlock()
	x.results[ev.Type] = append(x.results[ev.Type], err)
	if ev.Type == events.TypeDescriptorResolved {
		var p events.DescriptorResolved
		if ev.Decode(&p) == nil {
			x.resolved[p.Descriptor.Digest]++
			x.roles[p.Role]++
		}
	}
	return err
}

func (x *fetcher) handledBlobs() map[digest.Digest]int {
	x.mu.Lock()
	defer x.mu.Unlock()
	out := map[digest.Digest]int{}
	for d, n := range x.resolved {
		out[d] = n
	}
	return out
}

func (x *fetcher) handledRole(role string) int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.roles[role]
}

func (x *fetcher) resultsOf(t events.Type) []error {
	x.mu.Lock()
	defer x.mu.Unlock()
	return slices.Clone(x.results[t])
}

func newOp() string { return "op" + nuid.Next() }

// pullResult is what a pull left in the log.
type pullResult struct {
	op  string
	ref string
	seq uint64 // of the pull-requested event
	// terminal is the pull-completed or pull-failed event.
	terminal *events.Envelope
	// events are the operation's events up to and including terminal.
	events []*events.Envelope
}

// pull asks for ref to be pulled and waits for the operation's terminal event.
func (e *env) pull(t *testing.T, ref, platform string) pullResult {
	t.Helper()
	op := newOp()
	return e.wait(t, op, e.requestPull(t, op, ref, platform))
}

// requestPull publishes a pull-requested event for op and returns its sequence.
func (e *env) requestPull(t *testing.T, op, ref, platform string) uint64 {
	t.Helper()
	ev, err := events.New(events.Meta{Namespace: events.DefaultNamespace, Operation: op, Actor: "test", Node: testNode},
		events.TypePullRequested, events.PullAggregate(op), events.PullRequested{Ref: ref, Platform: platform})
	if err != nil {
		t.Fatal(err)
	}
	return e.publish(t, ev, "pull-requested/"+op)
}

func (e *env) publish(t *testing.T, ev *events.Envelope, msgID string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var opts []events.PublishOption
	if msgID != "" {
		opts = append(opts, events.WithMsgID(msgID))
	}
	seq, err := e.pub.Publish(ctx, ev, opts...)
	if err != nil {
		t.Fatalf("publish %s: %v", ev.Type, err)
	}
	return seq
}

func isTerminal(ev *events.Envelope) bool {
	return ev.Aggregate.Kind == events.KindPull && (ev.Type == events.TypePullCompleted || ev.Type == events.TypePullFailed)
}

// wait follows the log from seq until op's terminal event.
func (e *env) wait(t *testing.T, op string, seq uint64) pullResult {
	t.Helper()
	evs := e.follow(t, op, seq, pullTimeout, func(evs []*events.Envelope) bool { return isTerminal(evs[len(evs)-1]) })
	res := pullResult{op: op, seq: seq, terminal: evs[len(evs)-1], events: evs}
	var p events.PullRequested
	if evs[0].Type == events.TypePullRequested && evs[0].Decode(&p) == nil {
		res.ref = p.Ref
	}
	return res
}

var errStopFollow = errors.New("stop following")

// follow follows the log from seq, collecting op's events, until done holds
// for what was collected (checked after each of op's events) or timeout.
func (e *env) follow(t *testing.T, op string, seq uint64, timeout time.Duration, done func([]*events.Envelope) bool) []*events.Envelope {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var evs []*events.Envelope
	err := sdjs.Follow(ctx, e.nats.JS, sdjs.FollowConfig{StartSeq: seq}, func(ev *events.Envelope) error {
		if ev.Operation != op {
			return nil
		}
		evs = append(evs, ev)
		if done(evs) {
			return errStopFollow
		}
		return nil
	})
	if !errors.Is(err, errStopFollow) {
		t.Fatalf("operation %s: waited %v (err %v) and the log holds only:\n%s", op, timeout, err, describe(evs))
	}
	return evs
}

// settled waits until op's log holds n events of type typ (events may trail
// the terminal one: another fetcher can find the image complete between a
// blob's commit and the record of it) and returns all of op's events.
func (e *env) settled(t *testing.T, r pullResult, typ events.Type, n int) []*events.Envelope {
	t.Helper()
	return e.follow(t, r.op, r.seq, pullTimeout, func(evs []*events.Envelope) bool {
		return len(ofType(evs, typ)) >= n && slices.ContainsFunc(evs, isTerminal)
	})
}

func describe(evs []*events.Envelope) string {
	var b strings.Builder
	for _, ev := range evs {
		fmt.Fprintf(&b, "  %d %s %s/%s %s\n", ev.Seq, ev.Type, ev.Aggregate.Kind, ev.Aggregate.ID, ev.Payload)
	}
	return b.String()
}

func ofType(evs []*events.Envelope, typ events.Type) []*events.Envelope {
	var out []*events.Envelope
	for _, ev := range evs {
		if ev.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}

func decode[T any](t *testing.T, ev *events.Envelope) T {
	t.Helper()
	var v T
	if err := ev.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// completed checks that r ended in pull-completed and returns its payload.
func completed(t *testing.T, r pullResult) events.PullCompleted {
	t.Helper()
	if r.terminal.Type != events.TypePullCompleted {
		t.Fatalf("pull of %s ended in %s, want pull-completed: %s", r.ref, r.terminal.Type, r.terminal.Payload)
	}
	return decode[events.PullCompleted](t, r.terminal)
}

// failed checks that r ended in pull-failed and returns its payload.
func failed(t *testing.T, r pullResult) events.PullFailed {
	t.Helper()
	if r.terminal.Type != events.TypePullFailed {
		t.Fatalf("pull of %s ended in %s, want pull-failed: %s", r.ref, r.terminal.Type, r.terminal.Payload)
	}
	return decode[events.PullFailed](t, r.terminal)
}

// blobsByDigest counts the descriptors by digest and sums their sizes.
func sizeOf(descs []ocispec.Descriptor) int64 {
	var n int64
	for _, d := range descs {
		n += d.Size
	}
	return n
}

// verifyStore re-hashes every committed blob, failing the test for any whose
// bytes do not match its digest, and returns the committed digests and sizes.
func verifyStore(t *testing.T, st content.Store) map[digest.Digest]int64 {
	t.Helper()
	ctx := context.Background()
	out := map[digest.Digest]int64{}
	err := st.Walk(ctx, func(info content.Info) error {
		ra, err := st.ReaderAt(ctx, info.Digest)
		if err != nil {
			return err
		}
		defer ra.Close()
		v := info.Digest.Verifier()
		n, err := io.Copy(v, io.NewSectionReader(ra, 0, ra.Size()))
		if err != nil {
			return err
		}
		if !v.Verified() {
			t.Errorf("committed blob %s does not hash to its digest", info.Digest)
		}
		if n != info.Size {
			t.Errorf("committed blob %s: read %d bytes, info says %d", info.Digest, n, info.Size)
		}
		out[info.Digest] = n
		return nil
	})
	if err != nil {
		t.Fatalf("walk the content store: %v", err)
	}
	return out
}

// assertStoreHolds checks that the store holds exactly want, verified.
func assertStoreHolds(t *testing.T, st content.Store, want []ocispec.Descriptor) {
	t.Helper()
	got := verifyStore(t, st)
	wantSet := map[digest.Digest]int64{}
	for _, d := range want {
		wantSet[d.Digest] = d.Size
		size, ok := got[d.Digest]
		switch {
		case !ok:
			t.Errorf("store is missing %s (%s, %d bytes)", d.Digest, d.MediaType, d.Size)
		case size != d.Size:
			t.Errorf("store holds %s with %d bytes, want %d", d.Digest, size, d.Size)
		}
	}
	for d := range got {
		if _, ok := wantSet[d]; !ok {
			t.Errorf("store holds %s, which is not a blob of the image", d)
		}
	}
}

// assertNoIngests waits for every ingest to be gone: handlers of a failed
// pull may still be finishing other blobs.
func assertNoIngests(t *testing.T, st content.Store) {
	t.Helper()
	var left []content.Status
	natstest.Eventually(t, 10*time.Second, func() bool {
		var err error
		left, err = st.ListStatuses(context.Background())
		return err == nil && len(left) == 0
	}, "ingests left behind: %+v", &left)
}

// progressTicks subscribes to op's live progress and returns a function
// that reports the highest offset seen per digest, and whether any tick
// reached the blob's total.
func (e *env) progressTicks(t *testing.T, op string) func() map[digest.Digest]events.Progress {
	t.Helper()
	var mu sync.Mutex
	last := map[digest.Digest]events.Progress{}
	sub, err := e.nats.Conn.Subscribe(events.ProgressSubject(op), func(m *nats.Msg) {
		var p events.Progress
		if json.Unmarshal(m.Data, &p) != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if p.Offset >= last[p.Digest].Offset {
			last[p.Digest] = p
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.nats.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return func() map[digest.Digest]events.Progress {
		mu.Lock()
		defer mu.Unlock()
		out := map[digest.Digest]events.Progress{}
		for d, p := range last {
			out[d] = p
		}
		return out
	}
}

// logSince returns every event in the log from seq to its current end.
func (e *env) logSince(t *testing.T, seq uint64) []*events.Envelope {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	last, err := sdjs.LastSeq(ctx, e.nats.JS)
	if err != nil {
		t.Fatal(err)
	}
	var evs []*events.Envelope
	if last < seq {
		return nil
	}
	err = sdjs.Follow(ctx, e.nats.JS, sdjs.FollowConfig{StartSeq: seq}, func(ev *events.Envelope) error {
		evs = append(evs, ev)
		if ev.Seq >= last {
			return errStopFollow
		}
		return nil
	})
	if !errors.Is(err, errStopFollow) {
		t.Fatalf("read the log from %d to %d: %v", seq, last, err)
	}
	return evs
}
