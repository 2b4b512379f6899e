package view

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.FixedZone("X", 3600))

// gen builds envelopes with increasing sequences and times.
type gen struct {
	seq uint64
}

func (g *gen) ev(t testing.TB, ns, op, actor string, typ events.Type, agg events.Aggregate, payload any) *events.Envelope {
	t.Helper()
	g.seq++
	b, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	return &events.Envelope{
		ID: fmt.Sprintf("ev%d", g.seq), Type: typ, Version: events.SchemaVersion,
		Time:      t0.Add(time.Duration(g.seq) * 1234567 * time.Nanosecond),
		Namespace: ns, Aggregate: agg, Operation: op, Actor: actor, Node: "node1",
		Payload: b, Seq: g.seq,
	}
}

func openMem(t testing.TB) *View {
	t.Helper()
	v, err := Open("view", InMemory())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Close() })
	return v
}

func mustApply(t testing.TB, v *View, evs ...*events.Envelope) {
	t.Helper()
	for _, ev := range evs {
		if err := v.Apply(ev); err != nil {
			t.Fatalf("apply %d %s: %v", ev.Seq, ev.Type, err)
		}
	}
}

func dgst(s string) digest.Digest { return digest.FromString(s) }

func TestImages(t *testing.T) {
	v := openMem(t)
	var g gen
	img := func(name string) events.ImageUpdated {
		return events.ImageUpdated{Name: name, Target: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: dgst(name), Size: 10}, Size: 100, Platform: "linux/amd64"}
	}
	e1 := g.ev(t, "default", "op1", "me", events.TypeImageUpdated, events.ImageAggregate("b:1"), img("b:1"))
	e2 := g.ev(t, "default", "op1", "me", events.TypeImageUpdated, events.ImageAggregate("a/x:1"), img("a/x:1"))
	e3 := g.ev(t, "other", "op2", "me", events.TypeImageUpdated, events.ImageAggregate("c:1"), img("c:1"))
	mustApply(t, v, e1, e2, e3)

	imgs, err := v.Images("default")
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 2 || imgs[0].Name != "a/x:1" || imgs[1].Name != "b:1" {
		t.Fatalf("images = %+v", imgs)
	}
	if !imgs[1].UpdatedAt.Equal(e1.Time) || imgs[1].Size != 100 || imgs[1].Target.Digest != dgst("b:1") {
		t.Fatalf("image b = %+v", imgs[1])
	}
	if got, err := v.Image("other", "c:1"); err != nil || got.Name != "c:1" {
		t.Fatalf("Image(other, c:1) = %+v, %v", got, err)
	}
	if _, err := v.Image("default", "c:1"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Image(default, c:1) err = %v, want not found", err)
	}
	if _, err := v.Images("Bad NS"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("Images(bad) err = %v", err)
	}

	del := g.ev(t, "default", "op3", "you", events.TypeImageDeleted, events.ImageAggregate("b:1"), events.ImageDeleted{Name: "b:1"})
	mustApply(t, v, del)
	if _, err := v.Image("default", "b:1"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("deleted image still there: %v", err)
	}
	op, err := v.Operation("op3")
	if err != nil {
		t.Fatal(err)
	}
	want := api.Operation{ID: "op3", Kind: OpKindImagesRemove, Ref: "b:1", State: api.OpCompleted, Actor: "you", StartedAt: del.Time.UTC(), EndedAt: del.Time.UTC()}
	if op != want {
		t.Fatalf("op = %+v, want %+v", op, want)
	}
	if v.AppliedSeq() != 4 {
		t.Fatalf("applied = %d", v.AppliedSeq())
	}
}

func TestPullOperation(t *testing.T) {
	v := openMem(t)
	var g gen
	req := g.ev(t, "default", "opA", "alice", events.TypePullRequested, events.PullAggregate("opA"), events.PullRequested{Ref: "r/x:1", Platform: "linux/amd64"})
	mustApply(t, v, req)
	op, err := v.Operation("opA")
	if err != nil || op.State != api.OpRunning || op.Kind != OpKindPull || op.Ref != "r/x:1" || op.Actor != "alice" || !op.StartedAt.Equal(req.Time) {
		t.Fatalf("op = %+v, %v", op, err)
	}
	fail := g.ev(t, "default", "opA", "alice", events.TypePullFailed, events.PullAggregate("opA"), events.PullFailed{Ref: "r/x:1", Code: "not_found", Message: "no such image"})
	done := g.ev(t, "default", "opA", "alice", events.TypePullCompleted, events.PullAggregate("opA"), events.PullCompleted{Ref: "r/x:1"})
	mustApply(t, v, fail, done)
	op, _ = v.Operation("opA")
	if op.State != api.OpFailed || op.Code != "not_found" || op.Message != "no such image" || !op.EndedAt.Equal(fail.Time) {
		t.Fatalf("first final state must win: %+v", op)
	}
	if _, err := v.Operation("nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("missing op err = %v", err)
	}
}

