package gateway

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
	"github.com/stevedore/stevedore/pkg/view"
)

// atBase is the time of the first event of the view-at tests' log.
var atBase = time.Date(2025, 6, 1, 9, 0, 0, 0, time.UTC)

// publishAt appends an event recorded at atBase+after.
func (h *harness) publishAt(after time.Duration, ns, op string, typ events.Type, agg events.Aggregate, payload any) uint64 {
	h.t.Helper()
	ev, err := events.New(events.Meta{Namespace: ns, Operation: op, Actor: "alice", Node: "node1"}, typ, agg, payload)
	if err != nil {
		h.t.Fatal(err)
	}
	ev.Time = atBase.Add(after)
	seq, err := h.pub.Publish(context.Background(), ev)
	if err != nil {
		h.t.Fatal(err)
	}
	return seq
}

// atLog appends, a minute apart (seq n at n-1 minutes):
//
//	1 image-updated a:1     4 container-created c1      7 task-exited c1 (3)
//	2 image-updated b:1     5 task-started c1           8 container-deleted c1
//	3 image-deleted a:1     6 (a message that is not an event)
//	                                                     9 image-updated a:1 (team-a)
func atLog(h *harness) {
	img := func(name string) events.ImageUpdated {
		return events.ImageUpdated{Name: name, Size: 10, Platform: "linux/amd64",
			Target: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString(name), Size: 10}}
	}
	c1 := events.ContainerAggregate("c1")
	h.publishAt(0, "default", "", events.TypeImageUpdated, events.ImageAggregate("r.example/a:1"), img("r.example/a:1"))
	h.publishAt(time.Minute, "default", "", events.TypeImageUpdated, events.ImageAggregate("r.example/b:1"), img("r.example/b:1"))
	h.publishAt(2*time.Minute, "default", "op-rm", events.TypeImageDeleted, events.ImageAggregate("r.example/a:1"), events.ImageDeleted{Name: "r.example/a:1"})
	h.publishAt(3*time.Minute, "default", "op-run", events.TypeContainerCreated, c1, events.ContainerCreated{ID: "c1", Image: "r.example/b:1", Node: "node1"})
	h.publishAt(4*time.Minute, "default", "op-run", events.TypeTaskStarted, c1, events.TaskStarted{ID: "c1", Pid: 42, StartedAt: atBase.Add(4 * time.Minute)})
	if _, err := h.srv.JS.Publish(context.Background(), "sd.evt.default.image.junk.image-updated.-", []byte("not an event")); err != nil {
		h.t.Fatal(err)
	}
	h.publishAt(6*time.Minute, "default", "", events.TypeTaskExited, c1, events.TaskExited{ID: "c1", Code: 3, ExitedAt: atBase.Add(6 * time.Minute)})
	h.publishAt(7*time.Minute, "default", "op-rm2", events.TypeContainerDeleted, c1, events.ContainerDeleted{ID: "c1"})
	h.publishAt(8*time.Minute, "team-a", "", events.TypeImageUpdated, events.ImageAggregate("r.example/a:1"), img("r.example/a:1"))
}

func imageNames(imgs []api.Image) string {
	var n []string
	for _, i := range imgs {
		n = append(n, i.Name)
	}
	return strings.Join(n, ",")
}

func TestViewAtSeq(t *testing.T) {
	h := newHarness(t)
	atLog(h)
	r := h.start()
	tests := []struct {
		seq              uint64
		ns               string
		images, ctrState string
	}{
		{1, "", "r.example/a:1", ""},
		{2, "", "r.example/a:1,r.example/b:1", ""},
		{3, "", "r.example/b:1", ""},
		{4, "", "r.example/b:1", api.TaskCreated},
		{5, "", "r.example/b:1", api.TaskRunning},
		{6, "", "r.example/b:1", api.TaskRunning},
		{7, "", "r.example/b:1", api.TaskStopped},
		{8, "", "r.example/b:1", ""},
		{8, "team-a", "", ""},
		{9, "team-a", "r.example/a:1", ""},
	}
	for _, tc := range tests {
		var imgs, ctrs api.ViewAtReply
		h.ok(api.SubjectViewAt, api.ViewAtRequest{Namespace: tc.ns, What: api.ViewAtImages, AtSeq: tc.seq}, &imgs)
		h.ok(api.SubjectViewAt, api.ViewAtRequest{Namespace: tc.ns, What: api.ViewAtContainers, AtSeq: tc.seq}, &ctrs)
		if got := imageNames(imgs.Images); got != tc.images {
			t.Errorf("images at %d in %q: %q, want %q", tc.seq, tc.ns, got, tc.images)
		}
		state := ""
		if len(ctrs.Containers) == 1 {
			state = ctrs.Containers[0].Task.Status
		} else if len(ctrs.Containers) > 1 {
			t.Errorf("containers at %d: %+v", tc.seq, ctrs.Containers)
		}
		if state != tc.ctrState {
			t.Errorf("container at %d: %q, want %q", tc.seq, state, tc.ctrState)
		}
		if imgs.Seq != tc.seq || imgs.Replayed != tc.seq || imgs.FirstSeq != 1 {
			t.Errorf("at %d: reply seq %d, replayed %d, first %d", tc.seq, imgs.Seq, imgs.Replayed, imgs.FirstSeq)
		}
	}
	// The gateway's own view is the present, untouched.
	var now api.ImagesListReply
	h.ok(api.SubjectImagesList, api.ImagesListRequest{}, &now)
	if got := imageNames(now.Images); got != "r.example/b:1" {
		t.Errorf("images now: %q", got)
	}
	if r.view.AppliedSeq() != 9 {
		t.Errorf("the gateway's view applied %d", r.view.AppliedSeq())
	}
}

