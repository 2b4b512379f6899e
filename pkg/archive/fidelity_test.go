package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stevedore/stevedore/internal/testutil/testimage"
	"github.com/stevedore/stevedore/pkg/errdefs"
)

// model is the test's oracle: the expected tree, computed from the tar
// entries alone, following the OCI image spec's layer rules.
type model struct {
	mode  Mode
	nodes map[string]*mnode
}

type mnode struct {
	node
	group *int // hard link group: paths sharing a group share an inode
}

func newModel(mode Mode) *model { return &model{mode: mode, nodes: map[string]*mnode{}} }

func normName(name string) string {
	return strings.Trim(filepath.Clean("/"+name), "/")
}

func (m *model) removeTree(p string, keep map[string]bool) {
	for q := range m.nodes {
		if (q == p || strings.HasPrefix(q, p+"/")) && !keep[q] {
			delete(m.nodes, q)
		}
	}
}

func (m *model) ensureParents(p string, added map[string]bool) {
	for d := filepath.Dir(p); d != "."; d = filepath.Dir(d) {
		if n, ok := m.nodes[d]; !ok || n.Type != "dir" {
			m.nodes[d] = &mnode{node: node{Type: "dir", Mode: 0o755}}
		}
		added[d] = true
	}
}

// apply adds one layer's entries to the model.
func (m *model) apply(entries []ent) {
	added := map[string]bool{}
	for i, e := range entries {
		p := normName(e.Name)
		if p == "" {
			continue // the root: not compared
		}
		base := filepath.Base(p)
		parent := filepath.Dir(p)
		if base == ".wh..wh..opq" {
			if m.mode == OverlayForm {
				m.ensureParents(p, added)
				d := m.nodes[parent]
				if d.Xattrs == nil {
					d.Xattrs = map[string]string{}
				}
				d.Xattrs["trusted.overlay.opaque"] = "y"
				continue
			}
			for q := range m.nodes {
				if strings.HasPrefix(q, parent+"/") && !added[q] {
					delete(m.nodes, q)
				}
			}
			continue
		}
		if strings.HasPrefix(base, ".wh.") {
			target := filepath.Join(parent, strings.TrimPrefix(base, ".wh."))
			if m.mode == OverlayForm {
				m.ensureParents(p, added)
				mt := e.ModTime
				if mt.IsZero() {
					mt = t0.Add(time.Duration(i) * time.Minute)
				}
				m.nodes[target] = &mnode{node: node{Type: "char", UID: uint32(e.UID), GID: uint32(e.GID), MTime: mt.UTC()}}
				continue
			}
			m.removeTree(target, added)
			continue
		}
		mt := e.ModTime
		if mt.IsZero() {
			mt = t0.Add(time.Duration(i) * time.Minute)
		}
		n := node{Mode: uint32(e.Mode) & 0o7777, UID: uint32(e.UID), GID: uint32(e.GID), MTime: mt.UTC()}
		for k, v := range e.Xattrs {
			if n.Xattrs == nil {
				n.Xattrs = map[string]string{}
			}
			n.Xattrs[k] = v
		}
		m.ensureParents(p, added)
		old := m.nodes[p]
		if old != nil && !(e.Type == tar.TypeDir && old.Type == "dir") {
			m.removeTree(p, nil)
			old = nil
		}
		added[p] = true
		switch e.Type {
		case tar.TypeDir:
			n.Type, n.MTime = "dir", time.Time{}
			if old != nil && old.Xattrs != nil { // an existing dir keeps its xattrs
				for k, v := range n.Xattrs {
					old.Xattrs[k] = v
				}
				n.Xattrs = old.Xattrs
			}
			m.nodes[p] = &mnode{node: n}
		case tar.TypeReg:
			n.Type, n.Size, n.SHA256 = "file", int64(len(e.Content)), sha(e.Content)
			m.nodes[p] = &mnode{node: n}
		case tar.TypeSymlink:
			n.Type, n.Mode, n.Link = "symlink", 0, e.Link
			m.nodes[p] = &mnode{node: n}
		case tar.TypeChar, tar.TypeBlock:
			n.Type = map[byte]string{tar.TypeChar: "char", tar.TypeBlock: "block"}[e.Type]
			n.Major, n.Minor = uint32(e.Major), uint32(e.Minor)
			m.nodes[p] = &mnode{node: n}
		case tar.TypeFifo:
			n.Type = "fifo"
			m.nodes[p] = &mnode{node: n}
		case tar.TypeLink:
			t := m.nodes[normName(e.Link)]
			if t == nil {
				continue // in a lower layer: the test fills it in
			}
			if t.group == nil {
				t.group = new(int)
			}
			m.nodes[p] = t // same inode: same everything
		}
	}
}