// on sets the node an event was recorded on.
func on(node string, ev *events.Envelope) *events.Envelope { ev.Node = node; return ev }

func TestUnpacked(t *testing.T) {
	v := openMem(t)
	var g gen
	const name = "r.example/app:1"
	a, bTarget := dgst("target-a"), dgst("target-b")
	top, lower := dgst("chain-top"), dgst("chain-lower")
	updated := func(target digest.Digest) *events.Envelope {
		return g.ev(t, "default", "op1", "", events.TypeImageUpdated, events.ImageAggregate(name), events.ImageUpdated{
			Name: name, Target: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: target, Size: 7}, Size: 70, Platform: "linux/amd64",
		})
	}
	unpacked := func(node string, target digest.Digest) *events.Envelope {
		return on(node, g.ev(t, "default", "op1", "", events.TypeImageUnpacked, events.ImageAggregate(name), events.ImageUnpacked{
			Name: name, Target: target, ChainID: top, Layers: 2, Snapshotter: "overlay",
		}))
	}
	removed := func(node string, key digest.Digest) *events.Envelope {
		return on(node, g.ev(t, "default", "", "", events.TypeSnapshotRemoved, events.SnapshotAggregate(key.String()), events.SnapshotRemoved{
			Key: key.String(), Snapshotter: "overlay",
		}))
	}
	nodes := func(want ...string) {
		t.Helper()
		img, err := v.Image("default", name)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(img.Unpacked, want) {
			t.Fatalf("unpacked on %q, want %q", img.Unpacked, want)
		}
	}

	req := g.ev(t, "default", "op1", "alice", events.TypePullRequested, events.PullAggregate("op1"), events.PullRequested{Ref: name, Unpack: true})
	first := updated(a)
	mustApply(t, v, req, first)
	nodes()
	mustApply(t, v,
		on("node-b", g.ev(t, "default", "op1", "", events.TypeLayerApplied, events.SnapshotAggregate(lower.String()), events.LayerApplied{
			Ref: name, ChainID: lower, Layer: dgst("layer0"), Index: 0, Size: 100})),
		on("node-b", g.ev(t, "default", "op1", "", events.TypeLayerApplied, events.SnapshotAggregate(top.String()), events.LayerApplied{
			Ref: name, ChainID: top, Parent: lower, Layer: dgst("layer1"), Index: 1, Existing: true})),
		unpacked("node-b", a))
	nodes("node-b")
	if op, _ := v.Operation("op1"); op.State != api.OpRunning {
		t.Fatalf("layer-applied / image-unpacked changed the operation: %+v", op)
	}
	mustApply(t, v, g.ev(t, "default", "op1", "", events.TypePullCompleted, events.PullAggregate("op1"), events.PullCompleted{Ref: name, Target: a}))
	if op, _ := v.Operation("op1"); op.State != api.OpCompleted {
		t.Fatalf("pull-completed did not complete the operation: %+v", op)
	}

	// Sorted, no duplicates; other targets and unknown images change nothing.
	mustApply(t, v, unpacked("node-a", a), unpacked("node-b", a), unpacked("node-c", bTarget))
	nodes("node-a", "node-b")
	mustApply(t, v, on("node-a", g.ev(t, "default", "", "", events.TypeImageUnpacked, events.ImageAggregate("other:1"), events.ImageUnpacked{Name: "other:1", Target: a})))
	if _, err := v.Image("default", "other:1"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("image-unpacked of an unknown image made one: %v", err)
	}
	// An unpack without a node says nothing about where.
	mustApply(t, v, on("", unpacked("", a)))
	nodes("node-a", "node-b")

	// The same target again keeps the nodes.
	again := updated(a)
	mustApply(t, v, again)
	nodes("node-a", "node-b")
	if img, _ := v.Image("default", name); !img.UpdatedAt.Equal(again.Time) {
		t.Fatalf("updated_at %v, want %v", img.UpdatedAt, again.Time)
	}

	// Removing a lower snapshot, or the top one elsewhere, changes nothing;
	// removing the top one on a node takes that node back.
	mustApply(t, v, removed("node-a", lower), removed("node-z", top))
	nodes("node-a", "node-b")
	mustApply(t, v, removed("node-a", top))
	nodes("node-b")

	// A new target clears them: the snapshots belong to the old one.
	mustApply(t, v, updated(bTarget))
	nodes()
	mustApply(t, v, unpacked("node-b", a)) // late, for the old target
	nodes()
	mustApply(t, v, unpacked("node-c", bTarget))
	nodes("node-c")
	// The old target's top snapshot going away does not touch the new one's nodes.
	mustApply(t, v, removed("node-b", top))
	nodes("node-c")

	// Deleting the image drops it; pulled again it starts with no nodes.
	mustApply(t, v, g.ev(t, "default", "op9", "", events.TypeImageDeleted, events.ImageAggregate(name), events.ImageDeleted{Name: name}))
	if _, err := v.Image("default", name); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("deleted image: %v", err)
	}
	mustApply(t, v, updated(bTarget))
	nodes()
}

