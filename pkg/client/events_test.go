package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore/stevedore/internal/testutil/gatewaytest"
	"github.com/stevedore/stevedore/internal/testutil/natstest"
	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/client"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
)

// storyBase is when the story's first event happened; each event's time is
// set from it, so durations are exact.
var storyBase = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

var (
	storyImage = "docker.io/library/alpine:3.20"
	storyLayer = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromString("story-layer"), Size: 4404019}
	storyIndex = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromString("story-index"), Size: 1024}
)

// appender appends events with explicit times, actors and nodes through the
// real JetStream publisher.
type appender struct {
	t   testing.TB
	pub *sdjs.Publisher
}

func newAppender(t testing.TB, s *natstest.Server) *appender {
	_, js := s.Connect(t)
	return &appender{t: t, pub: sdjs.NewPublisher(js)}
}

// at appends one event recorded at storyBase+after and returns its sequence.
func (a *appender) at(after time.Duration, ns, op, actor, node string, typ events.Type, agg events.Aggregate, payload any) uint64 {
	a.t.Helper()
	ev, err := events.New(events.Meta{Namespace: ns, Operation: op, Actor: actor, Node: node}, typ, agg, payload)
	if err != nil {
		a.t.Fatal(err)
	}
	ev.Time = storyBase.Add(after)
	seq, err := a.pub.Publish(context.Background(), ev)
	if err != nil {
		a.t.Fatalf("publish %s: %v", typ, err)
	}
	return seq
}

// tell appends the story every test here reads, one event per sequence:
//
//	1 pull-requested        opP1 alice  alpine            default
//	2 descriptor-resolved   opP1        blob L
//	3 blob-committed        opP1        blob L
//	4 container-create-req  opC1 bob    container web (start)
//	5 image-updated         opP1        image alpine
//	6 pull-completed        opP1
//	7 pull-requested        opP2 carol  other:1            team-a
//	8 container-created     opC1        web
//	9 task-started          opC1        web
//	10 pull-failed          opP2                           team-a
//	11 task-kill-requested  opK1 bob    web
//	12 task-exited          opK1        web (137, SIGKILL, oom)
//	13 pull-requested       opP3 alice  alpine
//	14 blob-committed       opP3        blob L (already there)
//	15 pull-failed          opP3        registry down
func tell(a *appender) {
	const ns, teamA = "default", "team-a"
	ms := time.Millisecond
	web := events.ContainerAggregate("web")
	a.at(0, ns, "opP1", "alice", "gw-1", events.TypePullRequested, events.PullAggregate("opP1"),
		events.PullRequested{Ref: storyImage, Platform: "linux/amd64", Unpack: true})
	a.at(100*ms, ns, "opP1", "alice", "node-1", events.TypeDescriptorResolved, events.BlobAggregate(storyLayer.Digest),
		events.DescriptorResolved{Ref: storyImage, Role: events.RoleLayer, Descriptor: storyLayer})
	a.at(1500*ms, ns, "opP1", "alice", "node-1", events.TypeBlobCommitted, events.BlobAggregate(storyLayer.Digest),
		events.BlobCommitted{Ref: storyImage, Role: events.RoleLayer, Descriptor: storyLayer, Fetched: storyLayer.Size, Duration: 1400 * ms})
	a.at(2000*ms, ns, "opC1", "bob", "gw-1", events.TypeContainerCreateRequested, web,
		events.ContainerCreateRequested{ID: "web", Image: storyImage, Node: "node-1", Start: true})
	a.at(2500*ms, ns, "opP1", "alice", "node-1", events.TypeImageUpdated, events.ImageAggregate(storyImage),
		events.ImageUpdated{Name: storyImage, Target: storyIndex, Size: 5 << 20, Platform: "linux/amd64"})
	a.at(3000*ms, ns, "opP1", "alice", "node-1", events.TypePullCompleted, events.PullAggregate("opP1"),
		events.PullCompleted{Ref: storyImage, Target: storyIndex.Digest, Size: 5 << 20, Blobs: 3})
	a.at(4000*ms, teamA, "opP2", "carol", "gw-1", events.TypePullRequested, events.PullAggregate("opP2"),
		events.PullRequested{Ref: "registry.example/other:1"})
	a.at(4500*ms, ns, "opC1", "bob", "node-1", events.TypeContainerCreated, web,
		events.ContainerCreated{ID: "web", Image: storyImage, ImageDigest: storyIndex.Digest, Node: "node-1"})
	a.at(5000*ms, ns, "opC1", "bob", "node-1", events.TypeTaskStarted, web,
		events.TaskStarted{ID: "web", Pid: 4242, StartedAt: storyBase.Add(5 * time.Second)})
	a.at(6000*ms, teamA, "opP2", "carol", "node-2", events.TypePullFailed, events.PullAggregate("opP2"),
		events.PullFailed{Ref: "registry.example/other:1", Code: "not_found", Message: "registry.example/other:1: manifest unknown"})
	a.at(7000*ms, ns, "opK1", "bob", "gw-1", events.TypeTaskKillRequested, web,
		events.TaskKillRequested{ID: "web", Node: "node-1", Signal: "SIGKILL"})
	a.at(7250*ms, ns, "opK1", "bob", "node-1", events.TypeTaskExited, web,
		events.TaskExited{ID: "web", Code: 137, Signal: "SIGKILL", OOMKilled: true, ExitedAt: storyBase.Add(7250 * ms)})
	a.at(8000*ms, ns, "opP3", "alice", "gw-1", events.TypePullRequested, events.PullAggregate("opP3"),
		events.PullRequested{Ref: storyImage})
	a.at(8100*ms, ns, "opP3", "alice", "node-2", events.TypeBlobCommitted, events.BlobAggregate(storyLayer.Digest),
		events.BlobCommitted{Ref: storyImage, Role: events.RoleLayer, Descriptor: storyLayer, Existing: true})
	a.at(9000*ms, ns, "opP3", "alice", "node-2", events.TypePullFailed, events.PullAggregate("opP3"),
		events.PullFailed{Ref: storyImage, Code: "unavailable", Message: "registry-1.docker.io: connection refused"})
}

