package view

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
)

func created(id string, labels map[string]string) events.ContainerCreated {
	return events.ContainerCreated{
		ID: id, Image: "docker.io/library/busybox:latest", ImageDigest: dgst("img"), ChainID: dgst("chain"),
		SnapshotKey: "ctr-" + id, Snapshotter: "overlay", Spec: json.RawMessage(`{"ociVersion": "1.2.0", "process": {"args": ["sh"]}}`),
		Labels: labels, Node: "node-a", Rm: id == "c2",
	}
}

func mustContainer(t *testing.T, v *View, ns, id string) api.Container {
	t.Helper()
	c, err := v.Container(ns, id)
	if err != nil {
		t.Fatalf("container %s/%s: %v", ns, id, err)
	}
	return c
}

func mustOp(t *testing.T, v *View, id string) api.Operation {
	t.Helper()
	op, err := v.Operation(id)
	if err != nil {
		t.Fatalf("operation %s: %v", id, err)
	}
	return op
}

func TestContainerLifecycle(t *testing.T) {
	v := openMem(t)
	var g gen
	agg := events.ContainerAggregate("c1")
	req := g.ev(t, "default", "opC", "alice", events.TypeContainerCreateRequested, agg,
		events.ContainerCreateRequested{ID: "c1", Image: "docker.io/library/busybox:latest", Node: "node-a"})
	mustApply(t, v, req)
	if op := mustOp(t, v, "opC"); op.Kind != OpKindContainerCreate || op.State != api.OpRunning || op.Ref != "c1" || op.Actor != "alice" || !op.StartedAt.Equal(req.Time) {
		t.Fatalf("create op = %+v", op)
	}
	if _, err := v.Container("default", "c1"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("a requested container is in the view before it is created: %v", err)
	}

	cr := g.ev(t, "default", "opC", "alice", events.TypeContainerCreated, agg, created("c1", map[string]string{"a": "1"}))
	mustApply(t, v, cr)
	c := mustContainer(t, v, "default", "c1")
	want := api.Container{
		ID: "c1", Image: "docker.io/library/busybox:latest", ImageDigest: dgst("img"), SnapshotKey: "ctr-c1", Snapshotter: "overlay",
		Node: "node-a", Labels: map[string]string{"a": "1"}, Created: cr.Time.UTC(),
		Spec: json.RawMessage(`{"ociVersion":"1.2.0","process":{"args":["sh"]}}`), Task: api.Task{Status: api.TaskCreated},
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("created container =\n%+v\nwant\n%+v", c, want)
	}
	if op := mustOp(t, v, "opC"); op.State != api.OpCompleted || !op.EndedAt.Equal(cr.Time) {
		t.Fatalf("create op after container-created = %+v", op)
	}

	// start
	mustApply(t, v, g.ev(t, "default", "opS", "bob", events.TypeTaskStartRequested, agg, events.TaskStartRequested{ID: "c1", Node: "node-a"}))
	if op := mustOp(t, v, "opS"); op.Kind != OpKindTaskStart || op.State != api.OpRunning || op.Ref != "c1" {
		t.Fatalf("start op = %+v", op)
	}
	startedAt := t0.Add(time.Minute)
	mustApply(t, v, g.ev(t, "default", "opS", "bob", events.TypeTaskStarted, agg, events.TaskStarted{ID: "c1", Pid: 4242, StartedAt: startedAt}))
	c = mustContainer(t, v, "default", "c1")
	if c.Task != (api.Task{Status: api.TaskRunning, Pid: 4242, StartedAt: startedAt.UTC()}) {
		t.Fatalf("running task = %+v", c.Task)
	}
	if op := mustOp(t, v, "opS"); op.State != api.OpCompleted {
		t.Fatalf("start op after task-started = %+v", op)
	}

	// kill and label complete at once
	mustApply(t, v, g.ev(t, "default", "opK", "bob", events.TypeTaskKillRequested, agg, events.TaskKillRequested{ID: "c1", Node: "node-a", Signal: "SIGTERM"}))
	if op := mustOp(t, v, "opK"); op.Kind != OpKindTaskKill || op.State != api.OpCompleted || op.EndedAt.IsZero() {
		t.Fatalf("kill op = %+v", op)
	}
	mustApply(t, v, g.ev(t, "default", "opL", "bob", events.TypeContainerLabelsUpdated, agg, events.ContainerLabelsUpdated{ID: "c1", Labels: map[string]string{"b": "2"}}))
	if op := mustOp(t, v, "opL"); op.Kind != OpKindContainerLabel || op.State != api.OpCompleted || op.Ref != "c1" {
		t.Fatalf("label op = %+v", op)
	}
	if c := mustContainer(t, v, "default", "c1"); !reflect.DeepEqual(c.Labels, map[string]string{"b": "2"}) {
		t.Fatalf("labels = %v", c.Labels)
	}

	// exit
	exitedAt := t0.Add(2 * time.Minute)
	mustApply(t, v, g.ev(t, "default", "opS", "", events.TypeTaskExited, agg, events.TaskExited{
		ID: "c1", Code: 137, Signal: "SIGKILL", OOMKilled: true, StartedAt: startedAt, ExitedAt: exitedAt,
	}))
	c = mustContainer(t, v, "default", "c1")
	if c.Task.Status != api.TaskStopped || c.Task.ExitCode == nil || *c.Task.ExitCode != 137 || c.Task.Signal != "SIGKILL" ||
		!c.Task.OOMKilled || !c.Task.ExitedAt.Equal(exitedAt) || !c.Task.StartedAt.Equal(startedAt) || c.Task.Pid != 0 {
		t.Fatalf("stopped task = %+v", c.Task)
	}
	// A clean exit has a code of 0, not a missing one.
	mustApply(t, v, g.ev(t, "default", "opS2", "", events.TypeTaskStarted, agg, events.TaskStarted{ID: "c1", Pid: 5, StartedAt: exitedAt}))
	if c := mustContainer(t, v, "default", "c1"); c.Task.Status != api.TaskRunning || c.Task.ExitCode != nil || c.Task.Signal != "" {
		t.Fatalf("restarted task = %+v", c.Task)
	}
	mustApply(t, v, g.ev(t, "default", "opS2", "", events.TypeTaskExited, agg, events.TaskExited{ID: "c1", Code: 0, ExitedAt: exitedAt}))
	raw, err := json.Marshal(mustContainer(t, v, "default", "c1").Task)
	if err != nil {
		t.Fatal(err)
	}
	var task map[string]any
	if err := json.Unmarshal(raw, &task); err != nil {
		t.Fatal(err)
	}
	if code, ok := task["exit_code"]; !ok || code != 0.0 {
		t.Fatalf("exit code 0 not reported: %s", raw)
	}

	// delete: failure first, then success
	mustApply(t, v, g.ev(t, "default", "opD1", "bob", events.TypeContainerDeleteRequested, agg, events.ContainerDeleteRequested{ID: "c1", Node: "node-a"}))
	mustApply(t, v, g.ev(t, "default", "opD1", "", events.TypeContainerDeleteFailed, agg, events.Failure{ID: "c1", Code: "unavailable", Message: "the snapshot is busy"}))
	if op := mustOp(t, v, "opD1"); op.Kind != OpKindContainerDelete || op.State != api.OpFailed || op.Code != "unavailable" || op.Message != "the snapshot is busy" {
		t.Fatalf("failed delete op = %+v", op)
	}
	mustContainer(t, v, "default", "c1")
	mustApply(t, v, g.ev(t, "default", "opD2", "bob", events.TypeContainerDeleteRequested, agg, events.ContainerDeleteRequested{ID: "c1", Node: "node-a", Force: true}))
	mustApply(t, v, g.ev(t, "default", "opD2", "", events.TypeContainerDeleted, agg, events.ContainerDeleted{ID: "c1"}))
	if _, err := v.Container("default", "c1"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("deleted container: %v", err)
	}
	if op := mustOp(t, v, "opD2"); op.State != api.OpCompleted {
		t.Fatalf("delete op = %+v", op)
	}
	// Events about a container that is gone change nothing.
	mustApply(t, v, g.ev(t, "default", "", "", events.TypeTaskStarted, agg, events.TaskStarted{ID: "c1", Pid: 9}))
	if _, err := v.Container("default", "c1"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("task-started resurrected a deleted container: %v", err)
	}
}