// tree returns the model's nodes and its hard link groups.
func (m *model) tree() (map[string]node, map[*int][]string) {
	out := map[string]node{}
	groups := map[*int][]string{}
	for p, n := range m.nodes {
		out[p] = n.node
		if n.group != nil {
			groups[n.group] = append(groups[n.group], p)
		}
	}
	return out, groups
}

// checkAgainst compares dir with the model, entry by entry, and checks that
// hard link groups share an inode.
func (m *model) checkAgainst(t *testing.T, what, dir string) {
	t.Helper()
	want, groups := m.tree()
	got := scan(t, dir)
	diffTrees(t, what, want, got)
	for _, paths := range groups {
		for _, p := range paths[1:] {
			if got[p].Ino != got[paths[0]].Ino {
				t.Errorf("%s: %s and %s should be one inode (hard links), got %d and %d", what, p, paths[0], got[p].Ino, got[paths[0]].Ino)
			}
		}
	}
}

// fidelityLayers returns three layers covering every entry type and the
// layer-to-layer changes a snapshotter must get right.
func fidelityLayers() [3][]ent {
	long := "long/" + strings.Repeat("component-0123456789/", 13) + "a-file-with-a-rather-long-name.txt"
	at := time.Date(2022, 2, 2, 2, 2, 2, 0, time.UTC)
	l1 := []ent{
		{Name: "./", Type: tar.TypeDir, Mode: 0o755},
		dir("etc", 0o755),
		file("etc/hosts", "127.0.0.1 localhost\n", 0o644),
		symlink("etc/localtime", "/usr/share/zoneinfo/UTC"),
		dir("bin", 0o755),
		{Name: "bin/su", Type: tar.TypeReg, Mode: 0o4755, Content: []byte("#!setuid\n")},
		{Name: "bin/wall", Type: tar.TypeReg, Mode: 0o2755, GID: 5, Content: []byte("#!setgid\n")},
		{Name: "home/user", Type: tar.TypeDir, Mode: 0o700, UID: 1000, GID: 1000}, // parent "home" implicit
		{Name: "home/user/.profile", Type: tar.TypeReg, Mode: 0o600, UID: 1000, GID: 1000, Content: []byte("export X=1\n")},
		{Name: "tmp", Type: tar.TypeDir, Mode: 0o1777},
		{Name: "shared", Type: tar.TypeDir, Mode: 0o2775, GID: 50},
		{Name: "shared/f", Type: tar.TypeReg, Mode: 0o664, GID: 0, Content: []byte("gid 0 despite setgid dir")},
		dir("dev", 0o755),
		{Name: "dev/null", Type: tar.TypeChar, Mode: 0o666, Major: 1, Minor: 3},
		{Name: "dev/sda", Type: tar.TypeBlock, Mode: 0o660, GID: 6, Major: 8, Minor: 0},
		{Name: "run/fifo", Type: tar.TypeFifo, Mode: 0o620, UID: 3, GID: 4},
		dir("data", 0o755),
		{Name: "data/xattr", Type: tar.TypeReg, Mode: 0o644, Content: []byte("xattrs"),
			Xattrs: map[string]string{"user.comment": "hello", "trusted.stevedore": "secret"}},
		{Name: "data/xdir", Type: tar.TypeDir, Mode: 0o755, Xattrs: map[string]string{"user.dir": "1"}},
		{Name: "data/xlink", Type: tar.TypeSymlink, Mode: 0o777, Link: "xattr", Xattrs: map[string]string{"trusted.link": "l"}},
		{Name: "data/atime", Type: tar.TypeReg, Mode: 0o644, Content: []byte("t"), ModTime: at},
		file("data/linked", "shared inode", 0o640),
		hardlink("data/linked2", "data/linked"),
		file(long, "long name", 0o644),
		symlink("long-target", "/"+long),
		hardlink("long-hardlink", long),
		file("replace/file-to-dir", "i become a dir", 0o644),
		dir("replace/dir-to-file", 0o755),
		file("replace/dir-to-file/child", "i disappear", 0o644),
		dir("replace/symlink-to-dir", 0o755),
		file("del/gone", "deleted in layer 2", 0o644),
		file("del/keep", "kept", 0o644),
		dir("del/gonedir", 0o755),
		file("del/gonedir/x", "deleted with its dir", 0o644),
		dir("opq", 0o755),
		file("opq/old1", "hidden by opaque", 0o644),
		dir("opq/olddir", 0o755),
		file("opq/olddir/old2", "hidden by opaque", 0o644),
		{Name: "orig/target", Type: tar.TypeReg, Mode: 0o640, UID: 7, GID: 8, Content: []byte("linked from layer 3"),
			Xattrs: map[string]string{"user.origin": "layer1"}},
		file("orig/other", "stays", 0o644),
	}
	l2 := []ent{
		{Name: "etc", Type: tar.TypeDir, Mode: 0o750, UID: 2}, // stays a dir, new metadata
		file("etc/hosts", "10.0.0.1 changed\n", 0o600),
		{Name: "replace/file-to-dir", Type: tar.TypeDir, Mode: 0o711},
		file("replace/file-to-dir/inner", "inside the new dir", 0o644),
		file("replace/dir-to-file", "was a dir", 0o644),
		symlink("replace/symlink-to-dir", "../etc"),
		whiteout("del/.wh.gone"),
		whiteout("del/.wh.gonedir"),
		file("del/new", "added next to whiteouts", 0o644),
		file("within/file-then-dir", "replaced in this layer", 0o644),
		dir("within/file-then-dir", 0o750),
		dir("within/dir-then-file", 0o755),
		file("within/dir-then-file/child", "goes with its dir", 0o644),
		file("within/dir-then-file", "replaced a dir of this layer", 0o640),
		file("within/twice", "first", 0o644),
		file("within/twice", "second", 0o600),
	}
	l3 := []ent{
		dir("opq", 0o755),
		dir("opq/olddir", 0o700), // re-added before the marker: its old content must still go
		file("opq/new", "only this survives", 0o644),
		whiteout("opq/.wh..wh..opq"),
		dir("l3", 0o755),
		hardlink("l3/link-to-l1", "orig/target"),
		whiteout(".wh.run"),
	}
	return [3][]ent{l1, l2, l3}
}

