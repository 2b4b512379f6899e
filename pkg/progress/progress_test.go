package progress_test

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore/stevedore/pkg/client"
	"github.com/stevedore/stevedore/pkg/events"
	"github.com/stevedore/stevedore/pkg/progress"
)

// clock is a manual clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

const ref = "registry.example/app:1.0"

var (
	index    = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromString("index"), Size: 1024}
	manifest = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("manifest"), Size: 2048}
	config   = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromString("config"), Size: 512}
	layer1   = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromString("layer1"), Size: 4 << 20}
	layer2   = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromString("layer2"), Size: 3 << 20}
)

func ev(t *testing.T, typ events.Type, payload any) client.Update {
	t.Helper()
	e, err := events.New(events.Meta{Namespace: "default", Operation: "op"}, typ, events.PullAggregate("op"), payload)
	if err != nil {
		t.Fatal(err)
	}
	return client.Update{Event: e}
}

func resolved(t *testing.T, role string, d ocispec.Descriptor) client.Update {
	return ev(t, events.TypeDescriptorResolved, events.DescriptorResolved{Ref: ref, Role: role, Descriptor: d})
}

func committed(t *testing.T, role string, d ocispec.Descriptor, existing bool) client.Update {
	return ev(t, events.TypeBlobCommitted, events.BlobCommitted{Ref: ref, Role: role, Descriptor: d, Existing: existing})
}

func tick(d ocispec.Descriptor, role string, off int64) client.Update {
	return client.Update{Progress: &events.Progress{Digest: d.Digest, Role: role, Offset: off, Total: d.Size}}
}

// pull feeds a whole pull to r, advancing the clock between steps.
func pull(t *testing.T, r *progress.Renderer, c *clock) {
	steps := []client.Update{
		ev(t, events.TypePullRequested, events.PullRequested{Ref: ref}),
		resolved(t, events.RoleIndex, index),
		committed(t, events.RoleIndex, index, false),
		resolved(t, events.RoleManifest, manifest),
		committed(t, events.RoleManifest, manifest, false),
		resolved(t, events.RoleConfig, config),
		resolved(t, events.RoleLayer, layer1),
		resolved(t, events.RoleLayer, layer2),
		committed(t, events.RoleConfig, config, true),
		tick(layer1, events.RoleLayer, 1<<20),
		tick(layer1, events.RoleLayer, 2<<20),
		committed(t, events.RoleLayer, layer2, true),
		committed(t, events.RoleLayer, layer1, false),
		tick(layer1, events.RoleLayer, 3<<20), // late: must not undo "done"
		ev(t, events.TypePullCompleted, events.PullCompleted{Ref: ref}),
	}
	for _, u := range steps {
		r.Update(u)
		c.advance(200 * time.Millisecond)
	}
}

func TestPlainLines(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	var out bytes.Buffer
	r := progress.New(&out, progress.Config{Now: c.now})
	pull(t, r, c)
	if err := r.Finish(); err != nil {
		t.Fatal(err)
	}
	want := []string{
		ref + ": resolved",
		"index-" + index.Digest.String() + ": waiting 1.0 KiB",
		"index-" + index.Digest.String() + ": done 1.0 KiB",
		"manifest-" + manifest.Digest.String() + ": waiting 2.0 KiB",
		"manifest-" + manifest.Digest.String() + ": done 2.0 KiB",
		"config-" + config.Digest.String() + ": waiting 512 B",
		"layer-" + layer1.Digest.String() + ": waiting 4.0 MiB",
		"layer-" + layer2.Digest.String() + ": waiting 3.0 MiB",
		"config-" + config.Digest.String() + ": exists 512 B",
		"layer-" + layer1.Digest.String() + ": downloading 1.0 MiB/4.0 MiB",
		"layer-" + layer2.Digest.String() + ": exists 3.0 MiB",
		"layer-" + layer1.Digest.String() + ": done 4.0 MiB",
		// 15 steps of 200ms; fetched: index + manifest + layer1.
		"elapsed: 3.0 s  total: 4.0 MiB (1.3 MiB/s)",
	}
	got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("plain output:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if strings.Contains(out.String(), "\x1b") {
		t.Fatal("plain output contains escape sequences")
	}
}

var ansi = regexp.MustCompile(`\x1b\[[0-9]*[A-Za-z]`)

