package client_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore/stevedore/internal/testutil/natstest"
	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/client"
	"github.com/stevedore/stevedore/pkg/content"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
)

// serve runs a micro service on nc standing in for the gateway's endpoints:
// subject → handler. NATS itself is real.
func serve(t *testing.T, nc *nats.Conn, handlers map[string]micro.HandlerFunc) {
	t.Helper()
	svc, err := micro.AddService(nc, micro.Config{Name: api.ServiceName, Version: api.ServiceVersion})
	if err != nil {
		t.Fatalf("add service: %v", err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	i := 0
	for subj, h := range handlers {
		i++
		if err := svc.AddEndpoint("ep"+string(rune('a'+i)), h, micro.WithEndpointSubject(subj)); err != nil {
			t.Fatalf("add endpoint %s: %v", subj, err)
		}
	}
	// The endpoints' subscriptions must reach the server before a client
	// on another connection asks.
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newClient(t *testing.T, s *natstest.Server, opts ...client.Option) *client.Client {
	t.Helper()
	nc, _ := s.Connect(t)
	c, err := client.New(nc, opts...)
	if err != nil {
		t.Fatalf("client.New: %v", err)
	}
	return c
}

func TestNewRejectsBadOptions(t *testing.T) {
	s := natstest.Start(t)
	tests := []struct {
		name string
		opt  client.Option
	}{
		{"bad namespace", client.WithNamespace("Has.Dots")},
		{"empty actor", client.WithActor("")},
		{"zero timeout", client.WithTimeout(0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := client.New(s.Conn, tt.opt)
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("err = %v, want invalid argument", err)
			}
		})
	}
}

func TestErrorCodeMapping(t *testing.T) {
	s := natstest.Start(t)
	gw, _ := s.Connect(t)
	serve(t, gw, map[string]micro.HandlerFunc{
		api.SubjectImagesRemove: func(r micro.Request) {
			var req api.ImageRemoveRequest
			_ = json.Unmarshal(r.Data(), &req)
			switch req.Name {
			case "missing":
				_ = r.Error("not_found", `image "missing" not found`, nil)
			case "busy":
				_ = r.Error("failed_precondition", "image is in use by container web", nil)
			default:
				_ = r.Error("weird_code", "something odd", nil)
			}
		},
	})
	c := newClient(t, s)
	tests := []struct {
		name, ref, msg string
		class          error
	}{
		{"not found", "missing", `image "missing" not found`, errdefs.ErrNotFound},
		{"precondition", "busy", "image is in use by container web", errdefs.ErrFailedPrecondition},
		{"unknown code", "other", "something odd", errdefs.ErrInternal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.ImageRemove(ctxT(t), tt.ref)
			if !errors.Is(err, tt.class) {
				t.Fatalf("err = %v, want class %v", err, tt.class)
			}
			if err.Error() != tt.msg {
				t.Fatalf("message = %q, want %q", err.Error(), tt.msg)
			}
		})
	}

	t.Run("no responders", func(t *testing.T) {
		_, err := c.ContentInfo(ctxT(t), digest.FromString("x"))
		if !errors.Is(err, nats.ErrNoResponders) || !errors.Is(err, errdefs.ErrUnavailable) {
			t.Fatalf("err = %v, want no responders and unavailable", err)
		}
	})
}

func TestRequestsCarryActorAndNamespace(t *testing.T) {
	s := natstest.Start(t)
	gw, _ := s.Connect(t)
	var mu sync.Mutex
	var gotActor string
	var gotReq api.PullRequest
	serve(t, gw, map[string]micro.HandlerFunc{
		api.SubjectPull: func(r micro.Request) {
			mu.Lock()
			gotActor = r.Headers().Get(client.ActorHeader)
			_ = json.Unmarshal(r.Data(), &gotReq)
			mu.Unlock()
			_ = r.RespondJSON(api.OpReply{Operation: "op1", Seq: 7, Ref: "docker.io/library/alpine:3"})
		},
		api.SubjectImagesList: func(r micro.Request) {
			_ = r.RespondJSON(api.ImagesListReply{Images: []api.Image{{Name: "a"}, {Name: "b"}}})
		},
	})
	c := newClient(t, s, client.WithNamespace("team-a"), client.WithActor("alice@box"))
	op, err := c.Pull(ctxT(t), api.PullRequest{Ref: "alpine:3", Platform: "linux/amd64"})
	if err != nil {
		t.Fatalf("Pull: %v", err)
	}
	if op.Operation != "op1" || op.Seq != 7 || op.Ref != "docker.io/library/alpine:3" {
		t.Fatalf("op = %+v", op)
	}
	mu.Lock()
	if gotActor != "alice@box" || gotReq.Namespace != "team-a" || gotReq.Ref != "alpine:3" || gotReq.Platform != "linux/amd64" {
		t.Fatalf("gateway saw actor %q request %+v", gotActor, gotReq)
	}
	mu.Unlock()
	imgs, err := c.ImagesList(ctxT(t))
	if err != nil || len(imgs) != 2 || imgs[1].Name != "b" {
		t.Fatalf("ImagesList = %+v, %v", imgs, err)
	}
}

// publish appends an event of operation op to the log and returns its sequence.
func publish(t *testing.T, s *natstest.Server, op string, typ events.Type, agg events.Aggregate, payload any) uint64 {
	t.Helper()
	ev, err := events.New(events.Meta{Namespace: events.DefaultNamespace, Operation: op}, typ, agg, payload)
	if err != nil {
		t.Fatal(err)
	}
	seq, err := sdjs.NewPublisher(s.JS).Publish(context.Background(), ev)
	if err != nil {
		t.Fatalf("publish %s: %v", typ, err)
	}
	return seq
}

// recorder collects Wait's updates.
type recorder struct {
	mu      sync.Mutex
	updates []client.Update
	first   chan struct{}
	once    sync.Once
}

func newRecorder() *recorder { return &recorder{first: make(chan struct{})} }

func (r *recorder) fn(u client.Update) {
	r.mu.Lock()
	r.updates = append(r.updates, u)
	r.mu.Unlock()
	if u.Event != nil {
		r.once.Do(func() { close(r.first) })
	}
}

func (r *recorder) types() (evs []events.Type, ticks []int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, u := range r.updates {
		if u.Event != nil {
			evs = append(evs, u.Event.Type)
		} else {
			ticks = append(ticks, u.Progress.Offset)
		}
	}
	return evs, ticks
}

func TestWaitCompleted(t *testing.T) {
	s := natstest.Start(t)
	c := newClient(t, s)
	const op, other = "op-mine", "op-other"
	layer := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromString("layer"), Size: 4 << 20}

	// An earlier event of the same operation, before the sequence the
	// gateway replied with, must not be seen.
	publish(t, s, op, events.TypeImageDeleted, events.ImageAggregate("old"), events.ImageDeleted{Name: "old"})
	seq := publish(t, s, op, events.TypePullRequested, events.PullAggregate(op), events.PullRequested{Ref: "r"})
	publish(t, s, other, events.TypePullFailed, events.PullAggregate(other), events.PullFailed{Code: "not_found", Message: "other op"})
	publish(t, s, op, events.TypeDescriptorResolved, events.BlobAggregate(layer.Digest), events.DescriptorResolved{Ref: "r", Role: events.RoleLayer, Descriptor: layer})

	rec := newRecorder()
	type result struct {
		ev  *events.Envelope
		err error
	}
	res := make(chan result, 1)
	go func() {
		ev, err := c.Wait(ctxT(t), api.OpReply{Operation: op, Seq: seq}, rec.fn)
		res <- result{ev, err}
	}()
	select {
	case <-rec.first:
	case <-time.After(10 * time.Second):
		t.Fatal("no event seen")
	}
	// Wait has subscribed to progress before it started following the log.
	pub, _ := s.Connect(t)
	for _, off := range []int64{1 << 20, 2 << 20} {
		b, _ := json.Marshal(events.Progress{Digest: layer.Digest, Role: events.RoleLayer, Offset: off, Total: layer.Size})
		if err := pub.Publish(events.ProgressSubject(op), b); err != nil {
			t.Fatal(err)
		}
		if err := pub.Publish(events.ProgressSubject(other), b); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Flush(); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() bool { _, ticks := rec.types(); return len(ticks) == 2 }, "progress ticks")
	publish(t, s, other, events.TypePullCompleted, events.PullAggregate(other), events.PullCompleted{Ref: "x"})
	publish(t, s, op, events.TypeBlobCommitted, events.BlobAggregate(layer.Digest), events.BlobCommitted{Role: events.RoleLayer, Descriptor: layer, Fetched: layer.Size})
	publish(t, s, op, events.TypePullCompleted, events.PullAggregate(op), events.PullCompleted{Ref: "r", Target: layer.Digest, Blobs: 1})

	r := <-res
	if r.err != nil {
		t.Fatalf("Wait: %v", r.err)
	}
	if r.ev.Type != events.TypePullCompleted || r.ev.Operation != op {
		t.Fatalf("terminal = %s of %s", r.ev.Type, r.ev.Operation)
	}
	evs, ticks := rec.types()
	want := []events.Type{events.TypePullRequested, events.TypeDescriptorResolved, events.TypeBlobCommitted, events.TypePullCompleted}
	if len(evs) != len(want) {
		t.Fatalf("events = %v, want %v", evs, want)
	}
	for i := range want {
		if evs[i] != want[i] {
			t.Fatalf("events = %v, want %v", evs, want)
		}
	}
	if len(ticks) != 2 || ticks[0] != 1<<20 || ticks[1] != 2<<20 {
		t.Fatalf("ticks = %v", ticks)
	}
}

