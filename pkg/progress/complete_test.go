package progress_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stevedore/stevedore/pkg/client"
	"github.com/stevedore/stevedore/pkg/events"
	"github.com/stevedore/stevedore/pkg/progress"
)

// imageSize is the size the fetcher gives for the whole image in the
// re-pull tests: index, manifest, config and both layers.
var imageSize = index.Size + manifest.Size + config.Size + layer1.Size + layer2.Size

// repull is what the log holds for a pull of an image that is complete on
// the node already: the fetcher records the image and ends the pull with no
// descriptor-resolved and no blob-committed.
func repull(t *testing.T) []client.Update {
	return []client.Update{
		ev(t, events.TypePullRequested, events.PullRequested{Ref: ref}),
		ev(t, events.TypeImageUpdated, events.ImageUpdated{Name: ref, Target: index, Size: imageSize, Platform: "linux/amd64"}),
		ev(t, events.TypePullCompleted, events.PullCompleted{Ref: ref, Target: index.Digest, Size: imageSize, Blobs: 5}),
	}
}

func TestPlainRepullComplete(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	var out bytes.Buffer
	r := progress.New(&out, progress.Config{Ref: ref, Now: c.now})
	for _, u := range repull(t) {
		r.Update(u)
		c.advance(100 * time.Millisecond)
	}
	if err := r.Finish(); err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{
		ref + ": resolved 7.0 MiB",
		"index-" + index.Digest.String() + ": exists 1.0 KiB",
		"elapsed: 0.3 s  total: 0 B (0 B/s)",
	}, "\n") + "\n"
	if out.String() != want {
		t.Fatalf("plain output:\n%s\nwant:\n%s", out.String(), want)
	}
}

func TestTTYRepullComplete(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	var out bytes.Buffer
	r := progress.New(&out, progress.Config{Ref: ref, TTY: true, Width: 160, Now: c.now})
	for _, u := range repull(t) {
		r.Update(u)
		c.advance(200 * time.Millisecond)
	}
	if err := r.Finish(); err != nil {
		t.Fatal(err)
	}
	fs := frames(out.String())
	f := fs[len(fs)-1]
	if len(f) != 3 {
		t.Fatalf("final frame has %d lines, want 3:\n%s", len(f), strings.Join(f, "\n"))
	}
	full := "|" + strings.Repeat("+", 40) + "|"
	checks := []struct {
		line int
		want []string
	}{
		{0, []string{ref + ":", "resolved", full, "7.0 MiB"}},
		{1, []string{"index-" + index.Digest.String() + ":", "exists", full, "1.0 KiB"}},
		{2, []string{"elapsed: 0.6 s", "total: 0 B"}},
	}
	for _, ck := range checks {
		for _, w := range ck.want {
			if !strings.Contains(f[ck.line], w) {
				t.Errorf("line %d %q lacks %q", ck.line, f[ck.line], w)
			}
		}
	}
	if strings.Contains(f[0], "resolving") {
		t.Errorf("a completed pull is still resolving: %q", f[0])
	}
}

// A re-pull that unpacks: the unpacker reports the layers, the reference
// line ends unpacked and the target is shown as existing.
func TestPlainRepullCompleteUnpack(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	var out bytes.Buffer
	r := progress.New(&out, progress.Config{Ref: ref, Unpack: true, Now: c.now})
	for _, u := range []client.Update{
		ev(t, events.TypePullRequested, events.PullRequested{Ref: ref, Unpack: true}),
		ev(t, events.TypeImageUpdated, events.ImageUpdated{Name: ref, Target: manifest, Size: imageSize - index.Size}),
		applied(t, layer1, 0, true),
		ev(t, events.TypeImageUnpacked, events.ImageUnpacked{Name: ref, Layers: 1}),
		ev(t, events.TypePullCompleted, events.PullCompleted{Ref: ref, Target: manifest.Digest, Size: imageSize - index.Size}),
	} {
		r.Update(u)
	}
	if err := r.Finish(); err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{
		ref + ": resolved 7.0 MiB",
		"manifest-" + manifest.Digest.String() + ": exists 2.0 KiB",
		"layer-" + layer1.Digest.String() + ": unpacked",
		ref + ": unpacked",
		"unpacked 1/1 layers",
		"elapsed: 0.0 s  total: 0 B (0 B/s)",
	}, "\n") + "\n"
	if out.String() != want {
		t.Fatalf("plain output:\n%s\nwant:\n%s", out.String(), want)
	}
}

// completedWithWaiting is a pull of an index whose manifest was in the store
// already, and whose layer2 had not reported when pull-completed arrived:
// both are resolved and never committed in the log the client read.
func completedWithWaiting(t *testing.T) []client.Update {
	return []client.Update{
		ev(t, events.TypePullRequested, events.PullRequested{Ref: ref}),
		resolved(t, events.RoleIndex, index),
		committed(t, events.RoleIndex, index, false),
		resolved(t, events.RoleManifest, manifest),
		resolved(t, events.RoleConfig, config),
		resolved(t, events.RoleLayer, layer1),
		resolved(t, events.RoleLayer, layer2),
		committed(t, events.RoleConfig, config, true),
		committed(t, events.RoleLayer, layer1, false),
		ev(t, events.TypeImageUpdated, events.ImageUpdated{Name: ref, Target: index, Size: imageSize}),
		ev(t, events.TypePullCompleted, events.PullCompleted{Ref: ref, Target: index.Digest, Size: imageSize, Blobs: 5}),
	}
}

