package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
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

// gateway stands in for the gateway's endpoints on a real NATS server. Its
// pull endpoint appends the events a real pull would to the real log.
func gateway(t *testing.T) *natstest.Server {
	t.Helper()
	s := natstest.Start(t)
	nc, js := s.Connect(t)
	pub := sdjs.NewPublisher(js)
	// Every append finishes (its ack received) before the connection closes:
	// ctl may see an event and end the test before its appender has the ack.
	var inflight sync.WaitGroup
	emit := func(ns, op string, typ events.Type, agg events.Aggregate, payload any) uint64 {
		ev, err := events.New(events.Meta{Namespace: ns, Operation: op, Actor: "test"}, typ, agg, payload)
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
				emit(req.Namespace, op, events.TypeBlobCommitted, events.BlobAggregate(layer.Digest), events.BlobCommitted{Ref: ref, Role: events.RoleLayer, Descriptor: layer, Fetched: layer.Size})
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
	svc, err := micro.AddService(nc, micro.Config{Name: api.ServiceName, Version: api.ServiceVersion})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	t.Cleanup(inflight.Wait)
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
	return s
}

func TestHelp(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"pull", "images", "content", "ops", "STEVEDORE_NATS", "STEVEDORE_NAMESPACE", "--timeout"}},
		{[]string{"pull", "--help"}, []string{"Ctrl-C", "goes on in the system", "--platform", "--plain-http", "--quiet", "--format", "Examples:", "ctl pull docker.io/library/alpine"}},
		{[]string{"images", "--help"}, []string{"CREATED", "PLATFORM", "Examples:", "--format"}},
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
		if len(imgs) != 1 || imgs[0].Name != "registry.example/app:1.0" || imgs[0].Target.Digest != target.Digest {
			t.Fatalf("images = %+v", imgs)
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
		for _, w := range []string{"REF", "TYPE", "DIGEST", "SIZE", "CREATED", "PLATFORM"} {
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
	t.Run("completes", func(t *testing.T) {
		out, _, err := ctl(t, "--nats", s.URL(), "pull", "app:1.0")
		if err != nil {
			t.Fatalf("pull: %v", err)
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