// frames splits TTY output into frames of plain lines.
func frames(s string) [][]string {
	var fs [][]string
	for _, f := range strings.Split(s, "\x1b[J") {
		if f == "" {
			continue
		}
		f = strings.ReplaceAll(ansi.ReplaceAllString(f, ""), "\r", "")
		fs = append(fs, strings.Split(strings.TrimSuffix(f, "\n"), "\n"))
	}
	return fs
}

func TestTTYFrame(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	var out bytes.Buffer
	r := progress.New(&out, progress.Config{Ref: ref, TTY: true, Width: 160, Now: c.now})
	for _, u := range []client.Update{
		resolved(t, events.RoleManifest, manifest),
		committed(t, events.RoleManifest, manifest, false),
		resolved(t, events.RoleConfig, config),
		resolved(t, events.RoleLayer, layer1),
		resolved(t, events.RoleLayer, layer2),
		committed(t, events.RoleConfig, config, true),
		tick(layer1, events.RoleLayer, 1<<20),
	} {
		r.Update(u) // the clock stands still: one frame at most
	}
	if n := len(frames(out.String())); n != 1 {
		t.Fatalf("%d frames drawn without the clock moving, want 1", n)
	}
	c.advance(2100 * time.Millisecond)
	r.Tick()
	fs := frames(out.String())
	if len(fs) != 2 {
		t.Fatalf("%d frames after Tick, want 2", len(fs))
	}
	if !strings.Contains(out.String(), "\x1b[3A") {
		t.Fatalf("second frame does not move the cursor up over the first 3 lines: %q", out.String())
	}
	f := fs[1]
	checks := []struct {
		line int
		want []string
	}{
		{0, []string{ref + ":", "resolved", "|" + strings.Repeat("+", 40) + "|"}},
		{1, []string{"manifest-sha256:", "done", "|" + strings.Repeat("+", 40) + "|", "2.0 KiB"}},
		{2, []string{"config-sha256:", "exists", "512 B"}},
		{3, []string{"layer-" + layer1.Digest.String() + ":", "downloading", "|" + strings.Repeat("+", 10) + strings.Repeat("-", 30) + "|", "1.0 MiB/4.0 MiB"}},
		{4, []string{"layer-" + layer2.Digest.String() + ":", "waiting", "|" + strings.Repeat("-", 40) + "|", "3.0 MiB"}},
		{5, []string{"elapsed: 2.1 s", "total: 1.0 MiB (488.6 KiB/s)"}},
	}
	if len(f) != 6 {
		t.Fatalf("frame has %d lines, want 6:\n%s", len(f), strings.Join(f, "\n"))
	}
	for _, ck := range checks {
		for _, w := range ck.want {
			if !strings.Contains(f[ck.line], w) {
				t.Errorf("line %d %q lacks %q", ck.line, f[ck.line], w)
			}
		}
	}
	// Columns line up: every state starts at the same column.
	col := strings.Index(f[1], "done")
	for i, st := range map[int]string{0: "resolved", 2: "exists", 3: "downloading", 4: "waiting"} {
		if strings.Index(f[i], st) != col {
			t.Errorf("state %q of line %d at column %d, want %d", st, i, strings.Index(f[i], st), col)
		}
	}

	r.Update(committed(t, events.RoleLayer, layer1, false))
	c.advance(100 * time.Millisecond)
	r.Update(committed(t, events.RoleLayer, layer2, false))
	if err := r.Finish(); err != nil {
		t.Fatal(err)
	}
	fs = frames(out.String())
	last := fs[len(fs)-1]
	if !strings.Contains(last[3], "done") || !strings.Contains(last[4], "done") {
		t.Fatalf("final frame:\n%s", strings.Join(last, "\n"))
	}
	if want := "elapsed: 2.2 s  total: 7.0 MiB (3.2 MiB/s)"; last[5] != want {
		t.Fatalf("footer %q, want %q", last[5], want)
	}
}

func TestTTYFitsWidth(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	var out bytes.Buffer
	r := progress.New(&out, progress.Config{Ref: ref, TTY: true, Width: 80, Now: c.now})
	r.Update(resolved(t, events.RoleLayer, layer1))
	r.Update(tick(layer1, events.RoleLayer, 2<<20))
	if err := r.Finish(); err != nil {
		t.Fatal(err)
	}
	fs := frames(out.String())
	for _, l := range fs[len(fs)-1] {
		if len(l) > 80 {
			t.Errorf("line of %d columns: %q", len(l), l)
		}
	}
	l := fs[len(fs)-1][1]
	for _, w := range []string{"layer-sha256:" + layer1.Digest.Encoded()[:8], "...:", "downloading", "+-", "2.0 MiB/4.0 MiB"} {
		if !strings.Contains(l, w) {
			t.Errorf("line %q lacks %q", l, w)
		}
	}
}

