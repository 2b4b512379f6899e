//go:build linux

package fsutil

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestCopyPreservesEverything(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("TestCopyPreservesEverything needs root (chown, mknod, trusted xattrs)")
		}
		t.Skip("needs root")
	}
	src := filepath.Join(t.TempDir(), "src")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	p := func(name string) string { return filepath.Join(src, name) }
	must(os.MkdirAll(p("dir/sub"), 0o755))
	must(os.WriteFile(p("dir/file"), []byte("content"), 0o644))
	must(os.WriteFile(p("setuid"), bytes.Repeat([]byte("x"), 3<<20), 0o755))
	must(os.Link(p("dir/file"), p("hardlink")))
	must(os.Symlink("/etc/passwd", p("abs-link")))
	must(os.Symlink("../nowhere", p("dir/dangling")))
	must(unix.Mknod(p("null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(unix.Mknod(p("blk"), unix.S_IFBLK|0o600, int(unix.Mkdev(7, 0))))
	must(unix.Mkfifo(p("fifo"), 0o640))
	must(unix.Mknod(p("sock"), unix.S_IFSOCK|0o755, 0))
	must(os.Lchown(p("setuid"), 1000, 1001))
	must(os.Lchown(p("abs-link"), 1002, 1003))
	must(unix.Chmod(p("setuid"), 0o4755))
	must(unix.Chmod(p("dir/sub"), 0o1750))
	must(unix.Lsetxattr(p("dir/file"), "user.note", []byte("hello"), 0))
	must(unix.Lsetxattr(p("dir/sub"), "trusted.overlay.opaque", []byte("y"), 0))
	must(unix.Lsetxattr(p("abs-link"), "trusted.link", []byte("on a symlink"), 0))
	old := time.Date(2001, 2, 3, 4, 5, 6, 789, time.UTC)
	for _, f := range []string{"dir/file", "dir/sub", "dir", "abs-link", "null", "fifo"} {
		ts := []unix.Timespec{unix.NsecToTimespec(old.UnixNano()), unix.NsecToTimespec(old.Add(time.Hour).UnixNano())}
		must(unix.UtimesNanoAt(unix.AT_FDCWD, p(f), ts, unix.AT_SYMLINK_NOFOLLOW))
	}

	dst := filepath.Join(t.TempDir(), "dst")
	if err := Copy(t.Context(), dst, src); err != nil {
		t.Fatal(err)
	}
	err := filepath.Walk(src, func(path string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		var a, b unix.Stat_t
		must(unix.Lstat(path, &a))
		if err := unix.Lstat(filepath.Join(dst, rel), &b); err != nil {
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		if a.Mode != b.Mode || a.Uid != b.Uid || a.Gid != b.Gid || a.Rdev != b.Rdev || a.Size != b.Size {
			t.Errorf("%s: mode %o/%o uid %d/%d gid %d/%d rdev %d/%d size %d/%d", rel, a.Mode, b.Mode, a.Uid, b.Uid, a.Gid, b.Gid, a.Rdev, b.Rdev, a.Size, b.Size)
		}
		// (atimes are not compared: the copy's reads update src's.)
		if a.Mtim != b.Mtim {
			t.Errorf("%s: mtime %v, want %v", rel, b.Mtim, a.Mtim)
		}
		xa, _ := listXattrs(path)
		xb, _ := listXattrs(filepath.Join(dst, rel))
		if len(xa) != len(xb) {
			t.Errorf("%s: xattrs %v, want %v", rel, xb, xa)
		}
		for _, x := range xa {
			va, _ := getXattr(path, x)
			vb, err := getXattr(filepath.Join(dst, rel), x)
			if err != nil || !bytes.Equal(va, vb) {
				t.Errorf("%s: xattr %s = %q, %v; want %q", rel, x, vb, err, va)
			}
		}
		return nil
	})
	must(err)
	var f, h unix.Stat_t
	must(unix.Lstat(filepath.Join(dst, "dir/file"), &f))
	must(unix.Lstat(filepath.Join(dst, "hardlink"), &h))
	if f.Ino != h.Ino || f.Nlink != 2 {
		t.Errorf("hard link not preserved: inodes %d, %d, nlink %d", f.Ino, h.Ino, f.Nlink)
	}
	if target, err := os.Readlink(filepath.Join(dst, "abs-link")); err != nil || target != "/etc/passwd" {
		t.Errorf("symlink = %q, %v", target, err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "setuid")); err != nil || len(b) != 3<<20 {
		t.Errorf("big file: %d bytes, %v", len(b), err)
	}
	size, inodes, err := DiskUsage(t.Context(), dst)
	if err != nil || size < 3<<20 || inodes != 11 {
		t.Errorf("DiskUsage = %d bytes, %d inodes, %v; want ≥ 3 MiB, 11 inodes", size, inodes, err)
	}
	if _, _, err := DiskUsage(t.Context(), dst+"-missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("DiskUsage of a missing dir = %v, want fs.ErrNotExist", err)
	}
}