// readAll reads opts to the end of the log and returns the sequences seen.
func readAll(t *testing.T, c *client.Client, opts client.EventsOptions) []uint64 {
	t.Helper()
	opts.NoFollow = true
	var seqs []uint64
	if err := c.Events(ctxT(t), opts, func(ev *events.Envelope) error {
		seqs = append(seqs, ev.Seq)
		return nil
	}); err != nil {
		t.Fatalf("Events(%+v): %v", opts, err)
	}
	return seqs
}

func seqRange(from, to uint64) []uint64 {
	var s []uint64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

func TestEventsFilters(t *testing.T) {
	s := natstest.Start(t)
	tell(newAppender(t, s))
	c := newClient(t, s)
	tests := []struct {
		name string
		opts client.EventsOptions
		want []uint64
	}{
		{"the client's namespace", client.EventsOptions{}, []uint64{1, 2, 3, 4, 5, 6, 8, 9, 11, 12, 13, 14, 15}},
		{"all namespaces", client.EventsOptions{AllNamespaces: true}, seqRange(1, 15)},
		{"another namespace", client.EventsOptions{Namespace: "team-a"}, []uint64{7, 10}},
		{"one type", client.EventsOptions{Types: []events.Type{events.TypePullFailed}}, []uint64{15}},
		{"one type, all namespaces", client.EventsOptions{AllNamespaces: true, Types: []events.Type{events.TypePullFailed}}, []uint64{10, 15}},
		{"types", client.EventsOptions{Types: []events.Type{events.TypePullRequested, events.TypePullCompleted}}, []uint64{1, 6, 13}},
		{"image, normalized", client.EventsOptions{Images: []string{"alpine:3.20"}}, []uint64{5}},
		{"image, as named", client.EventsOptions{Images: []string{storyImage}}, []uint64{5}},
		{"container", client.EventsOptions{Containers: []string{"web"}}, []uint64{4, 8, 9, 11, 12}},
		{"blob", client.EventsOptions{Blobs: []digest.Digest{storyLayer.Digest}}, []uint64{2, 3, 14}},
		{"pull", client.EventsOptions{Pulls: []string{"opP1"}}, []uint64{1, 6}},
		{"operation", client.EventsOptions{Operation: "opP1"}, []uint64{1, 2, 3, 5, 6}},
		{"actor", client.EventsOptions{Actor: "bob"}, []uint64{4, 8, 9, 11, 12}},
		{"actor, all namespaces", client.EventsOptions{AllNamespaces: true, Actor: "carol"}, []uint64{7, 10}},
		{"container and type", client.EventsOptions{Containers: []string{"web"}, Types: []events.Type{events.TypeTaskExited}}, []uint64{12}},
		{"image or container", client.EventsOptions{Images: []string{"alpine:3.20"}, Containers: []string{"web"}}, []uint64{4, 5, 8, 9, 11, 12}},
		{"from a sequence", client.EventsOptions{FromSeq: 10}, []uint64{11, 12, 13, 14, 15}},
		{"from a sequence, filtered", client.EventsOptions{FromSeq: 10, Operation: "opP3"}, []uint64{13, 14, 15}},
		{"nothing matches", client.EventsOptions{Containers: []string{"nope"}}, nil},
		{"past the end", client.EventsOptions{FromSeq: 99}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := readAll(t, c, tc.opts); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestEventsBadOptions(t *testing.T) {
	s := natstest.Start(t)
	c := newClient(t, s)
	tests := []struct {
		name string
		opts client.EventsOptions
		want string
	}{
		{"sequence and time", client.EventsOptions{FromSeq: 3, Since: time.Now()}, "not both"},
		{"namespace and all", client.EventsOptions{Namespace: "a", AllNamespaces: true}, "not both"},
		{"bad namespace", client.EventsOptions{Namespace: "A.B"}, "namespace"},
		{"bad container", client.EventsOptions{Containers: []string{"we b"}}, "container id"},
		{"bad blob", client.EventsOptions{Blobs: []digest.Digest{"sha256:zz"}}, "blob digest"},
		{"bad type", client.EventsOptions{Types: []events.Type{"pull.failed"}}, "event type"},
		{"unknown type", client.EventsOptions{Types: []events.Type{events.TypePullFailed, "nonsense"}},
			`unknown event type "nonsense": want one of pull-requested, descriptor-resolved, `},
		{"bad pull", client.EventsOptions{Pulls: []string{"a*"}}, "pull operation id"},
		{"bad op", client.EventsOptions{Operation: "a b"}, "operation id"},
		{"bad image", client.EventsOptions{Images: []string{""}}, "image reference"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := c.Events(ctxT(t), tc.opts, func(*events.Envelope) error { return nil })
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want invalid argument mentioning %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "events: ") || strings.Count(err.Error(), "events: ") != 1 {
				t.Errorf("%q: want it to say \"events: \" once, at its start", err)
			}
		})
	}
	// Every type of the catalogue is known.
	if err := c.Events(ctxT(t), client.EventsOptions{Types: events.Types(), NoFollow: true}, func(*events.Envelope) error { return nil }); err != nil {
		t.Errorf("every type of the catalogue: %v", err)
	}
}

var errEnough = errors.New("enough")

// follow runs Events until n events arrived and returns them.
func follow(t *testing.T, c *client.Client, opts client.EventsOptions, n int, started func()) []*events.Envelope {
	t.Helper()
	var got []*events.Envelope
	err := c.Events(ctxT(t), opts, func(ev *events.Envelope) error {
		got = append(got, ev)
		if len(got) == 1 && started != nil {
			started()
		}
		if len(got) == n {
			return errEnough
		}
		return nil
	})
	if !errors.Is(err, errEnough) {
		t.Fatalf("Events ended with %v after %d of %d events", err, len(got), n)
	}
	return got
}

// checkContiguous checks that evs are exactly the sequences from..from+len-1.
func checkContiguous(t *testing.T, evs []*events.Envelope, from uint64) {
	t.Helper()
	for i, ev := range evs {
		if want := from + uint64(i); ev.Seq != want {
			t.Fatalf("event %d has sequence %d, want %d (gap, duplicate or reorder)", i, ev.Seq, want)
		}
	}
}

// burst appends n events of container id from another goroutine.
func burst(a *appender, id string, n int) (wait func()) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range n {
			a.at(time.Duration(i), "default", "op-"+id, "tester", "node-1", events.TypeContainerLabelsUpdated,
				events.ContainerAggregate(id), events.ContainerLabelsUpdated{ID: id, Labels: map[string]string{"n": fmt.Sprint(i)}})
		}
	}()
	return wg.Wait
}

