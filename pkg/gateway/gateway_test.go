package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/rs/zerolog"

	"github.com/stevedore/stevedore/internal/testutil/natstest"
	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/content"
	"github.com/stevedore/stevedore/pkg/content/local"
	"github.com/stevedore/stevedore/pkg/events"
	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
	"github.com/stevedore/stevedore/pkg/view"
)

// syncBuffer is a log sink tests can read while the gateway writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type harness struct {
	t     *testing.T
	srv   *natstest.Server
	nc    *nats.Conn
	pub   *sdjs.Publisher
	store *local.Store
	fs    vfs.FS
	logs  *syncBuffer
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	srv := natstest.Start(t)
	store, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, srv: srv, nc: srv.Conn, pub: sdjs.NewPublisher(srv.JS), store: store, fs: vfs.NewMem(), logs: &syncBuffer{}}
	h.standInWorkers()
	return h
}

// standInWorkers makes the gateway's liveness checks pass: a fetcher
// consumer with a pull waiting (nothing is ever handled) and every node's
// executor and unpacker answering their services.
func (h *harness) standInWorkers() {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.t.Cleanup(cancel)
	cons, err := sdjs.EnsureConsumer(ctx, h.srv.JS, sdjs.ConsumerConfig{
		Durable: events.WorkerDurable("fetcher", "node1"), Filters: []string{events.FilterSubject("", "nothing", "", "")},
		OnFailure: func(context.Context, *events.Envelope, error) error { return nil },
	})
	if err != nil {
		h.t.Fatal(err)
	}
	it, err := cons.Messages()
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(it.Stop)
	go func() { _, _ = it.Next() }() // asks for work; none ever comes
	for _, subj := range []string{"sd.node.*.tasks.logs", "sd.node.*.snapshots.mounts"} {
		sub, err := h.nc.Subscribe(subj, func(m *nats.Msg) { _ = m.Respond([]byte("{}")) })
		if err != nil {
			h.t.Fatal(err)
		}
		h.t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	natstest.Eventually(h.t, 5*time.Second, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumWaiting > 0
	}, "stand-in fetcher did not wait for work")
}

// running is a gateway started by a test.
type running struct {
	gw     *Gateway
	view   *view.View
	cancel context.CancelFunc
	done   chan error
}

// start opens the harness's view and runs a gateway over it.
func (h *harness) start() *running {
	h.t.Helper()
	v, err := view.Open("view", view.WithFS(h.fs))
	if err != nil {
		h.t.Fatal(err)
	}
	nc, js := h.srv.Connect(h.t)
	gw, err := New(Config{
		Conn: nc, JS: js, Publisher: sdjs.NewPublisher(js), View: v, Content: h.store,
		Node: "node1", DefaultPlatform: "linux/amd64",
		Logger: zerolog.New(h.logs).Level(zerolog.DebugLevel),
	})
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{gw: gw, view: v, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- gw.Run(ctx) }()
	h.t.Cleanup(func() { r.stop(h.t) })
	// Serving once every endpoint is subscribed.
	select {
	case <-r.gw.Ready():
	case err := <-r.done:
		r.done <- err // for the cleanup
		h.t.Fatalf("gateway: %v", err)
	case <-time.After(5 * time.Second):
		h.t.Fatal("gateway service did not come up")
	}
	return r
}

// stop ends Run, checks it returned nil, and closes the view. Idempotent.
func (r *running) stop(t *testing.T) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if err := r.view.Close(); err != nil {
		t.Errorf("close view: %v", err)
	}
}

// call sends req (JSON) to subject and returns the reply body, or the micro
// error code and description.
func (h *harness) call(subject string, req any, hdr nats.Header) (body []byte, code, desc string) {
	h.t.Helper()
	var data []byte
	switch r := req.(type) {
	case nil:
	case []byte:
		data = r
	default:
		var err error
		if data, err = json.Marshal(req); err != nil {
			h.t.Fatal(err)
		}
	}
	msg, err := h.nc.RequestMsg(&nats.Msg{Subject: subject, Data: data, Header: hdr}, 10*time.Second)
	if err != nil {
		h.t.Fatalf("request %s: %v", subject, err)
	}
	return msg.Data, msg.Header.Get(micro.ErrorCodeHeader), msg.Header.Get(micro.ErrorHeader)
}

