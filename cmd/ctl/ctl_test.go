package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
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
	"github.com/stevedore/stevedore/pkg/content"
	"github.com/stevedore/stevedore/pkg/events"
	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
)

// ctl runs the command in-process and returns its output.
func ctl(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	err = run(ctx, args, &out, &errb)
	return out.String(), errb.String(), err
}

var (
	created = time.Now().Add(-50 * time.Hour)
	target  = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromString("index"), Size: 1024}
	layer   = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromString("layer"), Size: 3 << 20}
	blob    = []byte(`{"hello":"world"}`)
)

// fakeGateway is a real NATS server with stand-ins for the gateway's
// endpoints and for node-1's unpacker.
type fakeGateway struct {
	*natstest.Server
	mu    sync.Mutex
	pulls []api.PullRequest // as the gateway received them
}

// lastPull returns the last pull request the gateway received.
func (g *fakeGateway) lastPull(t *testing.T) api.PullRequest {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.pulls) == 0 {
		t.Fatal("no pull request reached the gateway")
	}
	return g.pulls[len(g.pulls)-1]
}

// The stand-in unpacker's node and snapshots: a base layer and its child.
const unpackerNode = "node-1"

var (
	baseKey = digest.FromString("chain-base").String()
	topKey  = digest.FromString("chain-top").String()
)