func TestBlobsAndContentDelete(t *testing.T) {
	v := openMem(t)
	var g gen
	d := dgst("blob")
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: d, Size: 42}
	c1 := g.ev(t, "default", "p", "", events.TypeBlobCommitted, events.BlobAggregate(d), events.BlobCommitted{Descriptor: desc, Role: events.RoleLayer})
	c2 := g.ev(t, "default", "q", "", events.TypeBlobCommitted, events.BlobAggregate(d), events.BlobCommitted{Descriptor: desc, Existing: true})
	mustApply(t, v, c1, c2)
	bl, err := v.Blob(d)
	if err != nil || bl.Size != 42 || bl.MediaType != desc.MediaType || !bl.CommittedAt.Equal(c1.Time) || bl.Node != "node1" {
		t.Fatalf("blob = %+v, %v", bl, err)
	}
	req := g.ev(t, "default", "del1", "bob", events.TypeContentDeleteRequested, events.BlobAggregate(d), events.ContentDeleteRequested{Digest: d})
	mustApply(t, v, req)
	if op, _ := v.Operation("del1"); op.State != api.OpRunning || op.Kind != OpKindContentDelete || op.Ref != d.String() {
		t.Fatalf("op = %+v", op)
	}
	mustApply(t, v, g.ev(t, "default", "del1", "bob", events.TypeBlobDeleted, events.BlobAggregate(d), events.BlobDeleted{Digest: d}))
	if _, err := v.Blob(d); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("deleted blob: %v", err)
	}
	if op, _ := v.Operation("del1"); op.State != api.OpCompleted {
		t.Fatalf("op = %+v", op)
	}
	bls, err := v.Blobs()
	if err != nil || len(bls) != 0 {
		t.Fatalf("blobs = %v, %v", bls, err)
	}

	d2 := dgst("other")
	mustApply(t, v,
		g.ev(t, "default", "del2", "bob", events.TypeContentDeleteRequested, events.BlobAggregate(d2), events.ContentDeleteRequested{Digest: d2}),
		g.ev(t, "default", "del2", "bob", events.TypeContentDeleteFailed, events.BlobAggregate(d2), events.ContentDeleteFailed{Digest: d2, Code: "unavailable", Message: "in use"}))
	if op, _ := v.Operation("del2"); op.State != api.OpFailed || op.Code != "unavailable" || op.Message != "in use" {
		t.Fatalf("op = %+v", op)
	}
}