func TestWaitFailed(t *testing.T) {
	s := natstest.Start(t)
	c := newClient(t, s)
	const op = "op-fail"
	seq := publish(t, s, op, events.TypePullRequested, events.PullAggregate(op), events.PullRequested{Ref: "r"})
	publish(t, s, op, events.TypePullFailed, events.PullAggregate(op), events.PullFailed{Ref: "r", Code: "not_found", Message: "registry.example/app:1: manifest unknown"})

	ev, err := c.Wait(ctxT(t), api.OpReply{Operation: op, Seq: seq}, nil)
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("err = %v, want not found", err)
	}
	if err.Error() != "registry.example/app:1: manifest unknown" {
		t.Fatalf("message = %q", err.Error())
	}
	if ev == nil || ev.Type != events.TypePullFailed {
		t.Fatalf("terminal = %+v", ev)
	}
}

func TestContentDeleteWait(t *testing.T) {
	s := natstest.Start(t)
	gw, _ := s.Connect(t)
	js := s.JS
	dgst := digest.FromString("blob")
	serve(t, gw, map[string]micro.HandlerFunc{
		api.SubjectContentDelete: func(r micro.Request) {
			var req api.ContentRequest
			_ = json.Unmarshal(r.Data(), &req)
			ev, _ := events.New(events.Meta{Namespace: req.Namespace, Operation: "op-del"}, events.TypeContentDeleteRequested, events.BlobAggregate(req.Digest), events.ContentDeleteRequested{Digest: req.Digest})
			seq, err := sdjs.NewPublisher(js).Publish(context.Background(), ev)
			if err != nil {
				_ = r.Error("internal", err.Error(), nil)
				return
			}
			_ = r.RespondJSON(api.OpReply{Operation: "op-del", Seq: seq})
		},
	})
	c := newClient(t, s)
	op, err := c.ContentDelete(ctxT(t), dgst)
	if err != nil {
		t.Fatal(err)
	}
	publish(t, s, "op-del", events.TypeContentDeleteFailed, events.BlobAggregate(dgst), events.ContentDeleteFailed{Digest: dgst, Code: "failed_precondition", Message: "blob is used by image app:1"})
	_, err = c.Wait(ctxT(t), op, nil)
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || err.Error() != "blob is used by image app:1" {
		t.Fatalf("err = %v", err)
	}
}