// gateway stands in for the gateway's endpoints on a real NATS server. Its
// pull endpoint appends the events a real pull would to the real log,
// including the unpacker's when the pull unpacks.
func gateway(t *testing.T) *fakeGateway {
	t.Helper()
	s := natstest.Start(t)
	g := &fakeGateway{Server: s}
	nc, js := s.Connect(t)
	pub := sdjs.NewPublisher(js)
	// Every append finishes (its ack received) before the connection closes:
	// ctl may see an event and end the test before its appender has the ack.
	var inflight sync.WaitGroup
	emit := func(ns, op string, typ events.Type, agg events.Aggregate, payload any) uint64 {
		ev, err := events.New(events.Meta{Namespace: ns, Operation: op, Actor: "test", Node: unpackerNode}, typ, agg, payload)
		if err != nil {
			t.Error(err)
			return 0
		}
		seq, err := pub.Publish(context.Background(), ev)
		if err != nil {
			t.Error(err)
		}
		return seq
	}
	handlers := map[string]micro.HandlerFunc{
		api.SubjectImagesList: func(r micro.Request) {
			var req api.ImagesListRequest
			_ = json.Unmarshal(r.Data(), &req)
			if req.Namespace != "default" {
				_ = r.RespondJSON(api.ImagesListReply{})
				return
			}
			_ = r.RespondJSON(api.ImagesListReply{Images: []api.Image{{
				Name: "registry.example/app:1.0", Target: target, Size: 4404019,
				Created: &created, Platform: "linux/amd64", UpdatedAt: time.Now(),
				Unpacked: []string{"node-0", unpackerNode},
			}}})
		},
		api.SubjectImagesRemove: func(r micro.Request) {
			var req api.ImageRemoveRequest
			_ = json.Unmarshal(r.Data(), &req)
			if req.Name != "registry.example/app:1.0" {
				_ = r.Error("not_found", "image "+req.Name+" not found", nil)
				return
			}
			_ = r.RespondJSON(api.OpReply{Operation: "op-rm", Seq: 1})
		},
		api.SubjectPull: func(r micro.Request) {
			var req api.PullRequest
			_ = json.Unmarshal(r.Data(), &req)
			g.mu.Lock()
			g.pulls = append(g.pulls, req)
			g.mu.Unlock()
			op := "op-" + events.EncodeToken(req.Ref)
			ref := "registry.example/" + req.Ref
			seq := emit(req.Namespace, op, events.TypePullRequested, events.PullAggregate(op), events.PullRequested{Ref: ref})
			_ = r.RespondJSON(api.OpReply{Operation: op, Seq: seq, Ref: ref})
			inflight.Add(1)
			go func() {
				defer inflight.Done()
				emit(req.Namespace, op, events.TypeDescriptorResolved, events.BlobAggregate(layer.Digest), events.DescriptorResolved{Ref: ref, Role: events.RoleLayer, Descriptor: layer})
				if req.Ref == "slow:1" {
					return // never ends
				}
				if req.Ref == "missing:1" {
					emit(req.Namespace, op, events.TypePullFailed, events.PullAggregate(op), events.PullFailed{Ref: ref, Code: "not_found", Message: ref + ": manifest unknown"})
					return
				}
				emit(req.Namespace, op, events.TypeBlobCommitted, events.BlobAggregate(layer.Digest), events.BlobCommitted{Ref: ref, Role: events.RoleLayer, Descriptor: layer, Fetched: layer.Size, Unpack: req.Unpack})
				if req.Unpack {
					chainID := digest.Digest(baseKey)
					emit(req.Namespace, op, events.TypeImageUpdated, events.ImageAggregate(ref), events.ImageUpdated{Name: ref, Target: target})
					emit(req.Namespace, op, events.TypeUnpackRequested, events.ImageAggregate(ref), events.UnpackRequested{Ref: ref, Target: target, Layers: []ocispec.Descriptor{layer}})
					emit(req.Namespace, op, events.TypeLayerApplied, events.SnapshotAggregate(baseKey), events.LayerApplied{Ref: ref, ChainID: chainID, Layer: layer.Digest, Size: 9 << 20, Snapshotter: "overlay"})
					emit(req.Namespace, op, events.TypeImageUnpacked, events.ImageAggregate(ref), events.ImageUnpacked{Name: ref, Target: target.Digest, ChainID: chainID, Layers: 1, Snapshotter: "overlay"})
				}
				emit(req.Namespace, op, events.TypePullCompleted, events.PullAggregate(op), events.PullCompleted{Ref: ref, Target: target.Digest, Size: layer.Size, Blobs: 1})
			}()
		},
		api.SubjectContentList: func(r micro.Request) {
			_ = r.RespondJSON(api.ContentListReply{Blobs: []content.Info{{Digest: digest.FromBytes(blob), Size: int64(len(blob)), CreatedAt: created, Labels: map[string]string{"b": "2", "a": "1"}}}})
		},
		api.SubjectContentRead: func(r micro.Request) {
			var req api.ContentReadRequest
			_ = json.Unmarshal(r.Data(), &req)
			if req.Offset >= int64(len(blob)) {
				_ = r.Respond(nil)
				return
			}
			_ = r.Respond(blob[req.Offset:min(int64(len(blob)), req.Offset+4)]) // small chunks
		},
		api.SubjectContentDelete: func(r micro.Request) {
			var req api.ContentRequest
			_ = json.Unmarshal(r.Data(), &req)
			op := "op-del-" + req.Digest.Encoded()[:8]
			seq := emit(req.Namespace, op, events.TypeContentDeleteRequested, events.BlobAggregate(req.Digest), events.ContentDeleteRequested{Digest: req.Digest})
			_ = r.RespondJSON(api.OpReply{Operation: op, Seq: seq})
			if req.Digest == layer.Digest {
				emit(req.Namespace, op, events.TypeContentDeleteFailed, events.BlobAggregate(req.Digest), events.ContentDeleteFailed{Digest: req.Digest, Code: "failed_precondition", Message: "blob is used by image registry.example/app:1.0"})
				return
			}
			emit(req.Namespace, op, events.TypeBlobDeleted, events.BlobAggregate(req.Digest), events.BlobDeleted{Digest: req.Digest})
		},
	}
	// node-1's unpacker, on its own service as the real one is.
	unpacker := map[string]micro.HandlerFunc{
		api.SnapshotsSubject(unpackerNode, "list"): func(r micro.Request) {
			_ = r.RespondJSON(api.SnapshotsListReply{Node: unpackerNode, Snapshotter: "overlay", Snapshots: []api.Snapshot{
				{Key: baseKey, Kind: "committed", Size: 9 << 20, Inodes: 120, Created: created, Labels: map[string]string{"stevedore.io/layer": layer.Digest.String()}},
				{Key: topKey, Parent: baseKey, Kind: "committed", Size: 2048, Inodes: 3, Created: time.Now().Add(-3 * time.Minute)},
			}})
		},
		api.SnapshotsSubject(unpackerNode, "mounts"): func(r micro.Request) {
			var req api.SnapshotRequest
			_ = json.Unmarshal(r.Data(), &req)
			switch req.Key {
			case topKey:
				m := api.Mount{Type: "overlay", Source: "overlay", Options: []string{"ro", "lowerdir=/var/lib/stevedore/snapshots/2/fs:/var/lib/stevedore/snapshots/1/fs"}}
				_ = r.RespondJSON(api.SnapshotMountsReply{Mounts: []api.Mount{m},
					Command: "mount -t overlay -o ro,lowerdir=/var/lib/stevedore/snapshots/2/fs:/var/lib/stevedore/snapshots/1/fs overlay <target>"})
			case baseKey: // mounts only: ctl writes the command
				_ = r.RespondJSON(api.SnapshotMountsReply{Mounts: []api.Mount{{Type: "bind", Source: "/var/lib/stevedore/snapshots/1/fs", Options: []string{"ro", "rbind"}}}})
			default:
				_ = r.Error("not_found", "snapshot "+req.Key+" not found on "+unpackerNode, nil)
			}
		},
		api.SnapshotsSubject(unpackerNode, "remove"): func(r micro.Request) {
			var req api.SnapshotRequest
			_ = json.Unmarshal(r.Data(), &req)
			switch req.Key {
			case topKey:
				_ = r.RespondJSON(api.SnapshotRemoveReply{Seq: 12})
			case baseKey:
				_ = r.Error("failed_precondition", "snapshot "+baseKey+" is the parent of "+topKey+": remove that first", nil)
			default:
				_ = r.Error("not_found", "snapshot "+req.Key+" not found on "+unpackerNode, nil)
			}
		},
	}
	svc, err := micro.AddService(nc, micro.Config{Name: api.ServiceName, Version: api.ServiceVersion})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	usvc, err := micro.AddService(nc, micro.Config{Name: api.SnapshotsService, Version: api.ServiceVersion})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = usvc.Stop() })
	t.Cleanup(inflight.Wait)
	for subj, h := range unpacker {
		if err := usvc.AddEndpoint("ep"+events.EncodeToken(subj), h, micro.WithEndpointSubject(subj)); err != nil {
			t.Fatal(err)
		}
	}
	i := 0
	for subj, h := range handlers {
		i++
		counted := func(r micro.Request) {
			inflight.Add(1) // before the reply, so before the test can end
			defer inflight.Done()
			h(r)
		}
		if err := svc.AddEndpoint("ep"+string(rune('a'+i)), micro.HandlerFunc(counted), micro.WithEndpointSubject(subj)); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return g
}