// ok calls and decodes a successful reply into out.
func (h *harness) ok(subject string, req, out any) {
	h.t.Helper()
	body, code, desc := h.call(subject, req, nil)
	if code != "" {
		h.t.Fatalf("%s: error %s: %s", subject, code, desc)
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			h.t.Fatalf("%s: decode reply %q: %v", subject, body, err)
		}
	}
}

// wantErr calls and checks the error code.
func (h *harness) wantErr(subject string, req any, wantCode string) string {
	h.t.Helper()
	_, code, desc := h.call(subject, req, nil)
	if code != wantCode {
		h.t.Fatalf("%s %v: code %q (%s), want %q", subject, req, code, desc, wantCode)
	}
	if desc == "" {
		h.t.Fatalf("%s: error without a description", subject)
	}
	return desc
}

// event returns the event at seq in the log.
func (h *harness) event(seq uint64) *events.Envelope {
	h.t.Helper()
	ctx := context.Background()
	s, err := h.srv.JS.Stream(ctx, events.EventsStream)
	if err != nil {
		h.t.Fatal(err)
	}
	m, err := s.GetMsg(ctx, seq)
	if err != nil {
		h.t.Fatalf("get event %d: %v", seq, err)
	}
	var ev events.Envelope
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		h.t.Fatal(err)
	}
	ev.Seq = seq
	return &ev
}

func (h *harness) lastSeq() uint64 {
	h.t.Helper()
	seq, err := sdjs.LastSeq(context.Background(), h.srv.JS)
	if err != nil {
		h.t.Fatal(err)
	}
	return seq
}

// publish appends an event directly, as a worker would.
func (h *harness) publish(ns, op string, typ events.Type, agg events.Aggregate, payload any) uint64 {
	h.t.Helper()
	ev, err := events.New(events.Meta{Namespace: ns, Operation: op, Actor: "worker", Node: "node1"}, typ, agg, payload)
	if err != nil {
		h.t.Fatal(err)
	}
	seq, err := h.pub.Publish(context.Background(), ev)
	if err != nil {
		h.t.Fatal(err)
	}
	return seq
}

func (h *harness) imageUpdated(ns, name string) uint64 {
	return h.publish(ns, "", events.TypeImageUpdated, events.ImageAggregate(name), events.ImageUpdated{
		Name: name, Size: 1234, Platform: "linux/amd64",
		Target: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString(name), Size: 10},
	})
}

// imageReady records image name as pulled and unpacked on nodes (by
// default the harness's node and node-b), as containers need it.
func (h *harness) imageReady(ns, name string, nodes ...string) {
	h.t.Helper()
	h.imageUpdated(ns, name)
	if len(nodes) == 0 {
		nodes = []string{"node1", "node-b"}
	}
	for _, node := range nodes {
		ev, err := events.New(events.Meta{Namespace: ns, Operation: "op-unpack", Node: node}, events.TypeImageUnpacked,
			events.ImageAggregate(name), events.ImageUnpacked{Name: name, Target: digest.FromString(name), ChainID: digest.FromString("top"), Layers: 1, Snapshotter: "overlay"})
		if err != nil {
			h.t.Fatal(err)
		}
		if _, err := h.pub.Publish(context.Background(), ev); err != nil {
			h.t.Fatal(err)
		}
	}
}

// commit writes data into the content store.
func (h *harness) commit(data string) digest.Digest {
	h.t.Helper()
	ctx := context.Background()
	d := digest.FromString(data)
	w, err := h.store.Writer(ctx, content.WriterOpts{Ref: d.String(), Expected: d, Total: int64(len(data))})
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := w.Write([]byte(data)); err != nil {
		h.t.Fatal(err)
	}
	if err := w.Commit(ctx, int64(len(data)), d, nil); err != nil {
		h.t.Fatal(err)
	}
	return d
}

