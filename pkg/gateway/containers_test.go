package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/opencontainers/go-digest"

	"github.com/stevedore/stevedore/internal/testutil/natstest"
	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/events"
	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
	"github.com/stevedore/stevedore/pkg/view"
)

const busybox = "docker.io/library/busybox:latest"

// create asks for a container and returns the reply and the recorded event.
func (h *harness) create(req api.ContainerCreateRequest) (api.OpReply, *events.Envelope, events.ContainerCreateRequested) {
	h.t.Helper()
	var rep api.OpReply
	h.ok(api.SubjectContainersCreate, req, &rep)
	ev := h.event(rep.Seq)
	var p events.ContainerCreateRequested
	if err := ev.Decode(&p); err != nil {
		h.t.Fatal(err)
	}
	return rep, ev, p
}

// created records, as the executor would, that container id exists.
func (h *harness) created(ns, op, id, node string, labels map[string]string) uint64 {
	return h.publish(ns, op, events.TypeContainerCreated, events.ContainerAggregate(id), events.ContainerCreated{
		ID: id, Image: busybox, ImageDigest: digest.FromString("busybox"), SnapshotKey: "ctr-" + id, Snapshotter: "overlay",
		Spec: json.RawMessage(`{"ociVersion":"1.2.0","process":{"args":["sh"]}}`), Labels: labels, Node: node,
	})
}

func (h *harness) info(ns, id string) api.Container {
	h.t.Helper()
	var c api.Container
	h.ok(api.SubjectContainersInfo, api.ContainerRequest{Namespace: ns, ID: id}, &c)
	return c
}

func (h *harness) op(id string) api.Operation {
	h.t.Helper()
	var op api.Operation
	h.ok(api.SubjectOperation, api.OperationRequest{Operation: id}, &op)
	return op
}

// mutate calls a container endpoint and returns the recorded event.
func (h *harness) mutate(subject string, req any, payload any) (api.OpReply, *events.Envelope) {
	h.t.Helper()
	var rep api.OpReply
	h.ok(subject, req, &rep)
	ev := h.event(rep.Seq)
	if err := ev.Decode(payload); err != nil {
		h.t.Fatal(err)
	}
	return rep, ev
}