func TestHelp(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"pull", "images", "snapshots", "content", "ops", "STEVEDORE_NATS", "STEVEDORE_NAMESPACE", "STEVEDORE_NODE", "--node", "--timeout"}},
		{[]string{"pull", "--help"}, []string{"Ctrl-C", "goes on in the system", "rootfs is ready on the node", "--no-unpack", "unpacked", "--platform", "--plain-http", "--quiet", "--format", "Examples:", "ctl pull docker.io/library/alpine"}},
		{[]string{"images", "--help"}, []string{"CREATED", "PLATFORM", "UNPACKED", "--node", "Examples:", "--format"}},
		{[]string{"snapshots", "--help"}, []string{"chainID", "--node", "ls", "mounts", "rm", "Examples:"}},
		{[]string{"snap", "ls", "--help"}, []string{"KEY", "PARENT", "KIND", "SIZE", "CREATED", "--quiet", "--format", "Examples:"}},
		{[]string{"snapshot", "mounts", "--help"}, []string{"mount(8)", "TARGET", "<target>", "--format", "Examples:"}},
		{[]string{"snapshots", "rm", "--help"}, []string{"parent of another snapshot", "container", "KEY...", "Examples:"}},
		{[]string{"image", "ls", "--help"}, []string{"Examples:", "--quiet"}},
		{[]string{"images", "rm", "--help"}, []string{"Examples:", "REF..."}},
		{[]string{"content", "--help"}, []string{"ls", "info", "get", "rm", "active", "Examples:"}},
		{[]string{"content", "rm", "--help"}, []string{"--wait", "Examples:"}},
		{[]string{"ops", "get", "--help"}, []string{"Examples:", "running, completed or failed"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			out, _, err := ctl(t, tt.args...)
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("help lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"pull"}, "pull: missing REF (see `ctl pull --help`)"},
		{[]string{"pull", "a", "b"}, "pull: too many arguments"},
		{[]string{"images", "rm"}, "images rm: missing REF"},
		{[]string{"content", "info"}, "content info: missing DIGEST"},
		{[]string{"images", "--format", "yaml"}, `--format "yaml"`},
		{[]string{"content", "info", "nope"}, `"nope" is not a digest`},
		{[]string{"--bogus"}, "unknown flag: --bogus"},
		{[]string{"pull", "--unpack", "a"}, "unknown flag: --unpack"},
		{[]string{"snapshots", "rm"}, "snapshots rm: missing KEY"},
		{[]string{"snap", "mounts"}, "snapshots mounts: missing KEY"},
		{[]string{"snap", "mounts", "a", "b", "c"}, "snapshots mounts: too many arguments"},
		{[]string{"snapshots", "ls", "--format", "yaml"}, `--format "yaml"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, _, err := ctl(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
			var buf bytes.Buffer
			if code := report(&buf, err); code != 1 || !strings.HasPrefix(buf.String(), "ctl: ") {
				t.Fatalf("report: code %d, output %q", code, buf.String())
			}
		})
	}
}

func TestImages(t *testing.T) {
	s := gateway(t)
	t.Run("json", func(t *testing.T) {
		out, _, err := ctl(t, "--nats", s.URL(), "images", "--format", "json")
		if err != nil {
			t.Fatal(err)
		}
		var imgs []api.Image
		if err := json.Unmarshal([]byte(out), &imgs); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		if len(imgs) != 1 || imgs[0].Name != "registry.example/app:1.0" || imgs[0].Target.Digest != target.Digest ||
			!slices.Equal(imgs[0].Unpacked, []string{"node-0", unpackerNode}) {
			t.Fatalf("images = %+v", imgs)
		}
	})
	t.Run("unpacked column", func(t *testing.T) {
		unpacked := func(t *testing.T, args ...string) string {
			t.Helper()
			out, _, err := ctl(t, append([]string{"--nats", s.URL()}, args...)...)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 2 || !strings.HasSuffix(lines[0], "UNPACKED") {
				t.Fatalf("table:\n%s", out)
			}
			f := strings.Fields(lines[1])
			return f[len(f)-1]
		}
		if got := unpacked(t, "--node", unpackerNode, "images"); got != "yes" {
			t.Errorf("--node %s: UNPACKED %q, want yes", unpackerNode, got)
		}
		if got := unpacked(t, "--node", "node-9", "images"); got != "no" {
			t.Errorf("--node node-9: UNPACKED %q, want no", got)
		}
		t.Setenv(envNode, "node-0")
		if got := unpacked(t, "images"); got != "yes" {
			t.Errorf("%s=node-0: UNPACKED %q, want yes", envNode, got)
		}
	})
	t.Run("json lists no nodes as an empty array", func(t *testing.T) {
		out, err := json.Marshal(imagesJSON([]api.Image{{Name: "x"}}))
		if err != nil || !strings.Contains(string(out), `"unpacked":[]`) || strings.Count(string(out), `"unpacked"`) != 1 {
			t.Fatalf("%s, %v", out, err)
		}
	})
	t.Run("empty namespace gives an empty array", func(t *testing.T) {
		t.Setenv(envNamespace, "other")
		out, _, err := ctl(t, "--nats", s.URL(), "images", "ls", "--format", "json")
		if err != nil || strings.TrimSpace(out) != "[]" {
			t.Fatalf("out %q, err %v", out, err)
		}
	})
	t.Run("table", func(t *testing.T) {
		out, _, err := ctl(t, "--nats", s.URL(), "image", "ls")
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 2 {
			t.Fatalf("table:\n%s", out)
		}
		for _, w := range []string{"REF", "TYPE", "DIGEST", "SIZE", "CREATED", "PLATFORM", "UNPACKED"} {
			if !strings.Contains(lines[0], w) {
				t.Errorf("header %q lacks %q", lines[0], w)
			}
		}
		for _, w := range []string{"registry.example/app:1.0", ocispec.MediaTypeImageIndex, target.Digest.String(), "4.2 MiB", "2 days ago", "linux/amd64"} {
			if !strings.Contains(lines[1], w) {
				t.Errorf("row %q lacks %q", lines[1], w)
			}
		}
	})
	t.Run("quiet", func(t *testing.T) {
		out, _, err := ctl(t, "--nats", s.URL(), "images", "-q")
		if err != nil || out != "registry.example/app:1.0\n" {
			t.Fatalf("out %q, err %v", out, err)
		}
	})
	t.Run("rm", func(t *testing.T) {
		out, _, err := ctl(t, "--nats", s.URL(), "images", "rm", "nope:1", "registry.example/app:1.0")
		if out != "registry.example/app:1.0\n" {
			t.Fatalf("out %q", out)
		}
		if err == nil || err.Error() != "images rm nope:1: image nope:1 not found" {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestNoGateway(t *testing.T) {
	s := natstest.Start(t) // NATS, but nothing serving the API
	_, _, err := ctl(t, "--nats", s.URL(), "images")
	want := "no gateway answered on " + s.URL() + " (is it running? try `make up`)"
	if err == nil || err.Error() != want || !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("err = %v, want %q", err, want)
	}
}

func TestPull(t *testing.T) {
	s := gateway(t)
	t.Run("unpacks by default", func(t *testing.T) {
		out, _, err := ctl(t, "--nats", s.URL(), "pull", "app:1.0")
		if err != nil {
			t.Fatalf("pull: %v", err)
		}
		if req := s.lastPull(t); !req.Unpack || req.Ref != "app:1.0" {
			t.Fatalf("request %+v, want unpack", req)
		}
		want := []string{
			"registry.example/app:1.0: resolved",
			"layer-" + layer.Digest.String() + ": waiting 3.0 MiB",
			"layer-" + layer.Digest.String() + ": done 3.0 MiB",
			"registry.example/app:1.0: unpacking",
			"layer-" + layer.Digest.String() + ": unpacked 3.0 MiB",
			"registry.example/app:1.0: unpacked",
			"unpacked 1/1 layers",
			"elapsed: ",
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != len(want) {
			t.Fatalf("output:\n%s", out)
		}
		for i, w := range want {
			if !strings.HasPrefix(lines[i], w) {
				t.Errorf("line %d %q, want %q", i, lines[i], w)
			}
		}
	})
	t.Run("no-unpack only fetches", func(t *testing.T) {
		out, _, err := ctl(t, "--nats", s.URL(), "pull", "--no-unpack", "app:1.0")
		if err != nil {
			t.Fatalf("pull: %v", err)
		}
		if req := s.lastPull(t); req.Unpack {
			t.Fatalf("request %+v, want no unpack", req)
		}
		want := []string{
			"registry.example/app:1.0: resolved",
			"layer-" + layer.Digest.String() + ": waiting 3.0 MiB",
			"layer-" + layer.Digest.String() + ": done 3.0 MiB",
			"elapsed: ",
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != len(want) {
			t.Fatalf("output:\n%s", out)
		}
		for i, w := range want {
			if !strings.HasPrefix(lines[i], w) {
				t.Errorf("line %d %q, want %q", i, lines[i], w)
			}
		}
	})
	t.Run("json", func(t *testing.T) {
		out, _, err := ctl(t, "--nats", s.URL(), "pull", "--format", "json", "app:1.0")
		if err != nil {
			t.Fatalf("pull: %v", err)
		}
		var o pullOutcome
		if err := json.Unmarshal([]byte(out), &o); err != nil {
			t.Fatalf("not one JSON object: %v\n%s", err, out)
		}
		if o.State != api.OpCompleted || o.Target != target.Digest || o.Ref != "registry.example/app:1.0" || o.Blobs != 1 {
			t.Fatalf("outcome %+v", o)
		}
	})
	t.Run("quiet", func(t *testing.T) {
		out, _, err := ctl(t, "--nats", s.URL(), "pull", "-q", "app:1.0")
		if err != nil || out != "registry.example/app:1.0\n" {
			t.Fatalf("out %q err %v", out, err)
		}
	})
	t.Run("fails", func(t *testing.T) {
		out, _, err := ctl(t, "--nats", s.URL(), "pull", "--format", "json", "missing:1")
		want := "pull missing:1: registry.example/missing:1: manifest unknown"
		if err == nil || err.Error() != want {
			t.Fatalf("err = %v, want %q", err, want)
		}
		var o pullOutcome
		if jerr := json.Unmarshal([]byte(out), &o); jerr != nil || o.State != api.OpFailed || o.Code != "not_found" {
			t.Fatalf("outcome %q (%v)", out, jerr)
		}
		var buf bytes.Buffer
		if code := report(&buf, err); code != 1 || buf.String() != "ctl: "+want+"\n" {
			t.Fatalf("report: %d %q", code, buf.String())
		}
	})
	t.Run("interrupted", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		var out, errb bytes.Buffer
		err := run(ctx, []string{"--nats", s.URL(), "pull", "slow:1"}, &out, &errb)
		op := "op-" + events.EncodeToken("slow:1")
		want := "pull slow:1: stopped waiting; the pull goes on in the system (`ctl ops get " + op + "` shows how it ends)"
		if err == nil || err.Error() != want {
			t.Fatalf("err = %v, want %q", err, want)
		}
		if code := report(&errb, err); code != 130 {
			t.Fatalf("exit code %d, want 130", code)
		}
		if !strings.Contains(out.String(), "layer-"+layer.Digest.String()+": waiting") {
			t.Fatalf("progress before the interrupt not shown:\n%s", out.String())
		}
	})
}

func TestContent(t *testing.T) {
	s := gateway(t)
	d := digest.FromBytes(blob)
	t.Run("get reassembles", func(t *testing.T) {
		out, _, err := ctl(t, "--nats", s.URL(), "content", "get", d.Encoded())
		if err != nil || out != string(blob) {
			t.Fatalf("out %q err %v", out, err)
		}
	})
	t.Run("ls", func(t *testing.T) {
		out, _, err := ctl(t, "--nats", s.URL(), "content", "ls")
		if err != nil || !strings.Contains(out, d.String()) || !strings.Contains(out, "17 B") || !strings.Contains(out, "a=1,b=2") {
			t.Fatalf("out %q err %v", out, err)
		}
	})
	t.Run("rm", func(t *testing.T) {
		out, _, err := ctl(t, "--nats", s.URL(), "content", "rm", d.String(), layer.Digest.String())
		if out != d.String()+"\n" {
			t.Fatalf("out %q", out)
		}
		want := "content rm " + layer.Digest.String() + ": blob is used by image registry.example/app:1.0"
		if err == nil || err.Error() != want {
			t.Fatalf("err = %v, want %q", err, want)
		}
	})
}

func TestHumanDuration(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "Less than a second"}, {time.Second, "1 second"}, {30 * time.Second, "30 seconds"},
		{time.Minute, "About a minute"}, {10 * time.Minute, "10 minutes"}, {time.Hour, "About an hour"},
		{5 * time.Hour, "5 hours"}, {50 * time.Hour, "2 days"}, {20 * 24 * time.Hour, "2 weeks"},
		{90 * 24 * time.Hour, "3 months"}, {3 * 365 * 24 * time.Hour, "3 years"},
	}
	for _, tt := range tests {
		if got := humanDuration(tt.d); got != tt.want {
			t.Errorf("humanDuration(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestSnapshots(t *testing.T) {
	s := gateway(t)
	snap := func(t *testing.T, args ...string) (string, error) {
		t.Helper()
		out, _, err := ctl(t, append([]string{"--nats", s.URL(), "--node", unpackerNode}, args...)...)
		return out, err
	}
	t.Run("ls", func(t *testing.T) {
		out, err := snap(t, "snapshots", "ls")
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 3 {
			t.Fatalf("table:\n%s", out)
		}
		if f := strings.Fields(lines[0]); !slices.Equal(f, []string{"KEY", "PARENT", "KIND", "SIZE", "CREATED"}) {
			t.Fatalf("header %q", lines[0])
		}
		for i, want := range [][]string{
			{baseKey, "-", "committed", "9.0 MiB", "2 days ago"},
			{topKey, baseKey, "committed", "2.0 KiB", "3 minutes ago"},
		} {
			for _, w := range want {
				if !strings.Contains(lines[i+1], w) {
					t.Errorf("row %q lacks %q", lines[i+1], w)
				}
			}
		}
	})
	t.Run("ls quiet and json", func(t *testing.T) {
		out, err := snap(t, "snap", "ls", "-q")
		if err != nil || out != baseKey+"\n"+topKey+"\n" {
			t.Fatalf("out %q err %v", out, err)
		}
		out, err = snap(t, "snapshot", "list", "--format", "json")
		if err != nil {
			t.Fatal(err)
		}
		var snaps []api.Snapshot
		if err := json.Unmarshal([]byte(out), &snaps); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		if len(snaps) != 2 || snaps[1].Parent != baseKey || snaps[0].Inodes != 120 || snaps[0].Labels["stevedore.io/layer"] != layer.Digest.String() {
			t.Fatalf("snapshots %+v", snaps)
		}
	})
	t.Run("node from the environment", func(t *testing.T) {
		t.Setenv(envNode, unpackerNode)
		out, _, err := ctl(t, "--nats", s.URL(), "snapshots", "ls", "-q")
		if err != nil || !strings.Contains(out, topKey) {
			t.Fatalf("out %q err %v", out, err)
		}
	})
	t.Run("mounts", func(t *testing.T) {
		const lower = "lowerdir=/var/lib/stevedore/snapshots/2/fs:/var/lib/stevedore/snapshots/1/fs"
		tests := []struct {
			name string
			args []string
			want string
		}{
			{"the unpacker's command", []string{topKey}, "mount -t overlay -o ro," + lower + " overlay <target>\n"},
			{"with a target", []string{topKey, "/mnt/my root"}, "mount -t overlay -o ro," + lower + " overlay '/mnt/my root'\n"},
			{"built from the mounts", []string{baseKey}, "mount -t bind -o ro,rbind /var/lib/stevedore/snapshots/1/fs <target>\n"},
			{"built, with a target", []string{baseKey, "/mnt"}, "mount -t bind -o ro,rbind /var/lib/stevedore/snapshots/1/fs /mnt\n"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				out, err := snap(t, append([]string{"snapshots", "mounts"}, tt.args...)...)
				if err != nil || out != tt.want {
					t.Fatalf("out %q err %v, want %q", out, err, tt.want)
				}
			})
		}
		out, err := snap(t, "snapshots", "mounts", "--format", "json", topKey)
		if err != nil {
			t.Fatal(err)
		}
		var mounts []api.Mount
		if err := json.Unmarshal([]byte(out), &mounts); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		if len(mounts) != 1 || mounts[0].Type != "overlay" || mounts[0].Options[1] != lower {
			t.Fatalf("mounts %+v", mounts)
		}
		_, err = snap(t, "snapshots", "mounts", "sha256:nope")
		if err == nil || err.Error() != "snapshots mounts sha256:nope: snapshot sha256:nope not found on "+unpackerNode {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("rm", func(t *testing.T) {
		out, err := snap(t, "snap", "rm", baseKey, topKey)
		if out != topKey+"\n" {
			t.Fatalf("out %q", out)
		}
		want := "snapshots rm " + baseKey + ": snapshot " + baseKey + " is the parent of " + topKey + ": remove that first"
		if err == nil || err.Error() != want {
			t.Fatalf("err = %v, want %q", err, want)
		}
		var buf bytes.Buffer
		if code := report(&buf, err); code != 1 || buf.String() != "ctl: "+want+"\n" {
			t.Fatalf("report: %d %q", code, buf.String())
		}
	})
	t.Run("no unpacker on the node", func(t *testing.T) {
		for _, args := range [][]string{{"snapshots", "ls"}, {"snapshots", "rm", topKey, baseKey}} {
			_, _, err := ctl(t, append([]string{"--nats", s.URL(), "--node", "node-9"}, args...)...)
			if err == nil || !strings.Contains(err.Error(), "no unpacker answered for node node-9") || strings.Contains(err.Error(), "gateway") {
				t.Fatalf("%v: err = %v", args, err)
			}
			if strings.Count(err.Error(), "\n") != 0 {
				t.Fatalf("%v: one error per key after the first failed alike: %v", args, err)
			}
		}
	})
	t.Run("bad node name", func(t *testing.T) {
		_, _, err := ctl(t, "--nats", s.URL(), "--node", "a.b", "snapshots", "ls")
		if err == nil || !strings.Contains(err.Error(), `node name "a.b"`) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestMountCommand(t *testing.T) {
	two := api.SnapshotMountsReply{Mounts: []api.Mount{
		{Type: "tmpfs", Source: "tmpfs", Options: []string{"size=1m"}},
		{Source: "/srv/it's here", Options: []string{"bind"}},
	}, Command: "from the unpacker"}
	tests := []struct {
		name, target, want string
		r                  api.SnapshotMountsReply
	}{
		{"the unpacker's command as is", "", "from the unpacker", two},
		{"a target builds every mount", "/mnt", `mount -t tmpfs -o size=1m tmpfs /mnt && mount -o bind '/srv/it'\''s here' /mnt`, two},
		{"no command, no target", "", "mount -t tmpfs -o size=1m tmpfs <target> && mount -o bind '/srv/it'\\''s here' <target>", api.SnapshotMountsReply{Mounts: two.Mounts}},
		{"nothing to mount", "/mnt", "", api.SnapshotMountsReply{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mountCommand(tt.r, tt.target); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}