func TestPull(t *testing.T) {
	h := newHarness(t)
	h.start()

	body, code, desc := h.call(api.SubjectPull, api.PullRequest{Ref: "alpine:3", Platform: "linux/aarch64", Unpack: true},
		nats.Header{ActorHeader: []string{"alice"}})
	if code != "" {
		t.Fatalf("pull: %s: %s", code, desc)
	}
	var rep api.OpReply
	if err := json.Unmarshal(body, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Operation == "" || rep.Seq == 0 || rep.Ref != "docker.io/library/alpine:3" {
		t.Fatalf("reply = %+v", rep)
	}
	ev := h.event(rep.Seq)
	if ev.Type != events.TypePullRequested || ev.Operation != rep.Operation || ev.Aggregate != events.PullAggregate(rep.Operation) ||
		ev.Namespace != events.DefaultNamespace || ev.Actor != "alice" || ev.Node != "node1" {
		t.Fatalf("event = %+v", ev)
	}
	var p events.PullRequested
	if err := ev.Decode(&p); err != nil {
		t.Fatal(err)
	}
	if want := (events.PullRequested{Ref: "docker.io/library/alpine:3", Platform: "linux/arm64", Unpack: true}); p != want {
		t.Fatalf("payload = %+v, want %+v", p, want)
	}

	// Read-your-writes: the operation is in the view when the reply arrives.
	var op api.Operation
	h.ok(api.SubjectOperation, api.OperationRequest{Operation: rep.Operation}, &op)
	if op.ID != rep.Operation || op.Kind != view.OpKindPull || op.State != api.OpRunning || op.Ref != rep.Ref ||
		op.Actor != "alice" || !op.StartedAt.Equal(ev.Time) {
		t.Fatalf("operation = %+v", op)
	}

	// Defaults: platform from the config, anonymous actor, namespace as given.
	var rep2 api.OpReply
	h.ok(api.SubjectPull, api.PullRequest{Namespace: "team-a", Ref: "127.0.0.1:5000/app@" + digest.FromString("x").String()}, &rep2)
	ev2 := h.event(rep2.Seq)
	var p2 events.PullRequested
	if err := ev2.Decode(&p2); err != nil {
		t.Fatal(err)
	}
	if p2.Platform != "linux/amd64" || ev2.Actor != AnonymousActor || ev2.Namespace != "team-a" || rep2.Operation == rep.Operation {
		t.Fatalf("defaults: event %+v payload %+v", ev2, p2)
	}

	// ops.get errors.
	h.wantErr(api.SubjectOperation, api.OperationRequest{Operation: "nope"}, "not_found")
	h.wantErr(api.SubjectOperation, api.OperationRequest{}, "invalid_argument")

	// Failure events end the operation.
	h.publish("default", rep.Operation, events.TypePullFailed, events.PullAggregate(rep.Operation),
		events.PullFailed{Ref: rep.Ref, Code: "unauthenticated", Message: "the registry refused the credentials"})
	natstest.Eventually(t, 5*time.Second, func() bool {
		h.ok(api.SubjectOperation, api.OperationRequest{Operation: rep.Operation}, &op)
		return op.State == api.OpFailed
	}, "operation never failed")
	if op.Code != "unauthenticated" || op.Message != "the registry refused the credentials" || op.EndedAt.IsZero() {
		t.Fatalf("failed operation = %+v", op)
	}
}

func TestPullInvalid(t *testing.T) {
	h := newHarness(t)
	h.start()
	before := h.lastSeq()
	for _, tc := range []struct {
		name string
		req  any
		hdr  nats.Header
		want string
	}{
		{name: "empty ref", req: api.PullRequest{}, want: "invalid_argument"},
		{name: "ref with scheme", req: api.PullRequest{Ref: "https://r.example/app:1"}, want: "invalid_argument"},
		{name: "upper-case repository", req: api.PullRequest{Ref: "r.example/App:1"}, want: "invalid_argument"},
		{name: "bad digest", req: api.PullRequest{Ref: "app@sha256:zz"}, want: "invalid_argument"},
		{name: "bad platform", req: api.PullRequest{Ref: "app:1", Platform: "linux/no-such-arch"}, want: "invalid_argument"},
		{name: "too many platform parts", req: api.PullRequest{Ref: "app:1", Platform: "linux/arm/v7/x"}, want: "invalid_argument"},
		{name: "bad namespace", req: api.PullRequest{Namespace: "Bad NS", Ref: "app:1"}, want: "invalid_argument"},
		{name: "namespace with dot", req: api.PullRequest{Namespace: "a.b", Ref: "app:1"}, want: "invalid_argument"},
		{name: "not json", req: []byte("{nope"), want: "invalid_argument"},
		{name: "control chars in actor", req: api.PullRequest{Ref: "app:1"}, hdr: nats.Header{ActorHeader: []string{"a\x01b"}}, want: "invalid_argument"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, code, desc := h.call(api.SubjectPull, tc.req, tc.hdr)
			if code != tc.want || desc == "" {
				t.Fatalf("code %q desc %q, want %q", code, desc, tc.want)
			}
			t.Logf("%s: %s", code, desc)
		})
	}
	if got := h.lastSeq(); got != before {
		t.Fatalf("invalid requests appended events: last seq %d -> %d", before, got)
	}
}

