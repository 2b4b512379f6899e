package nodesvc_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/stevedore/stevedore/internal/testutil/natstest"
	"github.com/stevedore/stevedore/pkg/client"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
	"github.com/stevedore/stevedore/pkg/nodesvc"
	"github.com/stevedore/stevedore/pkg/runtime"
	"github.com/stevedore/stevedore/pkg/snapshots"
	"github.com/stevedore/stevedore/pkg/snapshots/native"
)

const node = "n1"

// startService serves a native snapshotter on node over a real NATS server
// and returns the snapshotter and the server.
func startService(t *testing.T) (snapshots.Snapshotter, *natstest.Server) {
	t.Helper()
	s := natstest.Start(t)
	sn, err := native.New(t.TempDir(), native.WithNoSync())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sn.Close() })
	svc, err := nodesvc.Start(nodesvc.Config{Conn: s.Conn, Snapshotter: sn, Name: "native", Publisher: sdjs.NewPublisher(s.JS), Node: node, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	return sn, s
}

// withContainerRootfs serves a native snapshotter (startService) holding a
// committed layer "base", a container's rootfs prepared on it through the
// executor's client and labelled as the executor labels it, and an
// unlabelled active snapshot "scratch". It returns a context for the test,
// the snapshotter, the server, the executor's client and the rootfs key.
func withContainerRootfs(t *testing.T) (context.Context, snapshots.Snapshotter, *natstest.Server, *nodesvc.Client, string) {
	t.Helper()
	sn, s := startService(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	if _, err := sn.ApplyLayer(ctx, "base", "", nil, func(_ context.Context, dir string, _ []string) error {
		return os.WriteFile(filepath.Join(dir, "hello"), []byte("hi\n"), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	exec := &nodesvc.Client{Conn: s.Conn, Node: node, Actor: "executor"}
	rootfs := runtime.TaskID("team-a", "c1")
	if _, name, err := exec.Prepare(ctx, rootfs, "base", map[string]string{snapshots.ContainerLabel: "team-a/c1"}); err != nil || name != "native" {
		t.Fatalf("Prepare: snapshotter %q, %v; want native", name, err)
	}
	if _, err := sn.Prepare(ctx, "scratch", "base", nil); err != nil {
		t.Fatal(err)
	}
	return ctx, sn, s, exec, rootfs
}

// TestRemoveRefusesContainerRootfs checks that a snapshot a container runs
// on cannot be removed by a user (ctl's client), only by the executor's
// removal of the container, and that the parent of a container's rootfs
// cannot be removed by either.
func TestRemoveRefusesContainerRootfs(t *testing.T) {
	ctx, sn, s, exec, rootfs := withContainerRootfs(t)
	user, err := client.New(s.Conn, client.WithActor("alice@host"))
	if err != nil {
		t.Fatal(err)
	}

	_, err = user.SnapshotRemove(ctx, node, rootfs)
	want := "snapshot " + rootfs + " is the rootfs of container team-a/c1: remove the container first (ctl rm)"
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), want) {
		t.Fatalf("user removes a container's rootfs: err = %v, want failed_precondition with %q", err, want)
	}
	if _, err := sn.Stat(ctx, rootfs); err != nil {
		t.Fatalf("the refused rootfs snapshot: %v", err)
	}
	for _, rm := range []struct {
		who string
		fn  func() error
	}{
		{"user", func() error { _, err := user.SnapshotRemove(ctx, node, "base"); return err }},
		{"executor", func() error { return exec.Remove(ctx, "base") }},
	} {
		if err := rm.fn(); !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Fatalf("%s removes the parent of a container's rootfs: err = %v, want failed_precondition", rm.who, err)
		}
	}
	if _, err := sn.Stat(ctx, "base"); err != nil {
		t.Fatalf("the refused parent snapshot: %v", err)
	}

	// An active snapshot no container uses is the user's to remove.
	if r, err := user.SnapshotRemove(ctx, node, "scratch"); err != nil || r.Seq == 0 {
		t.Fatalf("user removes an unlabelled active snapshot: %+v, %v", r, err)
	}
	// The executor, removing the container, removes its rootfs.
	if err := exec.Remove(ctx, rootfs); err != nil {
		t.Fatalf("executor removes the container's rootfs: %v", err)
	}
	if _, err := sn.Stat(ctx, rootfs); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("rootfs after the executor removed it: err = %v, want not found", err)
	}
	// Then the layer has no child left.
	if _, err := user.SnapshotRemove(ctx, node, "base"); err != nil {
		t.Fatalf("user removes the layer once the container is gone: %v", err)
	}
	if _, err := user.SnapshotRemove(ctx, node, rootfs); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("removing a gone snapshot: err = %v, want not found", err)
	}
}

// TestRemoveRecordsCause checks that the executor's removal of a container's
// rootfs is recorded as part of the removal that asked for it: the
// snapshot-removed event carries the operation, actor and causation of the
// request's event (sent as headers), while a user's own removal is an
// operation of its own.
func TestRemoveRecordsCause(t *testing.T) {
	ctx, sn, s, exec, rootfs := withContainerRootfs(t)
	lastRemoved := func(key string) *events.Envelope {
		t.Helper()
		agg := events.SnapshotAggregate(key)
		ev, err := sdjs.LastFor(ctx, s.JS, events.FilterSubject("", agg.Kind, agg.ID, events.TypeSnapshotRemoved))
		if err != nil || ev == nil {
			t.Fatalf("snapshot-removed of %s: %v, %v", key, ev, err)
		}
		return ev
	}

	// A header that is not one token is refused before anything is removed.
	bad := &events.Envelope{ID: "x.y", Operation: "op-rm", Actor: "alice@host"}
	if err := exec.Remove(events.WithCause(ctx, bad), rootfs); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("remove with causation %q: err = %v, want invalid_argument", bad.ID, err)
	}
	if _, err := sn.Stat(ctx, rootfs); err != nil {
		t.Fatalf("rootfs after a refused removal: %v", err)
	}

	req, err := events.New(events.Meta{Namespace: "team-a", Operation: "op-rm", Actor: "alice@host", Node: node},
		events.TypeContainerDeleteRequested, events.ContainerAggregate("c1"), events.ContainerDeleteRequested{ID: "c1", Node: node})
	if err != nil {
		t.Fatal(err)
	}
	if err := exec.Remove(events.WithCause(ctx, req), rootfs); err != nil {
		t.Fatalf("executor removes the container's rootfs: %v", err)
	}
	ev := lastRemoved(rootfs)
	if ev.Operation != "op-rm" || ev.Actor != "alice@host" || ev.Causation != req.ID || ev.Node != node {
		t.Fatalf("snapshot-removed recorded op %q actor %q causation %q node %q, want op-rm, alice@host, %s, %s",
			ev.Operation, ev.Actor, ev.Causation, ev.Node, req.ID, node)
	}

	// Without a cause (a user's `ctl snapshots rm`): the user's actor, an
	// operation of its own, no causation.
	user, err := client.New(s.Conn, client.WithActor("bob@host"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := user.SnapshotRemove(ctx, node, "scratch"); err != nil {
		t.Fatal(err)
	}
	ev = lastRemoved("scratch")
	if ev.Actor != "bob@host" || ev.Operation == "" || ev.Operation == "op-rm" || ev.Causation != "" {
		t.Fatalf("user's removal recorded op %q actor %q causation %q, want a fresh op, bob@host, none", ev.Operation, ev.Actor, ev.Causation)
	}
}