func TestPlainCompletedNoWaiting(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	var out bytes.Buffer
	r := progress.New(&out, progress.Config{Ref: ref, Now: c.now})
	for _, u := range completedWithWaiting(t) {
		r.Update(u)
	}
	if err := r.Finish(); err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	want := []string{
		"manifest-" + manifest.Digest.String() + ": exists 2.0 KiB",
		"layer-" + layer2.Digest.String() + ": exists 3.0 MiB",
		// Only what this pull downloaded: index and layer1.
		"elapsed: 0.0 s  total: 4.0 MiB (0 B/s)",
	}
	if len(got) < len(want) || strings.Join(got[len(got)-len(want):], "\n") != strings.Join(want, "\n") {
		t.Fatalf("plain output:\n%s\nwant it to end with:\n%s", out.String(), strings.Join(want, "\n"))
	}
	if strings.Count(out.String(), ref+": resolved") != 1 {
		t.Fatalf("the reference line is not printed once:\n%s", out.String())
	}
}

func TestTTYCompletedNoWaiting(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	var out bytes.Buffer
	r := progress.New(&out, progress.Config{Ref: ref, TTY: true, Width: 160, Now: c.now})
	for _, u := range completedWithWaiting(t) {
		r.Update(u)
	}
	if err := r.Finish(); err != nil {
		t.Fatal(err)
	}
	fs := frames(out.String())
	f := fs[len(fs)-1]
	if len(f) != 7 {
		t.Fatalf("final frame has %d lines, want 7:\n%s", len(f), strings.Join(f, "\n"))
	}
	if frame := strings.Join(f, "\n"); strings.Contains(frame, "waiting") {
		t.Fatalf("a completed pull shows waiting blobs:\n%s", frame)
	}
	for i, st := range map[int]string{0: "resolved", 1: "done", 2: "exists", 3: "exists", 4: "done", 5: "exists"} {
		if !strings.Contains(f[i], st) || !strings.Contains(f[i], "|"+strings.Repeat("+", 40)+"|") {
			t.Errorf("line %d %q is not full and %s", i, f[i], st)
		}
	}
	if !strings.Contains(f[2], "manifest-") || !strings.Contains(f[5], "layer-"+layer2.Digest.String()) {
		t.Errorf("lines out of order:\n%s", strings.Join(f, "\n"))
	}
}

// A tick travels apart from the event log and can arrive before the first
// descriptor-resolved: the reference line still comes first.
func TestPlainTickBeforeResolved(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	var out bytes.Buffer
	r := progress.New(&out, progress.Config{Ref: ref, Now: c.now})
	r.Update(tick(layer1, events.RoleLayer, 1<<20))
	r.Update(resolved(t, events.RoleManifest, manifest))
	r.Update(resolved(t, events.RoleLayer, layer1))
	if err := r.Finish(); err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{
		ref + ": resolved",
		"layer-" + layer1.Digest.String() + ": downloading 1.0 MiB/4.0 MiB",
		"manifest-" + manifest.Digest.String() + ": waiting 2.0 KiB",
		"elapsed: 0.0 s  total: 1.0 MiB (0 B/s)",
	}, "\n") + "\n"
	if out.String() != want {
		t.Fatalf("plain output:\n%s\nwant:\n%s", out.String(), want)
	}
}

// Nothing a late tick says changes a completed pull.
func TestTickAfterCompleted(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	var out bytes.Buffer
	r := progress.New(&out, progress.Config{Ref: ref, Now: c.now})
	for _, u := range repull(t) {
		r.Update(u)
	}
	before := out.String()
	r.Update(tick(layer1, events.RoleLayer, 1<<20))
	if out.String() != before {
		t.Fatalf("a tick after pull-completed printed:\n%s", strings.TrimPrefix(out.String(), before))
	}
}

// image-updated adds its target only when no blob was named before it: in a
// pull that fetched, the target is the fetched root, not a blob that existed.
func TestImageUpdatedAfterBlobs(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	var out bytes.Buffer
	r := progress.New(&out, progress.Config{Ref: ref, Now: c.now})
	r.Update(resolved(t, events.RoleLayer, layer1))
	r.Update(committed(t, events.RoleLayer, layer1, false))
	r.Update(ev(t, events.TypeImageUpdated, events.ImageUpdated{Name: ref, Target: index, Size: imageSize}))
	r.Update(ev(t, events.TypePullCompleted, events.PullCompleted{Ref: ref, Target: index.Digest, Size: imageSize}))
	if err := r.Finish(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "index-") {
		t.Fatalf("the target was added as a blob after others were named:\n%s", out.String())
	}
}