func TestImages(t *testing.T) {
	h := newHarness(t)
	h.start()
	var list api.ImagesListReply
	h.ok(api.SubjectImagesList, nil, &list)
	if list.Images == nil || len(list.Images) != 0 {
		t.Fatalf("empty list = %#v", list)
	}

	h.imageUpdated("default", "docker.io/library/busybox:latest")
	h.imageUpdated("default", "docker.io/library/alpine:3")
	h.imageUpdated("team-a", "r.example/app:1")
	// Reads catch up with the log, so a list right after the appends sees them.
	h.ok(api.SubjectImagesList, api.ImagesListRequest{}, &list)
	if len(list.Images) != 2 || list.Images[0].Name != "docker.io/library/alpine:3" || list.Images[1].Name != "docker.io/library/busybox:latest" {
		t.Fatalf("images = %+v", list.Images)
	}
	if im := list.Images[0]; im.Size != 1234 || im.Target.Digest != digest.FromString(im.Name) || im.UpdatedAt.IsZero() {
		t.Fatalf("image = %+v", im)
	}
	h.ok(api.SubjectImagesList, api.ImagesListRequest{Namespace: "team-a"}, &list)
	if len(list.Images) != 1 || list.Images[0].Name != "r.example/app:1" {
		t.Fatalf("team-a images = %+v", list.Images)
	}
	h.wantErr(api.SubjectImagesList, api.ImagesListRequest{Namespace: "NO"}, "invalid_argument")

	// Remove by a short name; the list right after the reply no longer has it.
	var rep api.OpReply
	body, code, desc := h.call(api.SubjectImagesRemove, api.ImageRemoveRequest{Name: "alpine:3"}, nats.Header{ActorHeader: []string{"bob"}})
	if code != "" {
		t.Fatalf("remove: %s %s", code, desc)
	}
	if err := json.Unmarshal(body, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Ref != "docker.io/library/alpine:3" || rep.Operation == "" {
		t.Fatalf("remove reply = %+v", rep)
	}
	h.ok(api.SubjectImagesList, nil, &list)
	if len(list.Images) != 1 || list.Images[0].Name != "docker.io/library/busybox:latest" {
		t.Fatalf("after remove: %+v", list.Images)
	}
	ev := h.event(rep.Seq)
	var del events.ImageDeleted
	if err := ev.Decode(&del); err != nil {
		t.Fatal(err)
	}
	if ev.Type != events.TypeImageDeleted || del.Name != rep.Ref || ev.Aggregate != events.ImageAggregate(rep.Ref) || ev.Actor != "bob" {
		t.Fatalf("event = %+v %+v", ev, del)
	}
	var op api.Operation
	h.ok(api.SubjectOperation, api.OperationRequest{Operation: rep.Operation}, &op)
	if op.Kind != view.OpKindImagesRemove || op.State != api.OpCompleted || op.Actor != "bob" {
		t.Fatalf("op = %+v", op)
	}

	desc = h.wantErr(api.SubjectImagesRemove, api.ImageRemoveRequest{Name: "alpine:3"}, "not_found")
	if !strings.Contains(desc, "alpine:3") {
		t.Fatalf("description %q does not name the image", desc)
	}
	h.wantErr(api.SubjectImagesRemove, api.ImageRemoveRequest{}, "invalid_argument")
	h.wantErr(api.SubjectImagesRemove, api.ImageRemoveRequest{Namespace: "team-a", Name: "docker.io/library/busybox:latest"}, "not_found")
}

func TestContent(t *testing.T) {
	h := newHarness(t)
	h.start()
	ctx := context.Background()
	big := strings.Repeat("0123456789", api.MaxReadChunk/10+100) // more than one chunk
	d1 := h.commit("hello, world")
	d2 := h.commit(big)

	var list api.ContentListReply
	h.ok(api.SubjectContentList, nil, &list)
	if len(list.Blobs) != 2 || list.Blobs[0].Digest > list.Blobs[1].Digest {
		t.Fatalf("blobs = %+v", list.Blobs)
	}
	var info content.Info
	h.ok(api.SubjectContentInfo, api.ContentRequest{Digest: d1}, &info)
	if info.Digest != d1 || info.Size != 12 {
		t.Fatalf("info = %+v", info)
	}
	h.wantErr(api.SubjectContentInfo, api.ContentRequest{Digest: digest.FromString("absent")}, "not_found")
	h.wantErr(api.SubjectContentInfo, api.ContentRequest{Digest: "sha256:nothex"}, "invalid_argument")
	h.wantErr(api.SubjectContentInfo, api.ContentRequest{}, "invalid_argument")

	// Reads.
	read := func(d digest.Digest, off, n int64) string {
		t.Helper()
		body, code, desc := h.call(api.SubjectContentRead, api.ContentReadRequest{Digest: d, Offset: off, Length: n}, nil)
		if code != "" {
			t.Fatalf("read: %s %s", code, desc)
		}
		return string(body)
	}
	if got := read(d1, 7, 5); got != "world" {
		t.Fatalf("read = %q", got)
	}
	if got := read(d1, 7, 0); got != "world" {
		t.Fatalf("read to end = %q", got)
	}
	if got := read(d1, 12, 10); got != "" {
		t.Fatalf("read at end = %q", got)
	}
	var whole strings.Builder
	for off := int64(0); ; {
		chunk := read(d2, off, 1<<30)
		if chunk == "" {
			break
		}
		if len(chunk) > api.MaxReadChunk {
			t.Fatalf("chunk of %d bytes exceeds MaxReadChunk", len(chunk))
		}
		whole.WriteString(chunk)
		off += int64(len(chunk))
	}
	if whole.String() != big {
		t.Fatalf("chunked read returned %d bytes, want %d", whole.Len(), len(big))
	}
	h.wantErr(api.SubjectContentRead, api.ContentReadRequest{Digest: digest.FromString("absent")}, "not_found")
	h.wantErr(api.SubjectContentRead, api.ContentReadRequest{Digest: d1, Offset: -1}, "invalid_argument")

	// Active ingests.
	var active api.ContentActiveReply
	h.ok(api.SubjectContentActive, nil, &active)
	if active.Active == nil || len(active.Active) != 0 {
		t.Fatalf("active = %#v", active)
	}
	pd := digest.FromString("partial data")
	w, err := h.store.Writer(ctx, content.WriterOpts{Ref: pd.String(), Expected: pd, Total: 12})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("partial")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	h.ok(api.SubjectContentActive, nil, &active)
	if len(active.Active) != 1 || active.Active[0].Ref != pd.String() || active.Active[0].Offset != 7 || active.Active[0].Total != 12 {
		t.Fatalf("active = %+v", active.Active)
	}

	// Delete is requested, not performed: the fetcher removes the blob.
	h.wantErr(api.SubjectContentDelete, api.ContentRequest{Digest: digest.FromString("absent")}, "not_found")
	h.wantErr(api.SubjectContentDelete, api.ContentRequest{Namespace: "A B", Digest: d1}, "invalid_argument")
	var rep api.OpReply
	h.ok(api.SubjectContentDelete, api.ContentRequest{Digest: d1}, &rep)
	ev := h.event(rep.Seq)
	var req events.ContentDeleteRequested
	if err := ev.Decode(&req); err != nil {
		t.Fatal(err)
	}
	if ev.Type != events.TypeContentDeleteRequested || req.Digest != d1 || ev.Aggregate != events.BlobAggregate(d1) || ev.Operation != rep.Operation {
		t.Fatalf("event = %+v %+v", ev, req)
	}
	var op api.Operation
	h.ok(api.SubjectOperation, api.OperationRequest{Operation: rep.Operation}, &op)
	if op.Kind != view.OpKindContentDelete || op.State != api.OpRunning || op.Ref != d1.String() {
		t.Fatalf("op = %+v", op)
	}
	h.publish("default", rep.Operation, events.TypeBlobDeleted, events.BlobAggregate(d1), events.BlobDeleted{Digest: d1})
	h.ok(api.SubjectOperation, api.OperationRequest{Operation: rep.Operation}, &op)
	if op.State != api.OpCompleted {
		t.Fatalf("op after blob-deleted = %+v", op)
	}
}

// TestRestartResumes checks that a restarted gateway resumes from its
// watermark and that its view equals one rebuilt from the whole log.
func TestRestartResumes(t *testing.T) {
	h := newHarness(t)
	g1 := h.start()
	var ops []string
	for i := range 5 {
		var rep api.OpReply
		h.ok(api.SubjectPull, api.PullRequest{Ref: fmt.Sprintf("app:%d", i)}, &rep)
		ops = append(ops, rep.Operation)
		h.imageUpdated("default", fmt.Sprintf("docker.io/library/app:%d", i))
		h.publish("default", rep.Operation, events.TypePullCompleted, events.PullAggregate(rep.Operation), events.PullCompleted{Ref: rep.Ref})
	}
	h.ok(api.SubjectImagesRemove, api.ImageRemoveRequest{Name: "app:0"}, nil)
	last := h.lastSeq()
	natstest.Eventually(t, 5*time.Second, func() bool { return g1.view.AppliedSeq() == last }, "view did not catch up")
	g1.stop(t)

	// Events appended while no gateway runs.
	for i := range 3 {
		h.publish("default", ops[i], events.TypePullFailed, events.PullAggregate(ops[i]), events.PullFailed{Code: "internal", Message: "late"})
		h.imageUpdated("team-a", fmt.Sprintf("r.example/late:%d", i))
	}
	last2 := h.lastSeq()

	g2 := h.start()
	// The projection logs where it starts; it may do so just after the
	// service answers.
	natstest.Eventually(t, 5*time.Second, func() bool {
		return strings.Contains(h.logs.String(), fmt.Sprintf(`"from":%d`, last+1))
	}, "restarted gateway did not resume from %d; logs:\n%s", last+1, h.logs.String())
	natstest.Eventually(t, 5*time.Second, func() bool { return g2.view.AppliedSeq() == last2 }, "restarted view did not catch up")
	var list api.ImagesListReply
	h.ok(api.SubjectImagesList, api.ImagesListRequest{Namespace: "team-a"}, &list)
	if len(list.Images) != 3 {
		t.Fatalf("team-a images = %+v", list.Images)
	}
	var op api.Operation
	h.ok(api.SubjectOperation, api.OperationRequest{Operation: ops[0]}, &op)
	if op.State != api.OpCompleted {
		t.Fatalf("completed op changed by a later failure: %+v", op)
	}

	// Rebuild from zero and compare byte for byte.
	fresh, err := view.Open("fresh", view.InMemory())
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		errc <- sdjs.Follow(ctx, h.srv.JS, sdjs.FollowConfig{}, func(ev *events.Envelope) error {
			if err := fresh.Apply(ev); err != nil {
				return err
			}
			if ev.Seq >= last2 {
				cancel()
			}
			return nil
		})
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	var a, b bytes.Buffer
	if err := g2.view.Dump(&a); err != nil {
		t.Fatal(err)
	}
	if err := fresh.Dump(&b); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatalf("live view differs from rebuilt view:\nlive:\n%s\nrebuilt:\n%s", a.String(), b.String())
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("New with an empty config succeeded")
	}
}