func TestContainersCreate(t *testing.T) {
	h := newHarness(t)
	h.start()

	desc := h.wantErr(api.SubjectContainersCreate, api.ContainerCreateRequest{Image: "busybox"}, "not_found")
	if !strings.Contains(desc, "image "+busybox+" not found: pull it first") {
		t.Fatalf("description = %q", desc)
	}
	// Pulled, but unpacked on another node only: not there for this one.
	h.imageReady("default", busybox, "node-b")
	before := h.lastSeq()
	desc = h.wantErr(api.SubjectContainersCreate, api.ContainerCreateRequest{Image: "busybox"}, "not_found")
	if !strings.Contains(desc, "image "+busybox+" is not unpacked on node node1: pull it there first") {
		t.Fatalf("description = %q", desc)
	}
	if got := h.lastSeq(); got != before {
		t.Fatalf("a refused create appended events: last seq %d -> %d", before, got)
	}
	h.imageReady("default", busybox)

	// A generated id, the normalized image, the gateway's node.
	body, code, desc := h.call(api.SubjectContainersCreate, api.ContainerCreateRequest{
		Image: "busybox", Options: events.ContainerOptions{Args: []string{"echo", "hi"}, Network: "host", MemoryLimit: 1 << 20},
	}, nats.Header{ActorHeader: []string{"alice"}})
	if code != "" {
		t.Fatalf("create: %s: %s", code, desc)
	}
	var rep api.OpReply
	if err := json.Unmarshal(body, &rep); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{24}$`).MatchString(rep.Ref) || rep.Operation == "" || rep.Seq == 0 {
		t.Fatalf("reply = %+v", rep)
	}
	ev := h.event(rep.Seq)
	var p events.ContainerCreateRequested
	if err := ev.Decode(&p); err != nil {
		t.Fatal(err)
	}
	if ev.Type != events.TypeContainerCreateRequested || ev.Aggregate != events.ContainerAggregate(rep.Ref) || ev.Operation != rep.Operation ||
		ev.Actor != "alice" || ev.Node != "node1" || ev.Namespace != "default" {
		t.Fatalf("event = %+v", ev)
	}
	want := events.ContainerCreateRequested{ID: rep.Ref, Image: busybox, Node: "node1",
		Options: events.ContainerOptions{Args: []string{"echo", "hi"}, Network: "host", MemoryLimit: 1 << 20}}
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("payload = %+v, want %+v", p, want)
	}
	// Read-your-writes: the operation is there when the reply is.
	if op := h.op(rep.Operation); op.Kind != view.OpKindContainerCreate || op.State != api.OpRunning || op.Ref != rep.Ref || op.Actor != "alice" {
		t.Fatalf("op = %+v", op)
	}

	// Run: a given id and node, Start, Rm, Stdin.
	rep2, _, p2 := h.create(api.ContainerCreateRequest{ID: "Web_1-a", Image: "docker.io/library/busybox", Node: "node-b", Start: true, Rm: true, Stdin: true})
	if rep2.Ref != "Web_1-a" || p2.ID != "Web_1-a" || p2.Node != "node-b" || !p2.Start || !p2.Rm || !p2.Stdin || p2.Image != busybox {
		t.Fatalf("run: reply %+v payload %+v", rep2, p2)
	}
	if op := h.op(rep2.Operation); op.Kind != view.OpKindContainerRun || op.State != api.OpRunning || op.Actor != AnonymousActor {
		t.Fatalf("run op = %+v", op)
	}
	// The image must be in the namespace asked for.
	h.wantErr(api.SubjectContainersCreate, api.ContainerCreateRequest{Namespace: "team-a", Image: "busybox"}, "not_found")
}

func TestContainersCreateInvalid(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.imageReady("default", busybox)
	before := h.lastSeq()
	img := "busybox"
	for _, tc := range []struct {
		name string
		req  any
		hdr  nats.Header
	}{
		{name: "bad namespace", req: api.ContainerCreateRequest{Namespace: "A", Image: img}},
		{name: "id with a dot", req: api.ContainerCreateRequest{ID: "a.b", Image: img}},
		{name: "id with a wildcard", req: api.ContainerCreateRequest{ID: "a*", Image: img}},
		{name: "id with a space", req: api.ContainerCreateRequest{ID: "a b", Image: img}},
		{name: "id with a slash", req: api.ContainerCreateRequest{ID: "a/b", Image: img}},
		{name: "id starting with a dash", req: api.ContainerCreateRequest{ID: "-a", Image: img}},
		{name: "id of 129 chars", req: api.ContainerCreateRequest{ID: strings.Repeat("a", 129), Image: img}},
		{name: "no image", req: api.ContainerCreateRequest{ID: "x"}},
		{name: "bad image", req: api.ContainerCreateRequest{Image: "Busy Box"}},
		{name: "image with scheme", req: api.ContainerCreateRequest{Image: "https://r.example/app:1"}},
		{name: "network bridge", req: api.ContainerCreateRequest{Image: img, Options: events.ContainerOptions{Network: "bridge"}}},
		{name: "relative mount destination", req: api.ContainerCreateRequest{Image: img, Options: events.ContainerOptions{
			Mounts: []events.BindMount{{Source: "/tmp", Destination: "data"}}}}},
		{name: "relative mount source", req: api.ContainerCreateRequest{Image: img, Options: events.ContainerOptions{
			Mounts: []events.BindMount{{Source: "tmp", Destination: "/data"}}}}},
		{name: "negative memory", req: api.ContainerCreateRequest{Image: img, Options: events.ContainerOptions{MemoryLimit: -1}}},
		{name: "negative cpus", req: api.ContainerCreateRequest{Image: img, Options: events.ContainerOptions{CPUs: -0.5}}},
		{name: "negative pids", req: api.ContainerCreateRequest{Image: img, Options: events.ContainerOptions{PidsLimit: -1}}},
		{name: "bad platform", req: api.ContainerCreateRequest{Image: img, Options: events.ContainerOptions{Platform: "linux/no such"}}},
		{name: "empty label key", req: api.ContainerCreateRequest{Image: img, Options: events.ContainerOptions{Labels: map[string]string{"": "x"}}}},
		{name: "node with a dot", req: api.ContainerCreateRequest{Image: img, Node: "a.b"}},
		{name: "not json", req: []byte("{nope")},
		{name: "control chars in actor", req: api.ContainerCreateRequest{Image: img}, hdr: nats.Header{ActorHeader: []string{"a\x01"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, code, desc := h.call(api.SubjectContainersCreate, tc.req, tc.hdr)
			if code != "invalid_argument" || desc == "" {
				t.Fatalf("code %q desc %q, want invalid_argument", code, desc)
			}
			t.Logf("%s", desc)
		})
	}
	if got := h.lastSeq(); got != before {
		t.Fatalf("invalid requests appended events: last seq %d -> %d", before, got)
	}
	// The longest id allowed is fine.
	h.create(api.ContainerCreateRequest{ID: strings.Repeat("a", 128), Image: img})
}

func TestContainersCreateDuplicateID(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.imageReady("default", busybox)
	req := api.ContainerCreateRequest{ID: "web", Image: "busybox"}
	rep, _, _ := h.create(req)
	// In use while only requested, once created, and while running.
	desc := h.wantErr(api.SubjectContainersCreate, req, "already_exists")
	if !strings.Contains(desc, "container id web is already in use") {
		t.Fatalf("description = %q", desc)
	}
	// The refusal is a fact in the container's log, for an audit, with a
	// failed operation of its own; the container is still in use after it.
	refused, err := sdjs.LastFor(context.Background(), h.srv.JS, events.FilterSubject("default", events.KindContainer, "web", ""))
	if err != nil || refused == nil || refused.Type != events.TypeContainerCreateRefused || refused.Actor == "" || refused.Node != "node1" {
		t.Fatalf("last event of web = %+v, %v; want container-create-refused with an actor on node1", refused, err)
	}
	var p events.ContainerCreateRefused
	if err := refused.Decode(&p); err != nil || p.ID != "web" || p.Code != "already_exists" || !strings.Contains(p.Message, "already in use") {
		t.Fatalf("refusal payload %+v, %v", p, err)
	}
	if op := h.op(refused.Operation); op.State != api.OpFailed || op.Code != "already_exists" || op.Ref != "web" {
		t.Fatalf("refused create op = %+v", op)
	}
	h.wantErr(api.SubjectContainersCreate, req, "already_exists")
	h.created("default", rep.Operation, "web", "node1", nil)
	h.wantErr(api.SubjectContainersCreate, req, "already_exists")
	h.publish("default", "", events.TypeTaskStarted, events.ContainerAggregate("web"), events.TaskStarted{ID: "web", Pid: 1})
	h.wantErr(api.SubjectContainersCreate, req, "already_exists")
	// Another namespace has its own ids.
	h.imageReady("team-a", busybox)
	h.create(api.ContainerCreateRequest{Namespace: "team-a", ID: "web", Image: "busybox"})

	// Free again once deleted.
	h.publish("default", "", events.TypeContainerDeleted, events.ContainerAggregate("web"), events.ContainerDeleted{ID: "web"})
	rep2, _, _ := h.create(req)
	// And once a create failed.
	h.publish("default", rep2.Operation, events.TypeContainerCreateFailed, events.ContainerAggregate("web"),
		events.Failure{ID: "web", Code: "failed_precondition", Message: "image busybox is not unpacked on node1"})
	if op := h.op(rep2.Operation); op.State != api.OpFailed || op.Code != "failed_precondition" || op.Message != "image busybox is not unpacked on node1" {
		t.Fatalf("failed create op = %+v", op)
	}
	rep3, _, _ := h.create(req)
	if rep3.Operation == rep2.Operation {
		t.Fatal("same operation twice")
	}
}

// rawCall is call without the testing.T, for use from other goroutines.
func rawCall(nc *nats.Conn, subject string, req any) (code, desc string, err error) {
	data, err := json.Marshal(req)
	if err != nil {
		return "", "", err
	}
	msg, err := nc.Request(subject, data, 10*time.Second)
	if err != nil {
		return "", "", err
	}
	return msg.Header.Get(micro.ErrorCodeHeader), msg.Header.Get(micro.ErrorHeader), nil
}

func TestContainersCreateConcurrentSameID(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.imageReady("default", busybox)
	for round := range 5 {
		id := fmt.Sprintf("race%d", round)
		const n = 8
		var wg sync.WaitGroup
		codes := make([]string, n)
		errs := make([]error, n)
		start := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				codes[i], _, errs[i] = rawCall(h.nc, api.SubjectContainersCreate, api.ContainerCreateRequest{ID: id, Image: "busybox"})
			}()
		}
		close(start)
		wg.Wait()
		won := 0
		for i := range n {
			if errs[i] != nil {
				t.Fatal(errs[i])
			}
			switch codes[i] {
			case "":
				won++
			case "already_exists":
			default:
				t.Fatalf("create %d: code %q", i, codes[i])
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d of %d concurrent creates of one id succeeded, want exactly 1", round, won, n)
		}
		// And the log holds exactly one request for it.
		var reqs int
		ctx, cancel := context.WithCancel(context.Background())
		last := h.lastSeq()
		err := sdjs.Follow(ctx, h.srv.JS, sdjs.FollowConfig{}, func(ev *events.Envelope) error {
			if ev.Type == events.TypeContainerCreateRequested && ev.Aggregate.ID == id {
				reqs++
			}
			if ev.Seq >= last {
				cancel()
			}
			return nil
		})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if reqs != 1 {
			t.Fatalf("round %d: %d create requests recorded", round, reqs)
		}
	}
}

func TestContainersLifecycle(t *testing.T) {
	h := newHarness(t)
	g := h.start()
	h.imageReady("default", busybox)

	var list api.ContainersListReply
	h.ok(api.SubjectContainersList, nil, &list)
	if list.Containers == nil || len(list.Containers) != 0 {
		t.Fatalf("empty list = %#v", list)
	}

	rep, _, _ := h.create(api.ContainerCreateRequest{ID: "c1", Image: "busybox", Node: "node-b"})
	// Not in the view until the executor created it.
	h.wantErr(api.SubjectContainersInfo, api.ContainerRequest{ID: "c1"}, "not_found")
	h.wantErr(api.SubjectContainersStart, api.ContainerStartRequest{ID: "c1"}, "not_found")
	seq := h.created("default", rep.Operation, "c1", "node-b", map[string]string{"keep": "1", "drop": "2"})
	c := h.info("", "c1")
	if c.ID != "c1" || c.Node != "node-b" || c.Image != busybox || c.Task.Status != api.TaskCreated || c.SnapshotKey != "ctr-c1" ||
		!c.Created.Equal(h.event(seq).Time) || !bytes.Equal(c.Spec, []byte(`{"ociVersion":"1.2.0","process":{"args":["sh"]}}`)) {
		t.Fatalf("info = %+v", c)
	}
	h.ok(api.SubjectContainersList, api.ContainersListRequest{}, &list)
	if len(list.Containers) != 1 || list.Containers[0].ID != "c1" || list.Containers[0].Spec != nil {
		t.Fatalf("list = %+v", list.Containers)
	}
	if op := h.op(rep.Operation); op.State != api.OpCompleted {
		t.Fatalf("create op = %+v", op)
	}

	// A task that is not running cannot be killed.
	desc := h.wantErr(api.SubjectContainersKill, api.ContainerKillRequest{ID: "c1"}, "failed_precondition")
	if !strings.Contains(desc, "c1") {
		t.Fatalf("kill description = %q", desc)
	}

	// start
	var start events.TaskStartRequested
	srep, sev := h.mutate(api.SubjectContainersStart, api.ContainerStartRequest{ID: "c1", Stdin: true}, &start)
	if sev.Type != events.TypeTaskStartRequested || start != (events.TaskStartRequested{ID: "c1", Node: "node-b", Stdin: true}) ||
		srep.Ref != "c1" || sev.Aggregate != events.ContainerAggregate("c1") || sev.Operation != srep.Operation {
		t.Fatalf("start event %+v payload %+v", sev, start)
	}
	if op := h.op(srep.Operation); op.Kind != view.OpKindTaskStart || op.State != api.OpRunning {
		t.Fatalf("start op = %+v", op)
	}
	startedAt := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	h.publish("default", srep.Operation, events.TypeTaskStarted, events.ContainerAggregate("c1"), events.TaskStarted{ID: "c1", Pid: 321, StartedAt: startedAt})
	if c := h.info("", "c1"); c.Task.Status != api.TaskRunning || c.Task.Pid != 321 || !c.Task.StartedAt.Equal(startedAt) {
		t.Fatalf("running task = %+v", c.Task)
	}
	if op := h.op(srep.Operation); op.State != api.OpCompleted {
		t.Fatalf("start op = %+v", op)
	}
	desc = h.wantErr(api.SubjectContainersStart, api.ContainerStartRequest{ID: "c1"}, "failed_precondition")
	if !strings.Contains(desc, "container c1 is already running") {
		t.Fatalf("start description = %q", desc)
	}

	// kill, with the signal in any spelling
	for _, tc := range []struct{ in, want string }{
		{"", "SIGTERM"}, {"KILL", "SIGKILL"}, {"sigkill", "SIGKILL"}, {"SIGHUP", "SIGHUP"}, {"9", "SIGKILL"}, {"usr1", "SIGUSR1"}, {"Int", "SIGINT"},
	} {
		var kill events.TaskKillRequested
		krep, _ := h.mutate(api.SubjectContainersKill, api.ContainerKillRequest{ID: "c1", Signal: tc.in}, &kill)
		if kill != (events.TaskKillRequested{ID: "c1", Node: "node-b", Signal: tc.want}) {
			t.Fatalf("kill %q: payload %+v, want signal %s", tc.in, kill, tc.want)
		}
		if op := h.op(krep.Operation); op.Kind != view.OpKindTaskKill || op.State != api.OpCompleted {
			t.Fatalf("kill op = %+v", op)
		}
	}
	for _, sig := range []string{"NOPE", "SIG", "0", "-9", "100000", "9x"} {
		h.wantErr(api.SubjectContainersKill, api.ContainerKillRequest{ID: "c1", Signal: sig}, "invalid_argument")
	}

	// delete refuses a running container unless forced
	desc = h.wantErr(api.SubjectContainersDelete, api.ContainerDeleteRequest{ID: "c1"}, "failed_precondition")
	if !strings.Contains(desc, "container c1 is running: stop it first or use --force") {
		t.Fatalf("delete description = %q", desc)
	}
	var del events.ContainerDeleteRequested
	drep, _ := h.mutate(api.SubjectContainersDelete, api.ContainerDeleteRequest{ID: "c1", Force: true}, &del)
	if del != (events.ContainerDeleteRequested{ID: "c1", Node: "node-b", Force: true}) {
		t.Fatalf("forced delete payload = %+v", del)
	}
	h.publish("default", drep.Operation, events.TypeContainerDeleteFailed, events.ContainerAggregate("c1"),
		events.Failure{ID: "c1", Code: "unavailable", Message: "node-b's executor is not running"})
	if op := h.op(drep.Operation); op.Kind != view.OpKindContainerDelete || op.State != api.OpFailed || op.Code != "unavailable" {
		t.Fatalf("failed delete op = %+v", op)
	}

	// label: merge, an empty value removes
	var lab events.ContainerLabelsUpdated
	lrep, _ := h.mutate(api.SubjectContainersLabel, api.ContainerLabelRequest{ID: "c1", Labels: map[string]string{"drop": "", "new": "3", "keep": "1b"}}, &lab)
	want := map[string]string{"keep": "1b", "new": "3"}
	if lab.ID != "c1" || !reflect.DeepEqual(lab.Labels, want) {
		t.Fatalf("labels payload = %+v", lab)
	}
	if c := h.info("", "c1"); !reflect.DeepEqual(c.Labels, want) {
		t.Fatalf("labels in view = %v", c.Labels)
	}
	if op := h.op(lrep.Operation); op.Kind != view.OpKindContainerLabel || op.State != api.OpCompleted {
		t.Fatalf("label op = %+v", op)
	}
	h.wantErr(api.SubjectContainersLabel, api.ContainerLabelRequest{ID: "c1"}, "invalid_argument")
	h.wantErr(api.SubjectContainersLabel, api.ContainerLabelRequest{ID: "c1", Labels: map[string]string{"": "x"}}, "invalid_argument")

	// exit
	h.publish("default", "", events.TypeTaskExited, events.ContainerAggregate("c1"), events.TaskExited{
		ID: "c1", Code: 143, Signal: "SIGTERM", StartedAt: startedAt, ExitedAt: startedAt.Add(time.Minute),
	})
	c = h.info("", "c1")
	if c.Task.Status != api.TaskStopped || c.Task.ExitCode == nil || *c.Task.ExitCode != 143 || c.Task.Signal != "SIGTERM" ||
		!c.Task.ExitedAt.Equal(startedAt.Add(time.Minute)) {
		t.Fatalf("stopped task = %+v", c.Task)
	}
	h.wantErr(api.SubjectContainersKill, api.ContainerKillRequest{ID: "c1"}, "failed_precondition")

	// A stopped container can be started again, and deleted without force.
	var start2 events.TaskStartRequested
	h.mutate(api.SubjectContainersStart, api.ContainerStartRequest{ID: "c1"}, &start2)
	var del2 events.ContainerDeleteRequested
	drep, _ = h.mutate(api.SubjectContainersDelete, api.ContainerDeleteRequest{ID: "c1"}, &del2)
	if del2 != (events.ContainerDeleteRequested{ID: "c1", Node: "node-b"}) {
		t.Fatalf("delete payload = %+v", del2)
	}
	h.publish("default", drep.Operation, events.TypeContainerDeleted, events.ContainerAggregate("c1"), events.ContainerDeleted{ID: "c1"})
	h.wantErr(api.SubjectContainersInfo, api.ContainerRequest{ID: "c1"}, "not_found")
	h.ok(api.SubjectContainersList, nil, &list)
	if len(list.Containers) != 0 {
		t.Fatalf("list after delete = %+v", list.Containers)
	}
	if op := h.op(drep.Operation); op.State != api.OpCompleted {
		t.Fatalf("delete op = %+v", op)
	}

	// The live view equals one rebuilt from the log.
	last := h.lastSeq()
	natstest.Eventually(t, 5*time.Second, func() bool { return g.view.AppliedSeq() == last }, "view did not catch up")
	if live, rebuilt := dumpView(t, g.view), rebuildView(t, h, last); !bytes.Equal(live, rebuilt) {
		t.Fatalf("live view differs from rebuilt view:\nlive:\n%s\nrebuilt:\n%s", live, rebuilt)
	}
}

func TestContainersRequestsInvalid(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.imageReady("default", busybox)
	rep, _, _ := h.create(api.ContainerCreateRequest{ID: "c1", Image: "busybox"})
	h.created("default", rep.Operation, "c1", "node1", nil)
	before := h.lastSeq()
	for _, tc := range []struct {
		name, subject string
		req           any
		want          string
	}{
		{"start unknown", api.SubjectContainersStart, api.ContainerStartRequest{ID: "nope"}, "not_found"},
		{"kill unknown", api.SubjectContainersKill, api.ContainerKillRequest{ID: "nope"}, "not_found"},
		{"delete unknown", api.SubjectContainersDelete, api.ContainerDeleteRequest{ID: "nope"}, "not_found"},
		{"label unknown", api.SubjectContainersLabel, api.ContainerLabelRequest{ID: "nope", Labels: map[string]string{"a": "b"}}, "not_found"},
		{"info unknown", api.SubjectContainersInfo, api.ContainerRequest{ID: "nope"}, "not_found"},
		{"start in another namespace", api.SubjectContainersStart, api.ContainerStartRequest{Namespace: "team-a", ID: "c1"}, "not_found"},
		{"start without id", api.SubjectContainersStart, api.ContainerStartRequest{}, "invalid_argument"},
		{"kill bad id", api.SubjectContainersKill, api.ContainerKillRequest{ID: "a.b"}, "invalid_argument"},
		{"delete bad id", api.SubjectContainersDelete, api.ContainerDeleteRequest{ID: "*"}, "invalid_argument"},
		{"label bad id", api.SubjectContainersLabel, api.ContainerLabelRequest{ID: ">", Labels: map[string]string{"a": "b"}}, "invalid_argument"},
		{"info bad id", api.SubjectContainersInfo, api.ContainerRequest{ID: "a b"}, "invalid_argument"},
		{"info bad namespace", api.SubjectContainersInfo, api.ContainerRequest{Namespace: "NS", ID: "c1"}, "invalid_argument"},
		{"list bad namespace", api.SubjectContainersList, api.ContainersListRequest{Namespace: "a.b"}, "invalid_argument"},
		{"start bad namespace", api.SubjectContainersStart, api.ContainerStartRequest{Namespace: "a b", ID: "c1"}, "invalid_argument"},
		{"kill bad signal", api.SubjectContainersKill, api.ContainerKillRequest{ID: "c1", Signal: "SIGNOPE"}, "invalid_argument"},
		{"start not json", api.SubjectContainersStart, json.RawMessage(`1`), "invalid_argument"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, code, desc := h.call(tc.subject, tc.req, nil)
			if code != tc.want || desc == "" {
				t.Fatalf("code %q desc %q, want %q", code, desc, tc.want)
			}
			t.Logf("%s", desc)
		})
	}
	if got := h.lastSeq(); got != before {
		t.Fatalf("refused requests appended events: last seq %d -> %d", before, got)
	}
}

// TestContainerRequestsSerialized checks that requests about one container
// are decided against its latest events: a start racing the executor's
// task-started is refused, never recorded on a stale state.
func TestContainerRequestsSerialized(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.imageReady("default", busybox)
	rep, _, _ := h.create(api.ContainerCreateRequest{ID: "c1", Image: "busybox"})
	h.created("default", rep.Operation, "c1", "node1", nil)
	filter := events.FilterSubject("default", events.KindContainer, "c1", "")

	var wg sync.WaitGroup
	const n = 6
	codes := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _, errs[i] = rawCall(h.nc, api.SubjectContainersStart, api.ContainerStartRequest{ID: "c1"})
		}()
	}
	// The executor answers the first start it sees, serialized as it would be.
	natstest.Eventually(t, 10*time.Second, func() bool {
		last, err := sdjs.LastFor(context.Background(), h.srv.JS, filter)
		if err != nil || last == nil || last.Type != events.TypeTaskStartRequested {
			return false
		}
		ev, err := events.New(events.Meta{Namespace: "default", Operation: last.Operation, Node: "node1"},
			events.TypeTaskStarted, events.ContainerAggregate("c1"), events.TaskStarted{ID: "c1", Pid: 1})
		if err != nil {
			t.Error(err)
			return true
		}
		_, err = h.pub.Publish(context.Background(), ev, events.WithExpectLastSeqFor(last.Seq, filter))
		if errors.Is(err, sdjs.ErrWrongLastSequence) {
			return false
		}
		if err != nil {
			t.Error(err)
		}
		return true
	}, "no start was recorded")
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if codes[i] != "" && codes[i] != "failed_precondition" {
			t.Fatalf("start %d: code %q", i, codes[i])
		}
	}
	// Every start recorded after task-started would be a start of a running
	// task: there is none.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	last := h.lastSeq()
	running := false
	err := sdjs.Follow(ctx, h.srv.JS, sdjs.FollowConfig{}, func(ev *events.Envelope) error {
		switch {
		case ev.Type == events.TypeTaskStarted:
			running = true
		case ev.Type == events.TypeTaskStartRequested && running:
			return fmt.Errorf("task-start-requested at %d after the task started", ev.Seq)
		}
		if ev.Seq >= last {
			cancel()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if h.info("", "c1").Task.Status != api.TaskRunning {
		t.Fatal("task not running")
	}
}

func dumpView(t *testing.T, v *view.View) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := v.Dump(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// rebuildView applies the log up to last to a fresh view and dumps it.
func rebuildView(t *testing.T, h *harness, last uint64) []byte {
	t.Helper()
	fresh, err := view.Open("rebuilt", view.InMemory())
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := sdjs.Follow(ctx, h.srv.JS, sdjs.FollowConfig{}, func(ev *events.Envelope) error {
		if err := fresh.Apply(ev); err != nil {
			return err
		}
		if ev.Seq >= last {
			cancel()
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return dumpView(t, fresh)
}