func TestFailedBlob(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	var out bytes.Buffer
	r := progress.New(&out, progress.Config{Ref: ref, Now: c.now})
	r.Update(resolved(t, events.RoleLayer, layer1))
	r.Update(ev(t, events.TypePullFailed, events.PullFailed{Ref: ref, Code: "data_loss", Message: "digest mismatch", Digest: layer1.Digest}))
	_ = r.Finish()
	if !strings.Contains(out.String(), "layer-"+layer1.Digest.String()+": failed\n") {
		t.Fatalf("output:\n%s", out.String())
	}
}

func TestBytes(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1536, "1.5 KiB"},
		{4 << 20, "4.0 MiB"}, {1258291, "1.2 MiB"}, {5 << 30, "5.0 GiB"},
	}
	for _, tt := range tests {
		if got := progress.Bytes(tt.n); got != tt.want {
			t.Errorf("Bytes(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

func applied(t *testing.T, d ocispec.Descriptor, index int, existing bool) client.Update {
	return ev(t, events.TypeLayerApplied, events.LayerApplied{
		Ref: ref, Layer: d.Digest, ChainID: digest.FromString("chain-" + d.Digest.String()), Index: index, Size: 2 * d.Size, Existing: existing,
	})
}

func TestPlainLinesUnpack(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	var out bytes.Buffer
	r := progress.New(&out, progress.Config{Now: c.now})
	for _, u := range []client.Update{
		ev(t, events.TypePullRequested, events.PullRequested{Ref: ref, Unpack: true}),
		resolved(t, events.RoleManifest, manifest),
		committed(t, events.RoleManifest, manifest, false),
		resolved(t, events.RoleConfig, config),
		resolved(t, events.RoleLayer, layer1),
		resolved(t, events.RoleLayer, layer2),
		committed(t, events.RoleConfig, config, false), // not a layer: nothing to unpack
		tick(layer1, events.RoleLayer, 1<<20),
		committed(t, events.RoleLayer, layer2, true),
		applied(t, layer2, 1, true), // its snapshot was there already
		committed(t, events.RoleLayer, layer1, false),
		applied(t, layer1, 0, false),
		tick(layer1, events.RoleLayer, 3<<20), // late: must not undo "unpacked"
		ev(t, events.TypeImageUpdated, events.ImageUpdated{Name: ref}),
		ev(t, events.TypeImageUnpacked, events.ImageUnpacked{Name: ref, Layers: 2}),
		ev(t, events.TypePullCompleted, events.PullCompleted{Ref: ref}),
	} {
		r.Update(u)
		c.advance(250 * time.Millisecond)
	}
	if err := r.Finish(); err != nil {
		t.Fatal(err)
	}
	l1, l2 := "layer-"+layer1.Digest.String(), "layer-"+layer2.Digest.String()
	want := []string{
		ref + ": resolved",
		"manifest-" + manifest.Digest.String() + ": waiting 2.0 KiB",
		"manifest-" + manifest.Digest.String() + ": done 2.0 KiB",
		"config-" + config.Digest.String() + ": waiting 512 B",
		l1 + ": waiting 4.0 MiB",
		l2 + ": waiting 3.0 MiB",
		"config-" + config.Digest.String() + ": done 512 B",
		l1 + ": downloading 1.0 MiB/4.0 MiB",
		l2 + ": exists 3.0 MiB",
		ref + ": unpacking",
		l2 + ": unpacked 3.0 MiB",
		l1 + ": done 4.0 MiB",
		l1 + ": unpacked 4.0 MiB",
		ref + ": unpacked",
		"unpacked 2/2 layers",
		// 16 steps of 250ms; fetched: manifest + config + layer1, not layer2.
		"elapsed: 4.0 s  total: 4.0 MiB (1.0 MiB/s)",
	}
	got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("plain output:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestTTYFrameUnpack(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	var out bytes.Buffer
	r := progress.New(&out, progress.Config{Ref: ref, TTY: true, Width: 160, Now: c.now, Unpack: true})
	last := func() []string {
		t.Helper()
		c.advance(time.Second)
		r.Tick()
		fs := frames(out.String())
		return fs[len(fs)-1]
	}
	for _, u := range []client.Update{
		resolved(t, events.RoleManifest, manifest),
		committed(t, events.RoleManifest, manifest, false),
		resolved(t, events.RoleLayer, layer1),
		resolved(t, events.RoleLayer, layer2),
		tick(layer1, events.RoleLayer, 1<<20),
	} {
		r.Update(u)
	}
	f := last()
	if len(f) != 5 || !strings.Contains(f[0], "resolved") || strings.Contains(strings.Join(f, "\n"), "unpack") {
		t.Fatalf("before any layer is in the store:\n%s", strings.Join(f, "\n"))
	}

	// layer2 is in the store, not unpacked: the reference is unpacking.
	r.Update(committed(t, events.RoleLayer, layer2, false))
	f = last()
	if !strings.Contains(f[0], "unpacking") || !strings.Contains(f[0], "|"+strings.Repeat("-", 40)+"|") || !strings.Contains(f[3], "done") {
		t.Fatalf("layer downloaded, not unpacked:\n%s", strings.Join(f, "\n"))
	}
	if len(f) != 5 {
		t.Fatalf("an unpacked-layers line before any layer-applied:\n%s", strings.Join(f, "\n"))
	}

	// layer2 unpacked while layer1 still downloads: the reference is not
	// unpacking (no downloaded layer waits), the footer counts 1 of 2.
	r.Update(applied(t, layer2, 1, false))
	f = last()
	checks := []struct {
		line int
		want []string
	}{
		{0, []string{ref + ":", "resolved"}},
		{2, []string{"layer-" + layer1.Digest.String() + ":", "downloading", "1.0 MiB/4.0 MiB"}},
		{3, []string{"layer-" + layer2.Digest.String() + ":", "unpacked", "|" + strings.Repeat("+", 40) + "|", "3.0 MiB"}},
		{4, []string{"unpacked 1/2 layers"}},
		{5, []string{"elapsed: "}},
	}
	if len(f) != 6 {
		t.Fatalf("frame has %d lines, want 6:\n%s", len(f), strings.Join(f, "\n"))
	}
	for _, ck := range checks {
		for _, w := range ck.want {
			if !strings.Contains(f[ck.line], w) {
				t.Errorf("line %d %q lacks %q", ck.line, f[ck.line], w)
			}
		}
	}
	if col := strings.Index(f[2], "downloading"); strings.Index(f[3], "unpacked") != col {
		t.Errorf("unpacked state not in the state column %d: %q", col, f[3])
	}

	// layer1 done: unpacking again, the bar half full (1 of 2 unpacked).
	r.Update(committed(t, events.RoleLayer, layer1, false))
	f = last()
	if !strings.Contains(f[0], "unpacking") || !strings.Contains(f[0], "|"+strings.Repeat("+", 20)+strings.Repeat("-", 20)+"|") {
		t.Fatalf("reference line %q", f[0])
	}
	r.Update(applied(t, layer1, 0, false))
	r.Update(ev(t, events.TypeImageUnpacked, events.ImageUnpacked{Name: ref, Layers: 2}))
	if err := r.Finish(); err != nil {
		t.Fatal(err)
	}
	fs := frames(out.String())
	f = fs[len(fs)-1]
	if !strings.Contains(f[0], "unpacked") || !strings.Contains(f[2], "unpacked") || f[4] != "unpacked 2/2 layers" {
		t.Fatalf("final frame:\n%s", strings.Join(f, "\n"))
	}
	if !strings.Contains(f[5], "total: 7.0 MiB") {
		t.Fatalf("footer %q", f[5])
	}
}

// A layer already in the store and unpacked may arrive with no earlier
// event of the pull; a pull that does not unpack never says unpacking.
func TestUnpackEdges(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	var out bytes.Buffer
	r := progress.New(&out, progress.Config{Ref: ref, Now: c.now})
	r.Update(applied(t, layer1, 0, true))
	_ = r.Finish()
	want := "layer-" + layer1.Digest.String() + ": unpacked\nunpacked 1/1 layers\nelapsed: 0.0 s  total: 0 B (0 B/s)\n"
	if out.String() != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out.String(), want)
	}

	out.Reset()
	r = progress.New(&out, progress.Config{Ref: ref, Now: c.now})
	r.Update(ev(t, events.TypePullRequested, events.PullRequested{Ref: ref}))
	r.Update(resolved(t, events.RoleLayer, layer1))
	r.Update(committed(t, events.RoleLayer, layer1, false))
	_ = r.Finish()
	if strings.Contains(out.String(), "unpack") {
		t.Fatalf("a pull without unpacking mentions it:\n%s", out.String())
	}
}