// TestFlattenFidelity flattens three layers in Direct mode and compares
// the result, entry by entry, with the oracle.
func TestFlattenFidelity(t *testing.T) {
	requireRoot(t)
	layers := fidelityLayers()
	m := newModel(Direct)
	var readers []io.Reader
	for i, l := range layers {
		m.apply(l)
		c := []testimage.Compression{testimage.Gzip, testimage.Zstd, testimage.Uncompressed}[i]
		readers = append(readers, bytes.NewReader(mkLayer(t, c, l...).Blob))
	}
	dir := t.TempDir()
	if err := Flatten(context.Background(), dir, readers...); err != nil {
		t.Fatal(err)
	}
	m.checkAgainst(t, "flattened", dir)

	// Spot checks that do not depend on the oracle being right.
	if n := stat(t, filepath.Join(dir, "bin/su")); n.Mode != 0o4755 {
		t.Errorf("bin/su mode %04o, want 4755", n.Mode)
	}
	if _, err := os.Lstat(filepath.Join(dir, "opq/olddir/old2")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("opq/olddir/old2 survived the opaque marker: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "del/gone")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("del/gone survived its whiteout: %v", err)
	}
	a, b := stat(t, filepath.Join(dir, "l3/link-to-l1")), stat(t, filepath.Join(dir, "orig/target"))
	if a.Ino != b.Ino {
		t.Errorf("l3/link-to-l1 is not a hard link to orig/target")
	}
}

// TestOverlayForm applies each layer into its own directory and checks the
// overlay form: whiteout devices, opaque xattrs, and a hard link to a file
// of a lower layer (ErrNeedsLowers first, then resolved with Lowers).
func TestOverlayForm(t *testing.T) {
	requireRoot(t)
	layers := fidelityLayers()
	ctx := context.Background()
	base := t.TempDir()
	dirs := make([]string, 3)
	for i := range dirs {
		dirs[i] = filepath.Join(base, "l"+string(rune('1'+i)))
		if err := os.Mkdir(dirs[i], 0o700); err != nil {
			t.Fatal(err)
		}
	}
	blobs := make([][]byte, 3)
	for i, l := range layers {
		blobs[i] = mkLayer(t, testimage.Gzip, l...).Blob
	}
	for i := 0; i < 2; i++ {
		if _, err := Apply(ctx, dirs[i], bytes.NewReader(blobs[i]), Options{Mode: OverlayForm}); err != nil {
			t.Fatalf("layer %d: %v", i+1, err)
		}
	}
	_, err := Apply(ctx, dirs[2], bytes.NewReader(blobs[2]), Options{Mode: OverlayForm})
	if !errors.Is(err, ErrNeedsLowers) || !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("layer 3 without Lowers: %v, want ErrNeedsLowers", err)
	}
	if !strings.Contains(err.Error(), "l3/link-to-l1") {
		t.Errorf("error %q does not name the entry", err)
	}
	// The caller retries into a fresh dir.
	if err := os.RemoveAll(dirs[2]); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dirs[2], 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Apply(ctx, dirs[2], bytes.NewReader(blobs[2]), Options{Mode: OverlayForm, Lowers: []string{dirs[1], dirs[0]}}); err != nil {
		t.Fatalf("layer 3 with Lowers: %v", err)
	}

	// Each layer dir against the oracle in overlay form.
	for i, l := range layers {
		m := newModel(OverlayForm)
		m.apply(l)
		if i == 2 {
			// The cross-layer link is created as a link to the lower file.
			lower := newModel(OverlayForm)
			lower.apply(layers[0])
			m.nodes["l3/link-to-l1"] = lower.nodes["orig/target"]
		}
		m.checkAgainst(t, "layer "+string(rune('1'+i)), dirs[i])
	}

	// Directory times are those of the tar, set after their children.
	for i, l := range layers {
		last := map[string]int{}
		for j, e := range l {
			last[normName(e.Name)] = j
		}
		for j, e := range l {
			if e.Type != tar.TypeDir || last[normName(e.Name)] != j {
				continue // not a dir, or replaced later in the layer
			}
			want := t0.Add(time.Duration(j) * time.Minute)
			fi, err := os.Lstat(filepath.Join(dirs[i], e.Name))
			if err != nil {
				t.Fatal(err)
			}
			if !fi.ModTime().Equal(want) {
				t.Errorf("layer %d dir %q mtime %v, want %v", i+1, e.Name, fi.ModTime().UTC(), want)
			}
		}
	}

	// Direct assertions on the overlay form.
	for _, p := range []string{"del/gone", "del/gonedir"} {
		if n := stat(t, filepath.Join(dirs[1], p)); n.Type != "char" || n.Major != 0 || n.Minor != 0 {
			t.Errorf("layer 2 %s = %v, want a 0/0 char device", p, n)
		}
	}
	if n := stat(t, filepath.Join(dirs[2], "run")); n.Type != "char" || n.Major != 0 || n.Minor != 0 {
		t.Errorf("layer 3 run = %v, want a 0/0 char device", n)
	}
	if x := stat(t, filepath.Join(dirs[2], "opq")).Xattrs; x["trusted.overlay.opaque"] != "y" {
		t.Errorf("layer 3 opq xattrs = %v, want trusted.overlay.opaque=y", x)
	}
	l3, l1 := stat(t, filepath.Join(dirs[2], "l3/link-to-l1")), stat(t, filepath.Join(dirs[0], "orig/target"))
	if l3.Ino != l1.Ino || l3.SHA256 != l1.SHA256 {
		t.Errorf("layer 3 l3/link-to-l1 = %v (ino %d), want a hard link to layer 1 orig/target (ino %d)", l3, l3.Ino, l1.Ino)
	}
	if _, err := os.Lstat(filepath.Join(dirs[2], "orig")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("layer 3 got a copy of orig/: %v", err)
	}
}
