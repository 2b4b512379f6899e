package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stevedore/stevedore/pkg/errdefs"
)

// outcome of a hostile layer.
type outcome int

const (
	rejected  outcome = iota // Apply fails with errdefs.ErrInvalidArgument
	contained                // Apply succeeds; everything it wrote is inside dir
)

// TestBreakouts applies hostile layers (modelled on containerd's
// pkg/archive TestBreakouts) in both modes and checks that each is rejected
// with ErrInvalidArgument or safely contained, and that nothing outside the
// target directory was created or changed.
//
// Layout per case: base/victim/{hello,sub/deep} is the sentinel, base/dest is
// the target; /etc/passwd is watched too.
func TestBreakouts(t *testing.T) {
	requireRoot(t)
	hello := func(base string) string { return filepath.Join(base, "victim", "hello") }
	victim := func(base string) string { return filepath.Join(base, "victim") }

	cases := []struct {
		name string
		// layer builds the hostile entries; base is the parent of dest.
		layer func(base string) []ent
		// prepare fills dest before the apply (a lower layer's leftovers).
		prepare func(t *testing.T, base, dest string)
		want    outcome
		// check, for contained cases, asserts what was created inside dest.
		check func(t *testing.T, base, dest string, mode Mode)
	}{
		{name: "dotdot file", want: rejected,
			layer: func(string) []ent { return []ent{file("../victim/hello", "pwned", 0o644)} }},
		{name: "dotdot new file", want: rejected,
			layer: func(string) []ent { return []ent{file("../pwned", "pwned", 0o644)} }},
		{name: "dotdot after a dir", want: rejected,
			layer: func(string) []ent { return []ent{dir("a", 0o755), file("a/../../victim/hello", "pwned", 0o644)} }},
		{name: "dotdot dir", want: rejected,
			layer: func(string) []ent { return []ent{dir("../victim/newdir", 0o777)} }},
		{name: "dotdot long PAX name", want: rejected,
			layer: func(string) []ent {
				return []ent{file("a/"+strings.Repeat("b/../", 60)+"../../victim/hello", "pwned", 0o644)}
			}},
		{name: "absolute dotdot", want: rejected,
			layer: func(string) []ent { return []ent{file("/../victim/hello", "pwned", 0o644)} }},
		{name: "absolute path into the victim", want: rejected,
			layer: func(base string) []ent { return []ent{file(hello(base), "pwned", 0o644)} }},
		{name: "absolute etc passwd", want: rejected,
			layer: func(string) []ent { return []ent{file("/etc/passwd", "root::0:0::/:/bin/sh\n", 0o644)} }},
		{name: "absolute dir", want: rejected,
			layer: func(string) []ent { return []ent{dir("/usr", 0o755)} }},
		{name: "root entry as file", want: rejected,
			layer: func(string) []ent { return []ent{file(".", "x", 0o644)} }},
		{name: "symlink parent absolute", want: rejected,
			layer: func(base string) []ent {
				return []ent{symlink("evil", victim(base)), file("evil/hello", "pwned", 0o644)}
			}},
		{name: "symlink parent /etc", want: rejected,
			layer: func(string) []ent {
				return []ent{symlink("evil", "/etc"), file("evil/stevedore-pwned", "pwned", 0o644)}
			}},
		{name: "symlink parent relative", want: rejected,
			layer: func(string) []ent {
				return []ent{symlink("evil", "../victim"), file("evil/hello", "pwned", 0o644)}
			}},
		{name: "symlink parent to root of host", want: rejected,
			layer: func(string) []ent {
				return []ent{dir("a", 0o755), symlink("a/up", "../../../../../../../../.."),
					file("a/up/tmp/stevedore-pwned", "pwned", 0o644)}
			}},
		{name: "symlink parent pointing inside", want: rejected,
			layer: func(string) []ent {
				return []ent{dir("real", 0o755), symlink("alias", "real"), file("alias/f", "x", 0o644)}
			}},
		{name: "symlink parent of a dir entry", want: rejected,
			layer: func(base string) []ent { return []ent{symlink("evil", victim(base)), dir("evil/sub/new", 0o777)} }},
		{name: "symlink parent left by a lower layer", want: rejected,
			prepare: func(t *testing.T, base, dest string) { mustSymlink(t, victim(base), filepath.Join(dest, "evil")) },
			layer:   func(string) []ent { return []ent{file("evil/hello", "pwned", 0o644)} }},
		{name: "symlink through symlink", want: rejected,
			layer: func(base string) []ent {
				return []ent{symlink("evil", victim(base)), symlink("evil/hello", "/etc/shadow")}
			}},
		{name: "device through symlink parent", want: rejected,
			layer: func(base string) []ent {
				return []ent{symlink("evil", victim(base)),
					{Name: "evil/null", Type: tar.TypeChar, Mode: 0o666, Major: 1, Minor: 3}}
			}},
		{name: "fifo through relative symlink parent", want: rejected,
			layer: func(string) []ent {
				return []ent{symlink("evil", "../victim/sub"), {Name: "evil/fifo", Type: tar.TypeFifo, Mode: 0o666}}
			}},
		{name: "file replaces symlink to outside file", want: contained,
			layer: func(base string) []ent {
				return []ent{symlink("evil", hello(base)), {Name: "evil", Type: tar.TypeReg, Mode: 0o4777, Content: []byte("pwned"), UID: 1234}}
			},
			check: func(t *testing.T, base, dest string, mode Mode) {
				wantFile(t, filepath.Join(dest, "evil"), "pwned")
				if n := stat(t, filepath.Join(dest, "evil")); n.Mode != 0o4777 || n.UID != 1234 {
					t.Errorf("evil: %v, want mode 4777 uid 1234", n)
				}
			}},
		{name: "dir replaces symlink to outside dir", want: contained,
			layer: func(base string) []ent {
				return []ent{symlink("evil", victim(base)), {Name: "evil", Type: tar.TypeDir, Mode: 0o777, UID: 99}}
			},
			check: func(t *testing.T, base, dest string, mode Mode) {
				if n := stat(t, filepath.Join(dest, "evil")); n.Type != "dir" || n.Mode != 0o777 || n.UID != 99 {
					t.Errorf("evil: %v, want dir 0777 uid 99", n)
				}
			}},
		{name: "symlink metadata is not followed", want: contained,
			layer: func(base string) []ent {
				return []ent{{Name: "evil", Type: tar.TypeSymlink, Link: hello(base), Mode: 0o4777, UID: 4321, GID: 4321,
					ModTime: time.Unix(1, 0), Xattrs: map[string]string{"trusted.pwned": "1"}}}
			},
			check: func(t *testing.T, base, dest string, mode Mode) {
				n := stat(t, filepath.Join(dest, "evil"))
				if n.Type != "symlink" || n.Link != hello(base) || n.UID != 4321 || !n.MTime.Equal(time.Unix(1, 0)) || n.Xattrs["trusted.pwned"] != "1" {
					t.Errorf("evil: %v, want symlink uid 4321 mtime 1s trusted.pwned=1", n)
				}
			}},
		{name: "hardlink to absolute /etc/passwd", want: rejected,
			layer: func(string) []ent { return []ent{hardlink("passwd", "/etc/passwd")} }},
		{name: "hardlink to absolute victim", want: rejected,
			layer: func(base string) []ent { return []ent{hardlink("x", hello(base))} }},
		{name: "hardlink dotdot", want: rejected,
			layer: func(string) []ent { return []ent{hardlink("x", "../victim/hello")} }},
		{name: "hardlink dotdot deep", want: rejected,
			layer: func(string) []ent { return []ent{dir("a", 0o755), hardlink("a/x", "a/../../victim/hello")} }},
		{name: "hardlink through symlink parent", want: rejected,
			layer: func(base string) []ent { return []ent{symlink("evil", victim(base)), hardlink("x", "evil/hello")} }},
		{name: "hardlink to symlink pointing out (absolute)", want: rejected,
			layer: func(base string) []ent {
				return []ent{symlink("evil", hello(base)), {Name: "x", Type: tar.TypeLink, Link: "evil", Mode: 0o777}}
			}},
		{name: "hardlink to symlink pointing out (relative)", want: rejected,
			layer: func(string) []ent {
				return []ent{dir("d", 0o755), symlink("d/evil", "../../victim/hello"), hardlink("x", "d/evil")}
			}},
		{name: "hardlink named through symlink parent", want: rejected,
			layer: func(base string) []ent {
				return []ent{file("f", "x", 0o644), symlink("evil", victim(base)), hardlink("evil/hello", "f")}
			}},
		{name: "hardlink to a directory", want: rejected,
			layer: func(string) []ent { return []ent{dir("d", 0o755), hardlink("x", "d")} }},
		{name: "hardlink to root", want: rejected,
			layer: func(string) []ent { return []ent{hardlink("x", "/")} }},
		{name: "hardlink then overwrite breaks the link", want: contained,
			layer: func(string) []ent {
				return []ent{file("a", "original", 0o644), hardlink("b", "a"), file("b", "new", 0o600)}
			},
			check: func(t *testing.T, base, dest string, mode Mode) {
				wantFile(t, filepath.Join(dest, "a"), "original")
				wantFile(t, filepath.Join(dest, "b"), "new")
			}},
		{name: "whiteout dotdot", want: rejected,
			layer: func(string) []ent { return []ent{whiteout("../.wh.victim")} }},
		{name: "whiteout dotdot deep", want: rejected,
			layer: func(string) []ent { return []ent{whiteout("a/../../.wh.victim")} }},
		{name: "whiteout of dotdot", want: rejected,
			layer: func(string) []ent { return []ent{whiteout(".wh..."), whiteout("a/.wh...")} }},
		{name: "whiteout through symlink parent", want: rejected,
			layer: func(base string) []ent { return []ent{symlink("evil", victim(base)), whiteout("evil/.wh.hello")} }},
		{name: "whiteout through symlink left by a lower layer", want: rejected,
			prepare: func(t *testing.T, base, dest string) { mustSymlink(t, victim(base), filepath.Join(dest, "evil")) },
			layer:   func(string) []ent { return []ent{whiteout("evil/.wh.sub")} }},
		{name: "opaque through symlink parent", want: rejected,
			layer: func(base string) []ent { return []ent{symlink("evil", victim(base)), whiteout("evil/.wh..wh..opq")} }},
		{name: "whiteout of a symlink removes only the symlink", want: contained,
			prepare: func(t *testing.T, base, dest string) { mustSymlink(t, victim(base), filepath.Join(dest, "evil")) },
			layer:   func(string) []ent { return []ent{whiteout(".wh.evil")} },
			check: func(t *testing.T, base, dest string, mode Mode) {
				_, err := os.Lstat(filepath.Join(dest, "evil"))
				if mode == Direct && !errors.Is(err, os.ErrNotExist) {
					t.Errorf("evil still exists (err %v)", err)
				}
				if mode == OverlayForm && err != nil {
					// The symlink was already in the layer's own dir: it stays.
					t.Errorf("evil: %v", err)
				}
			}},
		{name: "opaque dir with symlink child removes only the symlink", want: contained,
			prepare: func(t *testing.T, base, dest string) {
				if err := os.Mkdir(filepath.Join(dest, "d"), 0o755); err != nil {
					t.Fatal(err)
				}
				mustSymlink(t, victim(base), filepath.Join(dest, "d", "evil"))
			},
			layer: func(string) []ent { return []ent{dir("d", 0o755), whiteout("d/.wh..wh..opq")} },
			check: func(t *testing.T, base, dest string, mode Mode) {
				_, err := os.Lstat(filepath.Join(dest, "d", "evil"))
				if mode == Direct && !errors.Is(err, os.ErrNotExist) {
					t.Errorf("d/evil still exists (err %v)", err)
				}
				if mode == OverlayForm {
					if err != nil {
						t.Errorf("d/evil: %v", err)
					}
					if x := stat(t, filepath.Join(dest, "d")).Xattrs; x[opaqueXattr] != "y" {
						t.Errorf("d xattrs = %v, want %s=y", x, opaqueXattr)
					}
				}
			}},
		{name: "trusted.overlay xattrs are not forged", want: contained,
			layer: func(base string) []ent {
				return []ent{{Name: "d", Type: tar.TypeDir, Mode: 0o755, Xattrs: map[string]string{
					"trusted.overlay.redirect": hello(base), "trusted.overlay.opaque": "y", "user.ok": "1"}}}
			},
			check: func(t *testing.T, base, dest string, mode Mode) {
				x := stat(t, filepath.Join(dest, "d")).Xattrs
				if len(x) != 1 || x["user.ok"] != "1" {
					t.Errorf("d xattrs = %v, want only user.ok=1", x)
				}
			}},
	}

	for _, mode := range []Mode{Direct, OverlayForm} {
		for _, tc := range cases {
			t.Run(mode.String()+"/"+tc.name, func(t *testing.T) {
				base := t.TempDir()
				dest := filepath.Join(base, "dest")
				mkSentinel(t, base)
				if err := os.Mkdir(dest, 0o755); err != nil {
					t.Fatal(err)
				}
				if tc.prepare != nil {
					tc.prepare(t, base, dest)
				}
				before := scanOutside(t, base)
				etcBefore := stat(t, "/etc/passwd")
				var etcSt0 unix.Stat_t
				_ = unix.Stat("/etc/passwd", &etcSt0)

				opts := Options{Mode: mode}
				if mode == OverlayForm {
					opts.Lowers = []string{} // a base layer: no parents
				}
				_, err := Apply(context.Background(), dest, bytes.NewReader(mkTar(t, tc.layer(base)...)), opts)
				switch tc.want {
				case rejected:
					switch {
					case !errors.Is(err, errdefs.ErrInvalidArgument):
						t.Errorf("Apply = %v, want an error wrapping ErrInvalidArgument", err)
					case !strings.Contains(err.Error(), "entry "):
						t.Errorf("error %q does not name the entry", err)
					default:
						t.Logf("rejected: %v", err)
					}
				case contained:
					if err != nil {
						t.Errorf("Apply = %v, want success (contained)", err)
					} else if tc.check != nil {
						tc.check(t, base, dest, mode)
					}
				}

				diffTrees(t, "outside dest", before, scanOutside(t, base))
				etcAfter := stat(t, "/etc/passwd")
				var etcSt1 unix.Stat_t
				_ = unix.Stat("/etc/passwd", &etcSt1)
				if etcBefore.String() != etcAfter.String() || etcSt0.Nlink != etcSt1.Nlink || etcSt0.Ctim != etcSt1.Ctim {
					t.Errorf("/etc/passwd changed: %v nlink %d -> %v nlink %d", etcBefore, etcSt0.Nlink, etcAfter, etcSt1.Nlink)
				}
				if _, err := os.Lstat("/etc/stevedore-pwned"); err == nil {
					os.Remove("/etc/stevedore-pwned")
					t.Errorf("/etc/stevedore-pwned was created")
				}
				if _, err := os.Lstat("/tmp/stevedore-pwned"); err == nil {
					os.Remove("/tmp/stevedore-pwned")
					t.Errorf("/tmp/stevedore-pwned was created")
				}
			})
		}
	}
}

