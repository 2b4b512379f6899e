package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore/stevedore/internal/testutil/fstree"
	"github.com/stevedore/stevedore/internal/testutil/registry"
	"github.com/stevedore/stevedore/internal/testutil/testimage"
	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/archive"
	"github.com/stevedore/stevedore/pkg/events"
	"github.com/stevedore/stevedore/pkg/snapshots"
)

var mtime = time.Date(2025, 6, 7, 8, 9, 10, 0, time.UTC)

// tarOf builds a tar from headers; regular files get their body from bodies.
func tarOf(t *testing.T, hdrs []*tar.Header, bodies map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hdrs {
		if h.ModTime.IsZero() {
			h.ModTime = mtime
		}
		h.Format = tar.FormatPAX
		body := bodies[h.Name]
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write([]byte(body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func dir(name string, mode int64) *tar.Header {
	return &tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: mode}
}
func file(name string, mode int64, uid, gid int) *tar.Header {
	return &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Uid: uid, Gid: gid}
}

// richLayers covers every entry type and the cross-layer cases: files
// replaced by dirs and dirs by files, whiteouts, an opaque dir, and a
// hardlink to a file of an earlier layer.
func richLayers(t *testing.T) [][]byte {
	long := "deep/" + strings.Repeat("d", 120) + "/" + strings.Repeat("f", 150)
	l1 := tarOf(t, []*tar.Header{
		dir("etc/", 0o755), dir("usr/", 0o755), dir("usr/bin/", 0o755), dir("usr/lib/", 0o755),
		dir("data/", 0o755), dir("data/old/", 0o750), dir("replaced-dir/", 0o755), dir("dev/", 0o755), dir("run/", 0o755),
		dir("home/", 0o755), dir("home/app/", 0o700), dir("deep/", 0o755), dir("deep/"+strings.Repeat("d", 120)+"/", 0o755),
		file("etc/config", 0o644, 0, 0),
		file("usr/bin/tool", 0o755, 0, 0),
		file("usr/bin/suid", 0o4755, 0, 0),
		file("data/a.txt", 0o600, 0, 0),
		file("data/old/x", 0o644, 0, 0), file("data/old/y", 0o644, 0, 0),
		file("replaced-file", 0o644, 0, 0),
		file("replaced-dir/child", 0o644, 0, 0),
		file("usr/lib/libfoo.so.1", 0o644, 0, 0),
		{Name: "usr/lib/libfoo.so", Typeflag: tar.TypeSymlink, Linkname: "libfoo.so.1", Mode: 0o777},
		{Name: "usr/bin/tool2", Typeflag: tar.TypeLink, Linkname: "usr/bin/tool", Mode: 0o755},
		{Name: "dev/null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o666},
		{Name: "run/fifo", Typeflag: tar.TypeFifo, Mode: 0o620},
		file("home/app/owned", 0o640, 1000, 1000),
		{Name: "etc/xattr", Typeflag: tar.TypeReg, Mode: 0o644, PAXRecords: map[string]string{"SCHILY.xattr.user.origin": "stevedore", "SCHILY.xattr.trusted.note": "layer1"}},
		file(long, 0o644, 0, 0),
	}, map[string]string{
		"etc/config": "v1\n", "usr/bin/tool": "#!/bin/sh\necho tool\n", "usr/bin/suid": "suid", "data/a.txt": "a",
		"data/old/x": "x", "data/old/y": "y", "replaced-file": "was a file", "replaced-dir/child": "child",
		"usr/lib/libfoo.so.1": "ELF", "home/app/owned": "mine", "etc/xattr": "x", long: "long name",
	})
	l2 := tarOf(t, []*tar.Header{
		dir("data/", 0o755),
		file("data/.wh.a.txt", 0o644, 0, 0),
		dir("data/old/", 0o750),
		file("data/old/.wh..wh..opq", 0o644, 0, 0),
		file("data/old/z", 0o644, 0, 0),
		dir("replaced-file/", 0o755),
		file("replaced-file/inner", 0o644, 0, 0),
		file("replaced-dir", 0o600, 0, 0),
		file("etc/new", 0o644, 33, 33),
	}, map[string]string{"data/old/z": "z", "replaced-file/inner": "now a dir", "replaced-dir": "now a file", "etc/new": "www"})
	l3 := tarOf(t, []*tar.Header{
		dir("usr/", 0o755), dir("usr/bin/", 0o755), dir("etc/", 0o755),
		{Name: "usr/bin/tool3", Typeflag: tar.TypeLink, Linkname: "usr/bin/tool", Mode: 0o755},
		file("etc/config", 0o644, 0, 0),
		file("usr/lib/.wh.libfoo.so", 0o644, 0, 0),
	}, map[string]string{"etc/config": "v3\n"})
	return [][]byte{l1, l2, l3}
}

func pushTars(t *testing.T, reg *registry.Registry, repoTag string, tars [][]byte, cs ...testimage.Compression) (string, []digest.Digest) {
	t.Helper()
	var layers []*testimage.Layer
	var diffIDs []digest.Digest
	for i, tb := range tars {
		c := cs[i%len(cs)]
		l, err := testimage.FromTar(c, tb)
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, l)
		diffIDs = append(diffIDs, l.DiffID)
	}
	img := &testimage.Image{Format: testimage.OCI, Layers: layers, Config: ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"}}}
	if _, err := testimage.Push(context.Background(), reg.Host(), repoTag, img); err != nil {
		t.Fatal(err)
	}
	return reg.Host() + "/" + repoTag, diffIDs
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("this test mounts snapshots and needs root; CI runs as root")
		}
		t.Skip("needs root to mount snapshots")
	}
}

// mountSnapshot mounts a committed snapshot read-only, as the unpacker
// describes it, and returns the mount point (unmounted at cleanup).
func (c *cluster) mountSnapshot(key string) string {
	c.t.Helper()
	var mounts []api.Mount
	out := c.mustCtl("snapshots", "mounts", "--format", "json", key)
	if err := json.Unmarshal([]byte(out), &mounts); err != nil {
		c.t.Fatalf("snapshots mounts --format json: %v\n%s", err, out)
	}
	var ms []snapshots.Mount
	for _, m := range mounts {
		ms = append(ms, snapshots.Mount{Type: m.Type, Source: m.Source, Options: m.Options})
	}
	target := c.t.TempDir()
	if err := snapshots.MountAll(ms, target); err != nil {
		c.t.Fatalf("mount %v: %v", ms, err)
	}
	c.t.Cleanup(func() { _ = snapshots.UnmountAll(target) })
	return target
}

func TestUnpackMatchesReferenceFlattening(t *testing.T) {
	requireRoot(t)
	reg := registry.Start(t)
	tars := richLayers(t)
	ref, diffIDs := pushTars(t, reg, "e2e/rich:1", tars, testimage.Gzip, testimage.Zstd, testimage.Uncompressed)
	c := newCluster(t, 2)

	r := c.ctl("pull", ref)
	if r.code != 0 {
		t.Fatalf("pull: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "unpacked") {
		t.Errorf("pull progress does not show unpacking:\n%s", r.stdout)
	}
	chain := snapshots.ChainID(diffIDs)
	ls := c.mustCtl("snapshots", "ls")
	for _, id := range chain {
		if !strings.Contains(ls, id.String()) {
			t.Errorf("snapshots ls lacks %s:\n%s", id, ls)
		}
	}
	imgs := images(t, c)
	if len(imgs) != 1 || len(imgs[0].Unpacked) != 1 || imgs[0].Unpacked[0] != "e2e" {
		t.Errorf("images does not show the image unpacked on node e2e: %+v", imgs)
	}
	// Each layer was applied by this pull: one layer-applied per chainID,
	// none of them saying it was already there. (A layer's blob-committed
	// and its image's unpack-requested both ask for it; the one that
	// waited for the other's apply must report that apply, not "existing".)
	applied := map[digest.Digest]events.LayerApplied{}
	for _, line := range strings.Split(strings.TrimSpace(c.mustCtl("events", "--type", "layer-applied", "--no-follow", "--format", "json")), "\n") {
		var ev events.Envelope
		var p events.LayerApplied
		if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.Decode(&p) != nil {
			t.Fatalf("events: %q: %v", line, err)
		}
		if _, dup := applied[p.ChainID]; dup {
			t.Errorf("layer-applied recorded twice for %s", p.ChainID)
		}
		applied[p.ChainID] = p
	}
	for _, id := range chain {
		if p, ok := applied[id]; !ok || p.Existing || p.Size <= 0 {
			t.Errorf("layer-applied for %s = %+v (present %v); want applied by this pull with its size", id, p, ok)
		}
	}

	got, err := fstree.Read(c.mountSnapshot(chain[len(chain)-1].String()))
	if err != nil {
		t.Fatal(err)
	}
	refDir := t.TempDir()
	var readers []io.Reader
	for _, tb := range tars {
		readers = append(readers, bytes.NewReader(tb))
	}
	if err := archive.Flatten(context.Background(), refDir, readers...); err != nil {
		t.Fatal(err)
	}
	want, err := fstree.Read(refDir)
	if err != nil {
		t.Fatal(err)
	}
	if d := fstree.Diff(want, got); len(d) > 0 {
		t.Fatalf("mounted rootfs differs from the reference flattening:\n%s", strings.Join(d, "\n"))
	}
	// Spot checks that the comparison is not vacuous.
	for _, p := range []string{"data/old/z", "replaced-file/inner", "usr/bin/tool3", "dev/null", "run/fifo", "etc/xattr"} {
		if _, ok := got[p]; !ok {
			t.Errorf("%s missing from the rootfs", p)
		}
	}
	for _, p := range []string{"data/a.txt", "data/old/x", "replaced-dir/child", "usr/lib/libfoo.so"} {
		if _, ok := got[p]; ok {
			t.Errorf("%s should have been deleted", p)
		}
	}
	if got["usr/bin/suid"].Mode&os.ModeSetuid == 0 || got["home/app/owned"].UID != 1000 || got["etc/xattr"].Xattrs["user.origin"] != "stevedore" {
		t.Errorf("setuid, owner or xattr lost: %v %v %v", got["usr/bin/suid"], got["home/app/owned"], got["etc/xattr"])
	}
}

func TestUnpackRejectsEscapingLayer(t *testing.T) {
	requireRoot(t)
	reg := registry.Start(t)
	outside := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(outside, []byte("untouched"), 0o644); err != nil {
		t.Fatal(err)
	}
	evil := tarOf(t, []*tar.Header{
		dir("ok/", 0o755),
		{Name: "escape", Typeflag: tar.TypeSymlink, Linkname: filepath.Dir(outside), Mode: 0o777},
		file("escape/victim", 0o644, 0, 0),
	}, map[string]string{"escape/victim": "owned"})
	ref, diffIDs := pushTars(t, reg, "e2e/evil:1", [][]byte{evil}, testimage.Gzip)
	c := newCluster(t, 1)

	r := c.ctl("pull", "-q", ref)
	if r.code == 0 || !strings.Contains(r.stderr, "escape") {
		t.Fatalf("pull of an escaping layer: exit %d, stderr %q; want a failure naming the entry", r.code, r.stderr)
	}
	if b, _ := os.ReadFile(outside); string(b) != "untouched" {
		t.Fatalf("file outside the snapshot root changed: %q", b)
	}
	if ls := c.mustCtl("snapshots", "ls"); strings.Contains(ls, snapshots.ChainID(diffIDs)[0].String()) {
		t.Fatalf("a snapshot was committed for the rejected layer:\n%s", ls)
	}
}

func TestUnpackerKilledMidLayer(t *testing.T) {
	requireRoot(t)
	reg := registry.Start(t)
	// Many small files make one layer slow enough to kill mid-apply.
	var hdrs []*tar.Header
	bodies := map[string]string{}
	for d := 0; d < 40; d++ {
		dn := filepath.Join("tree", "dir"+itoa(d)) + "/"
		hdrs = append(hdrs, dir(dn, 0o755))
		for f := 0; f < 500; f++ {
			name := dn + "f" + itoa(f)
			hdrs = append(hdrs, file(name, 0o644, 0, 0))
			bodies[name] = name
		}
	}
	big := tarOf(t, append([]*tar.Header{dir("tree/", 0o755)}, hdrs...), bodies)
	small := tarOf(t, []*tar.Header{file("top", 0o644, 0, 0)}, map[string]string{"top": "top"})
	ref, diffIDs := pushTars(t, reg, "e2e/manyfiles:1", [][]byte{big, small}, testimage.Gzip)
	c := newCluster(t, 1)

	pull := c.ctlCmd("pull", "-q", ref)
	var out syncBuffer
	pull.Stdout, pull.Stderr = &out, &out
	if err := pull.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- pull.Wait() }()

	tmp := filepath.Join(c.root, "snapshots", "overlay", "tmp")
	eventually(t, 30*time.Second, func() bool {
		ents, _ := os.ReadDir(tmp)
		return len(ents) > 0
	}, "a layer apply to start")
	c.kill("unpacker", syscall.SIGKILL)
	c.startUnpacker()

	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("pull after killing the unpacker: %v\n%s", err, out.String())
		}
	case <-time.After(90 * time.Second):
		t.Fatal("pull did not finish after the unpacker restarted")
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("half-applied snapshot dirs left in %s: %d", tmp, len(ents))
	}
	chain := snapshots.ChainID(diffIDs)
	got, err := fstree.Read(c.mountSnapshot(chain[len(chain)-1].String()))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(got); n != 1+40+40*500+1 {
		t.Fatalf("rootfs has %d entries after the restart, want %d", n, 1+40+40*500+1)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestUnpackFailuresNameLayerAndCause(t *testing.T) {
	requireRoot(t)
	reg := registry.Start(t)
	c := newCluster(t, 1)
	// A small limit on uncompressed layer size, to catch the bomb.
	c.kill("unpacker", syscall.SIGTERM)
	c.start("unpacker", filepath.Join(binDir, "unpacker"), "--nats", c.url, "--node", "e2e", "--ack-wait", "3s", "--max-layer-size", "4194304")

	good := tarOf(t, []*tar.Header{file("ok", 0o644, 0, 0)}, map[string]string{"ok": "ok"})
	noise := make([]byte, 4096)
	for i := range noise {
		noise[i] = byte(i*7 + 3)
	}
	bomb := tarOf(t, []*tar.Header{file("zeros", 0o644, 0, 0)}, map[string]string{"zeros": string(make([]byte, 16<<20))})

	push := func(repo string, layers [][]byte, wrongDiffID bool) string {
		var ls []*testimage.Layer
		var diffIDs []digest.Digest
		for _, tb := range layers {
			l, err := testimage.FromTar(testimage.Gzip, tb)
			if err != nil {
				t.Fatal(err)
			}
			ls = append(ls, l)
			diffIDs = append(diffIDs, l.DiffID)
		}
		cfg := ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"}}
		if wrongDiffID {
			diffIDs[len(diffIDs)-1] = digest.FromString("something else")
			cfg.RootFS = ocispec.RootFS{Type: "layers", DiffIDs: diffIDs}
		}
		img := &testimage.Image{Format: testimage.OCI, Layers: ls, Config: cfg}
		if _, err := testimage.Push(context.Background(), reg.Host(), repo, img); err != nil {
			t.Fatal(err)
		}
		return reg.Host() + "/" + repo
	}
	tests := []struct {
		name  string
		ref   string
		cause string
	}{
		{"not a tar", push("e2e/notar:1", [][]byte{good, noise}, false), "not a tar"},
		{"truncated", push("e2e/trunc:1", [][]byte{good, bomb[:9000]}, false), "truncated"},
		{"diff_id mismatch", push("e2e/diffid:1", [][]byte{good, good}, true), "diff"},
		{"decompression bomb", push("e2e/bomb:1", [][]byte{good, bomb}, false), "limit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := c.ctl("pull", "-q", tc.ref)
			if r.code == 0 {
				t.Fatalf("pull of %s succeeded", tc.ref)
			}
			if !strings.Contains(r.stderr, "layer 2") || !strings.Contains(strings.ToLower(r.stderr), tc.cause) {
				t.Fatalf("pull of %s: stderr %q; want it to name layer 2 and %q", tc.ref, r.stderr, tc.cause)
			}
		})
	}
	// No committed snapshot holds partial content: only the good layer's.
	ls := c.mustCtl("snapshots", "ls", "-q")
	if n := len(strings.Fields(ls)); n != 1 {
		t.Fatalf("snapshots after failed unpacks: %q; want only the good base layer", ls)
	}
	if ents, _ := os.ReadDir(filepath.Join(c.root, "snapshots", "overlay", "tmp")); len(ents) != 0 {
		t.Fatalf("half-applied snapshot dirs left: %d", len(ents))
	}
}