func TestContainerRunOperation(t *testing.T) {
	v := openMem(t)
	var g gen
	agg := events.ContainerAggregate("r1")
	mustApply(t, v,
		g.ev(t, "default", "opR", "alice", events.TypeContainerCreateRequested, agg, events.ContainerCreateRequested{ID: "r1", Image: "x", Start: true}),
		g.ev(t, "default", "opR", "alice", events.TypeContainerCreated, agg, created("r1", nil)),
	)
	// Created is not the end of a run.
	if op := mustOp(t, v, "opR"); op.Kind != OpKindContainerRun || op.State != api.OpRunning {
		t.Fatalf("run op after container-created = %+v", op)
	}
	mustApply(t, v, g.ev(t, "default", "opR", "alice", events.TypeTaskStarted, agg, events.TaskStarted{ID: "r1", Pid: 7, StartedAt: t0}))
	if op := mustOp(t, v, "opR"); op.State != api.OpCompleted {
		t.Fatalf("run op after task-started = %+v", op)
	}

	// A run whose start fails.
	agg2 := events.ContainerAggregate("r2")
	mustApply(t, v,
		g.ev(t, "default", "opR2", "alice", events.TypeContainerCreateRequested, agg2, events.ContainerCreateRequested{ID: "r2", Image: "x", Start: true}),
		g.ev(t, "default", "opR2", "alice", events.TypeContainerCreated, agg2, created("r2", nil)),
		g.ev(t, "default", "opR2", "alice", events.TypeTaskStartFailed, agg2, events.Failure{ID: "r2", Code: "invalid_argument", Message: `exec: "nope": not found`}),
	)
	if op := mustOp(t, v, "opR2"); op.State != api.OpFailed || op.Code != "invalid_argument" || op.Message != `exec: "nope": not found` {
		t.Fatalf("failed run op = %+v", op)
	}
	if c := mustContainer(t, v, "default", "r2"); c.Task.Status != api.TaskCreated {
		t.Fatalf("container of a failed run = %+v", c)
	}

	// A create that fails; a start that fails.
	agg3 := events.ContainerAggregate("r3")
	mustApply(t, v,
		g.ev(t, "default", "opC3", "", events.TypeContainerCreateRequested, agg3, events.ContainerCreateRequested{ID: "r3", Image: "x"}),
		g.ev(t, "default", "opC3", "", events.TypeContainerCreateFailed, agg3, events.Failure{ID: "r3", Code: "failed_precondition", Message: "image x is not unpacked on node-a"}),
		g.ev(t, "default", "opS1", "", events.TypeTaskStartRequested, agg, events.TaskStartRequested{ID: "r1"}),
		g.ev(t, "default", "opS1", "", events.TypeTaskStartFailed, agg, events.Failure{ID: "r1", Code: "failed_precondition", Message: "already running"}),
	)
	if op := mustOp(t, v, "opC3"); op.Kind != OpKindContainerCreate || op.State != api.OpFailed || op.Code != "failed_precondition" {
		t.Fatalf("failed create op = %+v", op)
	}
	if _, err := v.Container("default", "r3"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("failed create left a container: %v", err)
	}
	if op := mustOp(t, v, "opS1"); op.Kind != OpKindTaskStart || op.State != api.OpFailed {
		t.Fatalf("failed start op = %+v", op)
	}
	if c := mustContainer(t, v, "default", "r1"); c.Task.Status != api.TaskRunning {
		t.Fatalf("a failed start changed the running task: %+v", c.Task)
	}
	// A later failure does not reopen a completed operation.
	mustApply(t, v, g.ev(t, "default", "opR", "", events.TypeTaskStartFailed, agg, events.Failure{ID: "r1", Code: "internal", Message: "late"}))
	if op := mustOp(t, v, "opR"); op.State != api.OpCompleted {
		t.Fatalf("completed run reopened: %+v", op)
	}
}