func TestApplyEdgeCases(t *testing.T) {
	v := openMem(t)
	if err := v.Apply(&events.Envelope{Type: events.TypeImageUpdated}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("seq 0: %v", err)
	}
	var g gen
	unknown := g.ev(t, "default", "", "", events.Type("something-new"), events.Aggregate{Kind: "x", ID: "y"}, map[string]int{"a": 1})
	bad := g.ev(t, "default", "", "", events.TypeImageUpdated, events.ImageAggregate("x"), nil)
	bad.Payload = json.RawMessage(`"not an object"`)
	newer := g.ev(t, "default", "", "", events.TypeImageUpdated, events.ImageAggregate("x"), events.ImageUpdated{Name: "x"})
	newer.Version = events.SchemaVersion + 1
	mustApply(t, v, unknown, bad, newer)
	if v.AppliedSeq() != 3 {
		t.Fatalf("applied = %d, want 3", v.AppliedSeq())
	}
	if imgs, _ := v.Images("default"); len(imgs) != 0 {
		t.Fatalf("images = %v", imgs)
	}
	// An old event again is skipped, even if it would change something.
	old := g.ev(t, "default", "", "", events.TypeImageUpdated, events.ImageAggregate("x"), events.ImageUpdated{Name: "x"})
	old.Seq = 2
	mustApply(t, v, old)
	if _, err := v.Image("default", "x"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("re-applied old seq changed the view: %v", err)
	}
}

func TestWaitApplied(t *testing.T) {
	v := openMem(t)
	var g gen
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := v.WaitApplied(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait err = %v", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- v.WaitApplied(context.Background(), 2) }()
	mustApply(t, v, g.ev(t, "default", "", "", "x", events.Aggregate{}, 1))
	mustApply(t, v, g.ev(t, "default", "", "", "x", events.Aggregate{}, 1))
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	go func() { errc <- v.WaitApplied(context.Background(), 10) }()
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("wait after close = %v", err)
	}
	if _, err := v.Images("default"); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("read after close = %v", err)
	}
}

func TestOnDisk(t *testing.T) {
	dir := t.TempDir()
	v, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	var g gen
	mustApply(t, v, g.ev(t, "default", "o", "", events.TypeImageUpdated, events.ImageAggregate("n"), events.ImageUpdated{Name: "n"}))
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	v, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if v.AppliedSeq() != 1 {
		t.Fatalf("applied after reopen = %d", v.AppliedSeq())
	}
	if _, err := v.Image("default", "n"); err != nil {
		t.Fatal(err)
	}
}