func TestWaitStopsWithContext(t *testing.T) {
	s := natstest.Start(t)
	c := newClient(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := c.Wait(ctx, api.OpReply{Operation: "never", Seq: 1}, func(client.Update) {})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
}

// serveBlob stands in for the content read endpoint, serving blobs by digest.
func serveBlob(t *testing.T, s *natstest.Server, blobs map[digest.Digest][]byte) {
	gw, _ := s.Connect(t)
	serve(t, gw, map[string]micro.HandlerFunc{
		api.SubjectContentRead: func(r micro.Request) {
			var req api.ContentReadRequest
			if err := json.Unmarshal(r.Data(), &req); err != nil {
				_ = r.Error("invalid_argument", err.Error(), nil)
				return
			}
			b, ok := blobs[req.Digest]
			if !ok {
				_ = r.Error("not_found", "content "+req.Digest.String()+" not found", nil)
				return
			}
			if req.Offset >= int64(len(b)) {
				_ = r.Respond(nil)
				return
			}
			end := min(req.Offset+req.Length, int64(len(b)))
			_ = r.Respond(b[req.Offset:end])
		},
		api.SubjectContentInfo: func(r micro.Request) {
			var req api.ContentRequest
			_ = json.Unmarshal(r.Data(), &req)
			_ = r.RespondJSON(content.Info{Digest: req.Digest, Size: int64(len(blobs[req.Digest]))})
		},
	})
}

func TestContentReader(t *testing.T) {
	s := natstest.Start(t)
	blob := make([]byte, 2*api.MaxReadChunk+12345)
	_, _ = rand.Read(blob)
	good := digest.FromBytes(blob)
	lying := digest.FromString("something else")
	serveBlob(t, s, map[digest.Digest][]byte{good: blob, lying: []byte("not what the digest says")})
	c := newClient(t, s)

	t.Run("reassembles chunks", func(t *testing.T) {
		rc, err := c.ContentReader(ctxT(t), good)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		got, err := io.ReadAll(rc)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if !bytes.Equal(got, blob) {
			t.Fatalf("got %d bytes, want %d identical", len(got), len(blob))
		}
	})
	t.Run("digest mismatch", func(t *testing.T) {
		rc, _ := c.ContentReader(ctxT(t), lying)
		defer rc.Close()
		if _, err := io.ReadAll(rc); !errors.Is(err, errdefs.ErrDataLoss) {
			t.Fatalf("err = %v, want data loss", err)
		}
	})
	t.Run("not found", func(t *testing.T) {
		rc, _ := c.ContentReader(ctxT(t), digest.FromString("absent"))
		defer rc.Close()
		if _, err := io.ReadAll(rc); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("err = %v, want not found", err)
		}
	})
	t.Run("invalid digest", func(t *testing.T) {
		if _, err := c.ContentReader(ctxT(t), "sha256:nothex"); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Fatalf("err = %v, want invalid argument", err)
		}
	})
}