func TestEventsReplayThenFollowFromSeq(t *testing.T) {
	s := natstest.Start(t)
	a := newAppender(t, s)
	burst(a, "before", 300)()
	c := newClient(t, s)
	// Events appended while the replay runs (and after it) follow the
	// replayed ones with no gap and no duplicate.
	var wait func()
	got := follow(t, c, client.EventsOptions{FromSeq: 5}, 296+300, func() { wait = burst(a, "during", 300) })
	wait()
	checkContiguous(t, got, 5)
	if got[len(got)-1].Aggregate.ID != "during" || got[0].Aggregate.ID != "before" {
		t.Fatalf("first %s, last %s", got[0].Aggregate.ID, got[len(got)-1].Aggregate.ID)
	}
}

func TestEventsReplayThenFollowSince(t *testing.T) {
	s := natstest.Start(t)
	a := newAppender(t, s)
	burst(a, "old", 50)()
	time.Sleep(50 * time.Millisecond)
	since := time.Now()
	time.Sleep(50 * time.Millisecond)
	burst(a, "new", 100)()
	c := newClient(t, s)
	var wait func()
	got := follow(t, c, client.EventsOptions{Since: since}, 100+200, func() { wait = burst(a, "during", 200) })
	wait()
	checkContiguous(t, got, 51)

	// --no-follow with a start time after the last event reads nothing.
	if seqs := readAll(t, c, client.EventsOptions{Since: time.Now().Add(time.Hour)}); len(seqs) != 0 {
		t.Fatalf("since the future: %v", seqs)
	}
}

