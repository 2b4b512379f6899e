package client_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
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