func TestSnapshots(t *testing.T) {
	s := natstest.Start(t)
	un, _ := s.Connect(t)
	created := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
	top := digest.FromString("top").String()
	var mu sync.Mutex
	var removed []string
	var actor string
	// One node's unpacker endpoints; NATS is real.
	serve(t, un, map[string]micro.HandlerFunc{
		api.SnapshotsSubject("node-1", "list"): func(r micro.Request) {
			mu.Lock()
			actor = r.Headers().Get(client.ActorHeader)
			mu.Unlock()
			_ = r.RespondJSON(api.SnapshotsListReply{Node: "node-1", Snapshotter: "overlay", Snapshots: []api.Snapshot{
				{Key: top, Parent: "", Kind: "committed", Size: 4096, Inodes: 3, Created: created},
			}})
		},
		api.SnapshotsSubject("node-1", "mounts"): func(r micro.Request) {
			var req api.SnapshotRequest
			_ = json.Unmarshal(r.Data(), &req)
			if req.Key != top {
				_ = r.Error("not_found", "snapshot "+req.Key+" not found", nil)
				return
			}
			_ = r.RespondJSON(api.SnapshotMountsReply{
				Mounts:  []api.Mount{{Type: "bind", Source: "/var/lib/stevedore/snapshots/1/fs", Options: []string{"ro", "rbind"}}},
				Command: "mount -t bind -o ro,rbind /var/lib/stevedore/snapshots/1/fs TARGET",
			})
		},
		api.SnapshotsSubject("node-1", "remove"): func(r micro.Request) {
			var req api.SnapshotRequest
			_ = json.Unmarshal(r.Data(), &req)
			switch req.Key {
			case top:
				_ = r.Error("failed_precondition", "snapshot "+top+" has a child: remove it first", nil)
			case "gone":
				_ = r.Error("not_found", "snapshot gone not found", nil)
			default:
				mu.Lock()
				removed = append(removed, req.Key)
				mu.Unlock()
				_ = r.RespondJSON(api.SnapshotRemoveReply{Seq: 42})
			}
		},
	})
	c := newClient(t, s, client.WithActor("alice@box"))

	t.Run("list", func(t *testing.T) {
		r, err := c.SnapshotsList(ctxT(t), "node-1")
		if err != nil {
			t.Fatal(err)
		}
		if r.Node != "node-1" || r.Snapshotter != "overlay" || len(r.Snapshots) != 1 || r.Snapshots[0].Key != top ||
			r.Snapshots[0].Size != 4096 || !r.Snapshots[0].Created.Equal(created) {
			t.Fatalf("list = %+v", r)
		}
		mu.Lock()
		defer mu.Unlock()
		if actor != "alice@box" {
			t.Fatalf("actor %q", actor)
		}
	})
	t.Run("mounts", func(t *testing.T) {
		r, err := c.SnapshotMounts(ctxT(t), "node-1", top)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Mounts) != 1 || r.Mounts[0].Type != "bind" || r.Mounts[0].Options[1] != "rbind" || !strings.HasPrefix(r.Command, "mount -t bind") {
			t.Fatalf("mounts = %+v", r)
		}
		_, err = c.SnapshotMounts(ctxT(t), "node-1", "nope")
		if !errors.Is(err, errdefs.ErrNotFound) || err.Error() != "snapshot nope not found" {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("remove", func(t *testing.T) {
		r, err := c.SnapshotRemove(ctxT(t), "node-1", "sha256:leaf")
		if err != nil || r.Seq != 42 {
			t.Fatalf("remove = %+v, %v", r, err)
		}
		_, err = c.SnapshotRemove(ctxT(t), "node-1", top)
		if !errors.Is(err, errdefs.ErrFailedPrecondition) || err.Error() != "snapshot "+top+" has a child: remove it first" {
			t.Fatalf("err = %v", err)
		}
		if _, err := c.SnapshotRemove(ctxT(t), "node-1", "gone"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("err = %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(removed) != 1 || removed[0] != "sha256:leaf" {
			t.Fatalf("removed %q", removed)
		}
	})
	t.Run("no unpacker", func(t *testing.T) {
		_, err := c.SnapshotsList(ctxT(t), "node-2")
		var nu *client.NoUnpackerError
		if !errors.As(err, &nu) || nu.Node != "node-2" {
			t.Fatalf("err = %v, want a NoUnpackerError for node-2", err)
		}
		if !errors.Is(err, errdefs.ErrUnavailable) || !errors.Is(err, nats.ErrNoResponders) {
			t.Fatalf("err = %v, want unavailable and no responders", err)
		}
		if !strings.Contains(err.Error(), "no unpacker answered for node node-2") {
			t.Fatalf("message %q", err.Error())
		}
	})
	t.Run("invalid arguments", func(t *testing.T) {
		for _, node := range []string{"", "a.b", "a*", "a b"} {
			if _, err := c.SnapshotsList(ctxT(t), node); !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("node %q: err = %v, want invalid argument", node, err)
			}
		}
		if _, err := c.SnapshotMounts(ctxT(t), "node-1", ""); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("empty key: err = %v", err)
		}
		if _, err := c.SnapshotRemove(ctxT(t), "node-1", ""); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("empty key: err = %v", err)
		}
	})
}