// genLog builds a random but seeded log exercising every projected type,
// unknown types and unreadable payloads.
func genLog(t testing.TB, n int, seed uint64) []*events.Envelope {
	r := rand.New(rand.NewPCG(seed, seed))
	var g gen
	var out []*events.Envelope
	nss := []string{"default", "team-a"}
	names := []string{"docker.io/library/alpine:3", "r.example:5000/app:1", "r.example:5000/app:2", "x/y@" + dgst("z").String()}
	var ops []string
	targets := map[string]digest.Digest{} // ns/name → the last target recorded
	for len(out) < n {
		ns := nss[r.IntN(len(nss))]
		name := names[r.IntN(len(names))]
		d := dgst(fmt.Sprint(r.IntN(6)))
		op := fmt.Sprintf("op%d", r.IntN(12))
		if len(ops) > 0 && r.IntN(2) == 0 {
			op = ops[r.IntN(len(ops))]
		}
		ops = append(ops, op)
		actor := []string{"alice", "bob", ""}[r.IntN(3)]
		created := t0.Add(-time.Duration(r.IntN(1000)) * time.Hour)
		var ev *events.Envelope
		node := []string{"node-a", "node-b", "node-c"}[r.IntN(3)]
		chain := dgst(fmt.Sprint("chain", r.IntN(3)))
		cid := []string{"c1", "c2", "c3"}[r.IntN(3)]
		cagg := events.ContainerAggregate(cid)
		failure := events.Failure{ID: cid, Code: "failed_precondition", Message: "no"}
		switch r.IntN(26) {
		case 0:
			ev = g.ev(t, ns, op, actor, events.TypePullRequested, events.PullAggregate(op), events.PullRequested{Ref: name, Platform: "linux/arm64/v8", Unpack: true})
		case 1:
			ev = g.ev(t, ns, op, actor, events.TypePullCompleted, events.PullAggregate(op), events.PullCompleted{Ref: name, Target: d, Size: 5, Blobs: 3})
		case 2:
			ev = g.ev(t, ns, op, actor, events.TypePullFailed, events.PullAggregate(op), events.PullFailed{Ref: name, Code: "unavailable", Message: "registry down"})
		case 3, 4:
			targets[ns+"/"+name] = d
			ev = g.ev(t, ns, op, actor, events.TypeImageUpdated, events.ImageAggregate(name), events.ImageUpdated{
				Name: name, Size: int64(r.IntN(1 << 20)), Created: &created, Platform: "linux/amd64",
				Target: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: d, Size: 99,
					Annotations: map[string]string{"b": "2", "a": "1", "c": "3"}},
			})
		case 5:
			ev = g.ev(t, ns, op, actor, events.TypeImageDeleted, events.ImageAggregate(name), events.ImageDeleted{Name: name})
		case 6:
			ev = g.ev(t, ns, op, actor, events.TypeBlobCommitted, events.BlobAggregate(d), events.BlobCommitted{
				Descriptor: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: d, Size: int64(r.IntN(1000))},
			})
		case 7:
			ev = g.ev(t, ns, op, actor, events.TypeContentDeleteRequested, events.BlobAggregate(d), events.ContentDeleteRequested{Digest: d})
		case 8:
			ev = g.ev(t, ns, op, actor, events.TypeBlobDeleted, events.BlobAggregate(d), events.BlobDeleted{Digest: d})
		case 9:
			ev = g.ev(t, ns, op, actor, events.TypeContentDeleteFailed, events.BlobAggregate(d), events.ContentDeleteFailed{Digest: d, Code: "unavailable", Message: "busy"})
		case 10:
			ev = g.ev(t, ns, op, actor, events.TypeDescriptorResolved, events.BlobAggregate(d), events.DescriptorResolved{Ref: name})
			if r.IntN(3) == 0 { // readable JSON, unreadable payload
				ev.Type = events.TypeImageUpdated
				ev.Payload = json.RawMessage(`[1,2]`)
			}
		case 11:
			if t, ok := targets[ns+"/"+name]; ok && r.IntN(3) > 0 { // mostly the current target
				d = t
			}
			ev = on(node, g.ev(t, ns, op, actor, events.TypeImageUnpacked, events.ImageAggregate(name), events.ImageUnpacked{
				Name: name, Target: d, ChainID: chain, Layers: 2, Snapshotter: "overlay",
			}))
		case 12:
			ev = on(node, g.ev(t, ns, op, actor, events.TypeLayerApplied, events.SnapshotAggregate(chain.String()), events.LayerApplied{
				Ref: name, ChainID: chain, Layer: d, Index: r.IntN(2), Size: int64(r.IntN(1000)), Existing: r.IntN(2) == 0,
			}))
		case 13:
			ev = on(node, g.ev(t, ns, op, actor, events.TypeSnapshotRemoved, events.SnapshotAggregate(chain.String()), events.SnapshotRemoved{
				Key: chain.String(), Snapshotter: "overlay",
			}))
		case 14:
			ev = g.ev(t, ns, op, actor, events.TypeContainerCreateRequested, cagg, events.ContainerCreateRequested{
				ID: cid, Image: name, Node: node, Start: r.IntN(2) == 0, Options: events.ContainerOptions{Args: []string{"sh"}},
			})
		case 15, 16:
			ev = on(node, g.ev(t, ns, op, actor, events.TypeContainerCreated, cagg, events.ContainerCreated{
				ID: cid, Image: name, ImageDigest: d, ChainID: chain, SnapshotKey: "k-" + cid, Snapshotter: "overlay", Node: node,
				Spec:   json.RawMessage(`{"process": {"args": ["sh", "-c", "a<b && c>d"]}, "ociVersion": "1.2.0"}`),
				Labels: map[string]string{"z": "1", "a": "2"}, Rm: r.IntN(2) == 0,
			}))
		case 17:
			ev = g.ev(t, ns, op, actor, events.TypeContainerCreateFailed, cagg, failure)
		case 18:
			ev = g.ev(t, ns, op, actor, events.TypeTaskStartRequested, cagg, events.TaskStartRequested{ID: cid, Node: node})
		case 19, 20:
			ev = g.ev(t, ns, op, actor, events.TypeTaskStarted, cagg, events.TaskStarted{ID: cid, Pid: r.IntN(1000), StartedAt: created})
		case 21:
			ev = g.ev(t, ns, op, actor, []events.Type{events.TypeTaskStartFailed, events.TypeContainerDeleteFailed}[r.IntN(2)], cagg, failure)
		case 22:
			ev = g.ev(t, ns, op, actor, events.TypeTaskKillRequested, cagg, events.TaskKillRequested{ID: cid, Node: node, Signal: "SIGKILL"})
		case 23:
			ev = g.ev(t, ns, op, actor, events.TypeTaskExited, cagg, events.TaskExited{
				ID: cid, Code: r.IntN(3) * 64, Signal: "SIGKILL", OOMKilled: r.IntN(2) == 0, StartedAt: created, ExitedAt: created.Add(time.Hour),
			})
		case 24:
			ev = g.ev(t, ns, op, actor, []events.Type{events.TypeContainerDeleteRequested, events.TypeContainerDeleted}[r.IntN(2)], cagg,
				events.ContainerDeleteRequested{ID: cid, Node: node, Force: true})
		case 25:
			ev = g.ev(t, ns, op, actor, events.TypeContainerLabelsUpdated, cagg, events.ContainerLabelsUpdated{
				ID: cid, Labels: map[string]string{"n": fmt.Sprint(r.IntN(5)), "m": "x"},
			})
		}
		out = append(out, ev)
	}
	return out
}