// TestUnreadableMessageSkipped checks that a message in the log that is not
// an event does not stall the projection.
func TestUnreadableMessageSkipped(t *testing.T) {
	h := newHarness(t)
	g := h.start()
	if _, err := h.srv.JS.Publish(context.Background(), "sd.evt.default.junk.x.junk.-", []byte("not json")); err != nil {
		t.Fatal(err)
	}
	h.imageUpdated("default", "r.example/after:1")
	last := h.lastSeq()
	natstest.Eventually(t, 10*time.Second, func() bool { return g.view.AppliedSeq() == last }, "projection stalled on an unreadable message")
	var list api.ImagesListReply
	h.ok(api.SubjectImagesList, nil, &list)
	if len(list.Images) != 1 {
		t.Fatalf("images = %+v", list.Images)
	}
}

// TestServiceInfo checks the micro service identity and queue group.
func TestServiceInfo(t *testing.T) {
	h := newHarness(t)
	h.start()
	// Endpoints are added one by one after the service answers pings.
	var info micro.Info
	natstest.Eventually(t, 5*time.Second, func() bool {
		msg, err := h.nc.Request("$SRV.INFO."+api.ServiceName, nil, 5*time.Second)
		return err == nil && json.Unmarshal(msg.Data, &info) == nil && len(info.Endpoints) == 17
	}, "service info lists 17 endpoints")
	if info.Name != api.ServiceName || info.Version != api.ServiceVersion || len(info.Endpoints) != 17 {
		t.Fatalf("info = %+v", info)
	}
	for _, ep := range info.Endpoints {
		if ep.QueueGroup != QueueGroup || !strings.HasPrefix(ep.Subject, "sd.api.") {
			t.Fatalf("endpoint = %+v", ep)
		}
	}
}