func TestWaitUnpack(t *testing.T) {
	s := natstest.Start(t)
	c := newClient(t, s)
	const op, other = "op-unpack", "op-other"
	const ref = "registry.example/app:1"
	layer := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromString("layer"), Size: 1 << 20}
	chainID := digest.FromString("chain")

	seq := publish(t, s, op, events.TypePullRequested, events.PullAggregate(op), events.PullRequested{Ref: ref, Unpack: true})
	publish(t, s, op, events.TypeBlobCommitted, events.BlobAggregate(layer.Digest), events.BlobCommitted{Ref: ref, Role: events.RoleLayer, Descriptor: layer, Unpack: true})
	publish(t, s, other, events.TypeLayerApplied, events.SnapshotAggregate(chainID.String()), events.LayerApplied{Ref: "x", ChainID: chainID, Layer: layer.Digest})
	publish(t, s, op, events.TypeLayerApplied, events.SnapshotAggregate(chainID.String()), events.LayerApplied{Ref: ref, ChainID: chainID, Layer: layer.Digest, Size: 3 << 20})
	publish(t, s, op, events.TypeImageUpdated, events.ImageAggregate(ref), events.ImageUpdated{Name: ref})
	publish(t, s, op, events.TypeUnpackRequested, events.ImageAggregate(ref), events.UnpackRequested{Ref: ref, Layers: []ocispec.Descriptor{layer}})
	publish(t, s, op, events.TypeImageUnpacked, events.ImageAggregate(ref), events.ImageUnpacked{Name: ref, ChainID: chainID, Layers: 1})
	publish(t, s, op, events.TypePullCompleted, events.PullAggregate(op), events.PullCompleted{Ref: ref, Blobs: 1})

	rec := newRecorder()
	last, err := c.Wait(ctxT(t), api.OpReply{Operation: op, Seq: seq}, rec.fn)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if last.Type != events.TypePullCompleted {
		t.Fatalf("terminal = %s", last.Type)
	}
	evs, _ := rec.types()
	want := []events.Type{events.TypePullRequested, events.TypeBlobCommitted, events.TypeLayerApplied, events.TypeImageUpdated,
		events.TypeUnpackRequested, events.TypeImageUnpacked, events.TypePullCompleted}
	if !slices.Equal(evs, want) {
		t.Fatalf("updates = %v, want %v", evs, want)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var la events.LayerApplied
	if err := rec.updates[2].Event.Decode(&la); err != nil || la.Ref != ref || la.Layer != layer.Digest || la.Size != 3<<20 {
		t.Fatalf("layer-applied update = %+v, %v", la, err)
	}
	for _, ty := range []events.Type{events.TypeLayerApplied, events.TypeImageUnpacked, events.TypeUnpackRequested} {
		if done, _ := client.Terminal(&events.Envelope{Type: ty}); done {
			t.Errorf("%s ends the operation", ty)
		}
	}
}