// fromLog returns ev as a reader of the log sees it: JSON round-tripped.
func fromLog(t testing.TB, ev *events.Envelope) *events.Envelope {
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	var out events.Envelope
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	out.Seq = ev.Seq
	return &out
}

func dump(t testing.TB, v *View) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := v.Dump(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestReplayEqualsLive checks invariant 4: a view fed live (with restarts
// and redeliveries) equals, byte for byte, a fresh view fed the log once.
func TestReplayEqualsLive(t *testing.T) {
	for seed := uint64(1); seed <= 3; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			log := genLog(t, 400, seed)
			r := rand.New(rand.NewPCG(seed, 99))
			fs := vfs.NewMem()
			live, err := Open("live", WithFS(fs))
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < len(log); {
				switch k := r.IntN(20); {
				case k == 0: // restart
					if err := live.Close(); err != nil {
						t.Fatal(err)
					}
					if live, err = Open("live", WithFS(fs)); err != nil {
						t.Fatal(err)
					}
					if live.AppliedSeq() != uint64(i) {
						t.Fatalf("after restart applied = %d, want %d", live.AppliedSeq(), i)
					}
				case k == 1 && i > 0: // redeliver a window of already-applied events
					from := r.IntN(i)
					for _, ev := range log[from:i] {
						mustApply(t, live, ev)
					}
				default:
					mustApply(t, live, log[i])
					i++
				}
			}
			defer live.Close()

			fresh := openMem(t)
			unpackedSeen := 0          // events after which some image was unpacked somewhere
			states := map[string]int{} // task states seen after each event
			for _, ev := range log {
				mustApply(t, fresh, fromLog(t, ev))
				for _, ns := range []string{"default", "team-a"} {
					ctrs, err := fresh.Containers(ns)
					if err != nil {
						t.Fatal(err)
					}
					for _, c := range ctrs {
						states[c.Task.Status]++
					}
				}
				for _, ns := range []string{"default", "team-a"} {
					imgs, err := fresh.Images(ns)
					if err != nil {
						t.Fatal(err)
					}
					if slices.ContainsFunc(imgs, func(i api.Image) bool { return len(i.Unpacked) > 0 }) {
						unpackedSeen++
						break
					}
				}
			}
			if unpackedSeen < 10 {
				t.Fatalf("an image was unpacked after only %d of %d events: the log hardly exercises image-unpacked", unpackedSeen, len(log))
			}
			for _, st := range []string{api.TaskCreated, api.TaskRunning, api.TaskStopped} {
				if states[st] < 10 {
					t.Fatalf("task states seen: %v: the log hardly exercises the container lifecycle", states)
				}
			}
			a, b := dump(t, live), dump(t, fresh)
			if !bytes.Equal(a, b) {
				t.Fatalf("live and replayed views differ:\nlive:\n%s\nreplayed:\n%s", a, b)
			}
			if live.AppliedSeq() != uint64(len(log)) {
				t.Fatalf("applied = %d", live.AppliedSeq())
			}
			if n := bytes.Count(a, []byte("\n")); n < 10 {
				t.Fatalf("suspiciously small view (%d keys):\n%s", n, a)
			}

		})
	}
}