// mkSentinel creates base/victim with a file, a subdir and fixed times.
func mkSentinel(t *testing.T, base string) {
	t.Helper()
	v := filepath.Join(base, "victim")
	for _, d := range []string{v, filepath.Join(v, "sub")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{filepath.Join(v, "hello"), filepath.Join(v, "sub", "deep")} {
		if err := os.WriteFile(f, []byte("hello"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, p := range []string{filepath.Join(v, "hello"), filepath.Join(v, "sub", "deep"), filepath.Join(v, "sub"), v} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
}

// scanOutside describes everything under base except dest's contents,
// including directory mtimes and the entry count of base.
func scanOutside(t *testing.T, base string) map[string]node {
	t.Helper()
	out := map[string]node{}
	for p, n := range scan(t, base) {
		if p == "dest" || strings.HasPrefix(p, "dest/") {
			continue
		}
		if n.Type == "dir" {
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(base, p), &st); err != nil {
				t.Fatal(err)
			}
			n.MTime = time.Unix(st.Mtim.Sec, st.Mtim.Nsec)
		}
		out[p] = n
	}
	return out
}

func wantFile(t *testing.T, p, content string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Errorf("read %s: %v", p, err)
		return
	}
	if string(b) != content {
		t.Errorf("%s = %q, want %q", p, b, content)
	}
	if fi, err := os.Lstat(p); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("%s is not a regular file: %v", p, err)
	}
}

func mustSymlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}