func TestContainersList(t *testing.T) {
	v := openMem(t)
	var g gen
	// Created in the order b, a, c; a and c at the same time.
	eb := g.ev(t, "default", "", "", events.TypeContainerCreated, events.ContainerAggregate("b"), created("b", nil))
	ea := g.ev(t, "default", "", "", events.TypeContainerCreated, events.ContainerAggregate("a"), created("a", nil))
	ec := g.ev(t, "default", "", "", events.TypeContainerCreated, events.ContainerAggregate("c"), created("c", nil))
	ec.Time = ea.Time
	eo := g.ev(t, "team-a", "", "", events.TypeContainerCreated, events.ContainerAggregate("o"), created("o", nil))
	mustApply(t, v, eb, ea, ec, eo)
	list, err := v.Containers("default")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range list {
		ids = append(ids, c.ID)
		if c.Spec != nil {
			t.Fatalf("list carries the spec of %s", c.ID)
		}
	}
	if !reflect.DeepEqual(ids, []string{"b", "a", "c"}) {
		t.Fatalf("ids = %v, want creation order then id", ids)
	}
	if list, _ := v.Containers("team-a"); len(list) != 1 || list[0].ID != "o" {
		t.Fatalf("team-a = %+v", list)
	}
	if list, err := v.Containers("empty"); err != nil || list == nil || len(list) != 0 {
		t.Fatalf("empty namespace = %#v, %v", list, err)
	}
	if _, err := v.Containers("Bad NS"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("bad namespace: %v", err)
	}
	if c := mustContainer(t, v, "default", "a"); len(c.Spec) == 0 {
		t.Fatal("Container has no spec")
	}
	if _, err := v.Container("team-a", "a"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("container of another namespace: %v", err)
	}
	// A duplicate container-created does not reset the task.
	mustApply(t, v, g.ev(t, "default", "", "", events.TypeTaskStarted, events.ContainerAggregate("a"), events.TaskStarted{ID: "a", Pid: 1}))
	mustApply(t, v, g.ev(t, "default", "", "", events.TypeContainerCreated, events.ContainerAggregate("a"), created("a", nil)))
	if c := mustContainer(t, v, "default", "a"); c.Task.Status != api.TaskRunning || !c.Created.Equal(ea.Time) {
		t.Fatalf("duplicate created changed the container: %+v", c)
	}
}