func TestViewAtTime(t *testing.T) {
	h := newHarness(t)
	atLog(h)
	h.start()
	at := func(d time.Duration, what string) api.ViewAtReply {
		t.Helper()
		ts := atBase.Add(d)
		var r api.ViewAtReply
		h.ok(api.SubjectViewAt, api.ViewAtRequest{What: what, AtTime: &ts}, &r)
		return r
	}
	// Before the first event: nothing.
	if r := at(-time.Second, api.ViewAtImages); len(r.Images) != 0 || r.Seq != 0 || r.Replayed != 0 {
		t.Errorf("before the log: %+v", r)
	}
	// Exactly at an event's time includes it.
	if r := at(time.Minute, api.ViewAtImages); imageNames(r.Images) != "r.example/a:1,r.example/b:1" || r.Seq != 2 || !r.Time.Equal(atBase.Add(time.Minute)) {
		t.Errorf("at 1m: %+v", r)
	}
	// Between events: the earlier one's view.
	if r := at(150*time.Second, api.ViewAtImages); imageNames(r.Images) != "r.example/b:1" || r.Seq != 3 {
		t.Errorf("at 2m30s: %+v", r)
	}
	if r := at(4*time.Minute+30*time.Second, api.ViewAtContainers); len(r.Containers) != 1 || r.Containers[0].Task.Status != api.TaskRunning || r.Containers[0].Task.Pid != 42 {
		t.Errorf("at 4m30s: %+v", r)
	}
	// The message that is not an event is passed over, not stopped at.
	if r := at(6*time.Minute+30*time.Second, api.ViewAtContainers); len(r.Containers) != 1 || r.Containers[0].Task.Status != api.TaskStopped || r.Seq != 7 {
		t.Errorf("at 6m30s: %+v", r)
	}
	if r := at(time.Hour, api.ViewAtContainers); len(r.Containers) != 0 || r.Seq != 9 {
		t.Errorf("at the end: %+v", r)
	}
}

func TestViewAtInvalid(t *testing.T) {
	h := newHarness(t)
	atLog(h)
	h.start()
	now := time.Now()
	var zero time.Time
	tests := []struct {
		name string
		req  any
		code string
		msg  string
	}{
		{"what", api.ViewAtRequest{What: "volumes", AtSeq: 1}, "invalid_argument", `what "volumes"`},
		{"no point", api.ViewAtRequest{What: api.ViewAtImages}, "invalid_argument", "no point of the log"},
		{"both", api.ViewAtRequest{What: api.ViewAtImages, AtSeq: 1, AtTime: &now}, "invalid_argument", "not both"},
		{"zero time", api.ViewAtRequest{What: api.ViewAtImages, AtTime: &zero}, "invalid_argument", "zero time"},
		{"beyond the end", api.ViewAtRequest{What: api.ViewAtImages, AtSeq: 10}, "invalid_argument", "beyond the end of the log (its last event is 9)"},
		{"namespace", api.ViewAtRequest{Namespace: "Bad.NS", What: api.ViewAtImages, AtSeq: 1}, "invalid_argument", "namespace"},
		{"not json", []byte(`{"at_seq": "x"}`), "invalid_argument", "not valid JSON"},
	}
	for _, tc := range tests {
		if desc := h.wantErr(api.SubjectViewAt, tc.req, tc.code); !strings.Contains(desc, tc.msg) {
			t.Errorf("%s: %q does not say %q", tc.name, desc, tc.msg)
		}
	}
}

func TestViewAtBounded(t *testing.T) {
	h := newHarness(t)
	atLog(h)
	r := h.start()

	old := maxViewAtEvents
	maxViewAtEvents = 5
	t.Cleanup(func() { maxViewAtEvents = old })
	if desc := h.wantErr(api.SubjectViewAt, api.ViewAtRequest{What: api.ViewAtImages, AtSeq: 6}, "resource_exhausted"); !strings.Contains(desc, "6 events, more than the 5 allowed") {
		t.Errorf("limit: %q", desc)
	}
	var ok api.ViewAtReply
	h.ok(api.SubjectViewAt, api.ViewAtRequest{What: api.ViewAtImages, AtSeq: 5}, &ok)

	// A replay whose context ends stops, with an error that says so.
	v, err := view.Open("", view.InMemory())
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var reply api.ViewAtReply
	err = r.gw.replay(ctx, v, 9, nil, &reply)
	if !errors.Is(err, errdefs.ErrUnavailable) || !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "did not reach sequence 9") {
		t.Fatalf("cancelled replay: %v", err)
	}
}
