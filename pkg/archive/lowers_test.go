package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stevedore/stevedore/pkg/errdefs"
)

// applyOverlay applies entries in overlay form into a new dir under base.
func applyOverlay(t *testing.T, base, name string, lowers []string, entries ...ent) (string, error) {
	t.Helper()
	d := filepath.Join(base, name)
	if err := os.Mkdir(d, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := Apply(context.Background(), d, bytes.NewReader(mkTar(t, entries...)), Options{Mode: OverlayForm, Lowers: lowers})
	return d, err
}

func TestHardlinkLowerResolution(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	l1, err := applyOverlay(t, base, "l1", nil,
		dir("a", 0o755), file("a/f", "layer1 f", 0o644), file("a/g", "layer1 g", 0o644),
		dir("o", 0o755), file("o/f", "layer1 o/f", 0o644), file("s", "layer1 s", 0o644),
		dir("real", 0o755), file("real/f", "real", 0o644))
	if err != nil {
		t.Fatal(err)
	}
	l2, err := applyOverlay(t, base, "l2", nil,
		dir("a", 0o755), whiteout("a/.wh.f"), // a/f deleted
		file("a/g", "layer2 g", 0o600),              // a/g shadowed
		dir("o", 0o755), whiteout("o/.wh..wh..opq"), // o/ opaque: o/f hidden
		symlink("alias", "real"))
	if err != nil {
		t.Fatal(err)
	}
	lowers := []string{l2, l1}

	cases := []struct {
		name   string
		target string
		err    error  // nil: success
		linkTo string // success: the file the link must share an inode with
	}{
		{name: "found in topmost lower", target: "a/g", linkTo: filepath.Join(l2, "a/g")},
		{name: "found in bottom lower", target: "s", linkTo: filepath.Join(l1, "s")},
		{name: "deleted by a whiteout above", target: "a/f", err: errdefs.ErrInvalidArgument},
		{name: "hidden by an opaque dir above", target: "o/f", err: errdefs.ErrInvalidArgument},
		{name: "through a symlink of a lower", target: "alias/f", err: errdefs.ErrInvalidArgument},
		{name: "nowhere", target: "nope", err: errdefs.ErrInvalidArgument},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, err := applyOverlay(t, base, "c"+string(rune('a'+i)), lowers, hardlink("link", tc.target))
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("Apply = %v, want %v", err, tc.err)
				}
				t.Logf("rejected: %v", err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, want := stat(t, filepath.Join(d, "link")), stat(t, tc.linkTo); got.Ino != want.Ino {
				t.Errorf("link is inode %d, want a hard link to %s (inode %d)", got.Ino, tc.linkTo, want.Ino)
			}
		})
	}

	// A target in the layer itself wins over the lowers and needs none.
	d, err := applyOverlay(t, base, "self", nil, file("s", "mine", 0o644), hardlink("link", "s"))
	if err != nil {
		t.Fatal(err)
	}
	wantFile(t, filepath.Join(d, "link"), "mine")
	// A target deleted by this very layer is not looked for below.
	if _, err := applyOverlay(t, base, "selfdel", nil, whiteout(".wh.s"), hardlink("link", "s")); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("link to a target this layer deleted: %v, want ErrInvalidArgument", err)
	}
}

// TestHardlinkLowerCopy checks the copy made when the lower layer is on
// another filesystem (tmpfs /dev/shm here): same content, mode, owner,
// xattrs and mtime, but a new inode.
func TestHardlinkLowerCopy(t *testing.T) {
	requireRoot(t)
	var shm, tmp unix.Statfs_t
	base := t.TempDir()
	if unix.Statfs("/dev/shm", &shm) != nil || unix.Statfs(base, &tmp) != nil || shm.Fsid == tmp.Fsid {
		msg := "needs /dev/shm on a filesystem other than " + base
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	shmBase, err := os.MkdirTemp("/dev/shm", "archive-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(shmBase) })
	l1, err := applyOverlay(t, shmBase, "l1", nil,
		ent{Name: "bin/tool", Type: tar.TypeReg, Mode: 0o4750, UID: 12, GID: 34, Content: []byte("a setuid tool"),
			Xattrs: map[string]string{"trusted.cap": "x", "user.note": "copied"}},
		ent{Name: "bin/dev", Type: tar.TypeChar, Mode: 0o640, Major: 4, Minor: 5},
		symlink("bin/sl", "tool"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := applyOverlay(t, base, "l2", []string{l1},
		hardlink("copy", "bin/tool"), hardlink("devcopy", "bin/dev"), hardlink("slcopy", "bin/sl"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range [][2]string{{"copy", "bin/tool"}, {"devcopy", "bin/dev"}, {"slcopy", "bin/sl"}} {
		got, want := stat(t, filepath.Join(d, p[0])), stat(t, filepath.Join(l1, p[1]))
		if got.String() != want.String() {
			t.Errorf("%s = %v, want a copy of %v", p[0], got, want)
		}
	}
}