func TestEventsLateSubscriberSeesEverything(t *testing.T) {
	s := natstest.Start(t)
	a := newAppender(t, s)
	burst(a, "x", 100)()
	c := newClient(t, s)
	if got := readAll(t, c, client.EventsOptions{FromSeq: 1}); !slices.Equal(got, seqRange(1, 100)) {
		t.Fatalf("from 1: %v", got)
	}
	// No start and no follow: the whole log.
	if got := readAll(t, c, client.EventsOptions{}); !slices.Equal(got, seqRange(1, 100)) {
		t.Fatalf("whole log: %v", got)
	}
}

func TestEventsTailsNewEventsOnly(t *testing.T) {
	s := natstest.Start(t)
	a := newAppender(t, s)
	burst(a, "old", 20)()
	c := newClient(t, s)
	// Tail from now: append markers until the tail sees one, then a burst,
	// which it must see whole and in order, after the markers.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				a.at(0, "default", "", "tester", "", events.TypeContainerDeleted, events.ContainerAggregate("marker"), events.ContainerDeleted{ID: "marker"})
			}
		}
	}()
	var got []*events.Envelope
	var wait func()
	err := c.Events(ctxT(t), client.EventsOptions{}, func(ev *events.Envelope) error {
		got = append(got, ev)
		if len(got) == 1 {
			close(stop)
			wg.Wait()
			wait = burst(a, "live", 50)
		}
		if ev.Aggregate.ID == "live" && ev.Payload != nil && strings.Contains(string(ev.Payload), `"49"`) {
			return errEnough
		}
		return nil
	})
	if !errors.Is(err, errEnough) {
		t.Fatalf("Events: %v", err)
	}
	wait()
	if got[0].Seq <= 20 {
		t.Fatalf("the tail started in the past, at %d", got[0].Seq)
	}
	checkContiguous(t, got, got[0].Seq)
	var live int
	for _, ev := range got {
		if ev.Aggregate.ID == "live" {
			live++
		}
	}
	if live != 50 {
		t.Fatalf("saw %d of 50 live events", live)
	}
}