// The images list says where each image is unpacked, from the log.
func TestImagesUnpacked(t *testing.T) {
	h := newHarness(t)
	h.start()
	const name = "docker.io/library/busybox:latest"
	h.imageUpdated("default", name)
	target := digest.FromString(name)
	chainID := digest.FromString("top")
	unpackedOn := func(node string) {
		ev, err := events.New(events.Meta{Namespace: "default", Operation: "op1", Node: node}, events.TypeImageUnpacked,
			events.ImageAggregate(name), events.ImageUnpacked{Name: name, Target: target, ChainID: chainID, Layers: 1, Snapshotter: "overlay"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.pub.Publish(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	list := func() []string {
		var l api.ImagesListReply
		h.ok(api.SubjectImagesList, nil, &l)
		if len(l.Images) != 1 {
			t.Fatalf("images = %+v", l.Images)
		}
		return l.Images[0].Unpacked
	}
	unpackedOn("node-b")
	unpackedOn("node-a")
	if got := list(); fmt.Sprint(got) != "[node-a node-b]" {
		t.Fatalf("unpacked on %q", got)
	}
	ev, err := events.New(events.Meta{Namespace: "default", Node: "node-b"}, events.TypeSnapshotRemoved,
		events.SnapshotAggregate(chainID.String()), events.SnapshotRemoved{Key: chainID.String(), Snapshotter: "overlay"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.pub.Publish(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	if got := list(); fmt.Sprint(got) != "[node-a]" {
		t.Fatalf("after removing node-b's top snapshot: unpacked on %q", got)
	}
}

// TestRequestsWithoutWorkersFailAtOnce checks that a pull or a container
// nobody would take up is refused with what is missing, not left waiting.
func TestRequestsWithoutWorkersFailAtOnce(t *testing.T) {
	srv := natstest.Start(t)
	store, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, srv: srv, nc: srv.Conn, pub: sdjs.NewPublisher(srv.JS), store: store, fs: vfs.NewMem(), logs: &syncBuffer{}}
	h.start()
	_, code, desc := h.call(api.SubjectPull, api.PullRequest{Ref: "registry.example/app:1"}, nil)
	if code != "unavailable" || !strings.Contains(desc, "no fetcher") {
		t.Fatalf("pull without fetchers: %s %q", code, desc)
	}
}