func TestMarshalEventHasSeq(t *testing.T) {
	s := natstest.Start(t)
	tell(newAppender(t, s))
	c := newClient(t, s)
	var lines [][]byte
	if err := c.Events(ctxT(t), client.EventsOptions{Containers: []string{"web"}, NoFollow: true}, func(ev *events.Envelope) error {
		b, err := client.MarshalEvent(ev)
		lines = append(lines, b)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(lines) != 5 {
		t.Fatalf("%d lines", len(lines))
	}
	var m map[string]any
	if err := json.Unmarshal(lines[4], &m); err != nil {
		t.Fatalf("%s: %v", lines[4], err)
	}
	for _, k := range []string{"seq", "id", "type", "v", "time", "ns", "aggregate", "op", "actor", "node", "payload"} {
		if _, ok := m[k]; !ok {
			t.Errorf("%s has no %q", lines[4], k)
		}
	}
	if m["seq"] != float64(12) || m["type"] != "task-exited" || m["actor"] != "bob" || m["node"] != "node-1" {
		t.Errorf("got %s", lines[4])
	}
	var back events.Envelope
	if err := json.Unmarshal(lines[4], &back); err != nil || back.Type != events.TypeTaskExited || back.Operation != "opK1" {
		t.Errorf("decode back: %v %+v", err, back)
	}
}

func TestSummaries(t *testing.T) {
	s := natstest.Start(t)
	tell(newAppender(t, s))
	c := newClient(t, s)
	got := map[uint64][2]string{}
	if err := c.Events(ctxT(t), client.EventsOptions{AllNamespaces: true, NoFollow: true}, func(ev *events.Envelope) error {
		got[ev.Seq] = [2]string{client.DescribeAggregate(ev), client.Summary(ev)}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	short := "sha256:" + storyLayer.Digest.Encoded()[:12] + "…"
	want := map[uint64][2]string{
		1:  {"pull opP1", storyImage + " linux/amd64 unpack"},
		3:  {"blob " + short, "layer " + short + " 4.2 MiB (fetched 4.2 MiB in 1.4s)"},
		5:  {"image " + storyImage, "→ " + client.ShortDigest(storyIndex.Digest) + " 5.0 MiB linux/amd64"},
		10: {"pull opP2", "failed: registry.example/other:1: manifest unknown (not_found)"},
		12: {"container web", "exit 137 (SIGKILL, oom)"},
		14: {"blob " + short, "layer " + short + " 4.2 MiB (already there)"},
	}
	for seq, w := range want {
		if got[seq] != w {
			t.Errorf("%d: got %q, want %q", seq, got[seq], w)
		}
	}
}

func TestHistory(t *testing.T) {
	s := natstest.Start(t)
	tell(newAppender(t, s))
	c := newClient(t, s) // no gateway: op history reads the whole log
	seqs := func(es []client.HistoryEntry) []uint64 {
		var out []uint64
		for _, e := range es {
			out = append(out, e.Seq)
		}
		return out
	}

	img, err := c.History(ctxT(t), client.HistoryImage, "alpine:3.20")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := seqs(img), []uint64{1, 2, 3, 5, 6, 13, 14, 15}; !slices.Equal(got, want) {
		t.Fatalf("image history %v, want %v", got, want)
	}
	if img[1].Step != 100*time.Millisecond || img[2].Step != 1400*time.Millisecond || img[7].Elapsed != 9*time.Second {
		t.Errorf("durations: %v %v %v", img[1].Step, img[2].Step, img[7].Elapsed)
	}
	if img[4].Outcome != api.OpCompleted || img[7].Outcome != api.OpFailed || img[7].Code != "unavailable" {
		t.Errorf("outcomes: %+v / %+v", img[4], img[7])
	}
	ops := client.Outcomes(img)
	if len(ops) != 2 {
		t.Fatalf("operations: %+v", ops)
	}
	if o := ops[0]; o.Operation != "opP1" || o.State != api.OpCompleted || o.Duration != 3*time.Second || o.Actor != "alice" ||
		o.Request != events.TypePullRequested || o.Events != 5 || !slices.Equal(o.Nodes, []string{"gw-1", "node-1"}) {
		t.Errorf("opP1: %+v", o)
	}
	if o := ops[1]; o.Operation != "opP3" || o.State != api.OpFailed || o.Duration != time.Second ||
		o.Message != "registry-1.docker.io: connection refused" || o.Code != "unavailable" {
		t.Errorf("opP3: %+v", o)
	}

	ctr, err := c.History(ctxT(t), client.HistoryContainer, "web")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := seqs(ctr), []uint64{4, 8, 9, 11, 12}; !slices.Equal(got, want) {
		t.Fatalf("container history %v, want %v", got, want)
	}
	// container-created does not end a run; task-started does.
	if ctr[1].Outcome != "" || ctr[2].Outcome != api.OpCompleted || ctr[3].Outcome != api.OpCompleted {
		t.Errorf("outcomes: %q %q %q", ctr[1].Outcome, ctr[2].Outcome, ctr[3].Outcome)
	}
	if ctr[4].Step != 250*time.Millisecond || ctr[4].Elapsed != 5250*time.Millisecond {
		t.Errorf("durations: %v %v", ctr[4].Step, ctr[4].Elapsed)
	}
	if ops := client.Outcomes(ctr); len(ops) != 2 || ops[0].Operation != "opC1" || ops[0].State != api.OpCompleted ||
		ops[0].Duration != 3*time.Second || ops[0].Actor != "bob" {
		t.Errorf("container operations: %+v", ops)
	}

	op, err := c.History(ctxT(t), client.HistoryOp, "opP2")
	if err != nil {
		t.Fatal(err)
	}
	if got := seqs(op); !slices.Equal(got, []uint64{7, 10}) || op[1].Outcome != api.OpFailed || op[1].Message != "registry.example/other:1: manifest unknown" {
		t.Fatalf("op history %v: %+v", got, op)
	}
}

func TestHistoryErrors(t *testing.T) {
	s := natstest.Start(t)
	tell(newAppender(t, s))
	c := newClient(t, s)
	tests := []struct {
		kind, id string
		want     error
		msg      string
	}{
		{"volume", "x", errdefs.ErrInvalidArgument, `unknown kind "volume"`},
		{client.HistoryContainer, "a.b", errdefs.ErrInvalidArgument, "container id"},
		{client.HistoryOp, "a b", errdefs.ErrInvalidArgument, "operation id"},
		{client.HistoryImage, "", errdefs.ErrInvalidArgument, "image reference"},
		{client.HistoryContainer, "nope", errdefs.ErrNotFound, "no events"},
		{client.HistoryImage, "nope:1", errdefs.ErrNotFound, "no events"},
		{client.HistoryOp, "nope", errdefs.ErrNotFound, "no events"},
	}
	for _, tc := range tests {
		_, err := c.History(ctxT(t), tc.kind, tc.id)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("History(%s, %s): %v, want %v mentioning %q", tc.kind, tc.id, err, tc.want, tc.msg)
		}
	}
}

func TestHistoryOfAnOperationTheGatewayKnows(t *testing.T) {
	s := natstest.Start(t)
	a := newAppender(t, s)
	tell(a)
	gatewaytest.Start(t, s)
	c := newClient(t, s)
	// A pull recorded now (the view's start time is recent): only events
	// from about then are read, and every one of its events is found.
	ev, _ := events.New(events.Meta{Namespace: "default", Operation: "opNow", Actor: "dave", Node: "gw-1"},
		events.TypePullRequested, events.PullAggregate("opNow"), events.PullRequested{Ref: storyImage})
	first, err := sdjs.NewPublisher(s.JS).Publish(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	ev2, _ := events.New(events.Meta{Namespace: "default", Operation: "opNow", Actor: "dave", Node: "node-9"},
		events.TypePullCompleted, events.PullAggregate("opNow"), events.PullCompleted{Ref: storyImage})
	if _, err := sdjs.NewPublisher(s.JS).Publish(context.Background(), ev2); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() bool {
		op, err := c.Operation(ctxT(t), "opNow")
		return err == nil && op.State == api.OpCompleted
	}, "the view did not record the operation")
	h, err := c.History(ctxT(t), client.HistoryOp, "opNow")
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 || h[0].Seq != first || h[1].Outcome != api.OpCompleted || h[1].Event.Node != "node-9" || h[0].Event.Actor != "dave" {
		t.Fatalf("history: %+v", h)
	}
	// A container request: read from its container's events only.
	h, err = c.History(ctxT(t), client.HistoryOp, "opK1")
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 || h[0].Seq != 11 || h[1].Seq != 12 {
		t.Fatalf("kill history: %+v", h)
	}
}

func TestViewAt(t *testing.T) {
	s := natstest.Start(t)
	tell(newAppender(t, s))
	gatewaytest.Start(t, s)
	c := newClient(t, s)

	r, err := c.ViewAt(ctxT(t), api.ViewAtImages, client.LogPoint{Seq: 4})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Images) != 0 || r.Seq != 4 {
		t.Fatalf("images at 4: %+v", r)
	}
	r, err = c.ViewAt(ctxT(t), api.ViewAtImages, client.LogPoint{Seq: 5})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Images) != 1 || r.Images[0].Name != storyImage || r.Seq != 5 || !r.Time.Equal(storyBase.Add(2500*time.Millisecond)) {
		t.Fatalf("images at 5: %+v", r)
	}
	// At a time: 5.5s is after task-started (5s) and before the kill.
	r, err = c.ViewAt(ctxT(t), api.ViewAtContainers, client.LogPoint{Time: storyBase.Add(5500 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Containers) != 1 || r.Containers[0].Task.Status != api.TaskRunning || r.Seq != 9 {
		t.Fatalf("containers at 5.5s: %+v", r)
	}
	r, err = c.ViewAt(ctxT(t), api.ViewAtContainers, client.LogPoint{Time: storyBase.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Containers) != 1 || r.Containers[0].Task.Status != api.TaskStopped || *r.Containers[0].Task.ExitCode != 137 {
		t.Fatalf("containers at the end: %+v", r)
	}
	if _, err := c.ViewAt(ctxT(t), api.ViewAtImages, client.LogPoint{Seq: 99}); !errors.Is(err, errdefs.ErrInvalidArgument) ||
		!strings.Contains(err.Error(), "beyond the end of the log") {
		t.Fatalf("at 99: %v", err)
	}
	if _, err := c.ViewAt(ctxT(t), api.ViewAtImages, client.LogPoint{}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("at nothing: %v", err)
	}
}
