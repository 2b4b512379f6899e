package archive

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stevedore/stevedore/internal/testutil/testimage"
)

// requireRoot skips without root, except in CI where it fails: Apply needs
// CAP_CHOWN, CAP_MKNOD and CAP_SYS_ADMIN (trusted.* xattrs).
func requireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	msg := "pkg/archive tests need root (CAP_CHOWN, CAP_MKNOD, CAP_SYS_ADMIN for trusted.* xattrs); running as uid " + strconv.Itoa(os.Geteuid())
	if os.Getenv("CI") == "true" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
}

// ent is a tar entry with everything the tests need (testimage.Entry has no
// xattrs nor device numbers).
type ent struct {
	Name     string
	Type     byte
	Mode     int64
	Content  []byte
	Link     string
	UID, GID int
	Major    int64
	Minor    int64
	ModTime  time.Time
	Xattrs   map[string]string
}

var t0 = time.Date(2023, 5, 6, 7, 8, 9, 123456789, time.UTC)

func file(name, content string, mode int64) ent {
	return ent{Name: name, Type: tar.TypeReg, Mode: mode, Content: []byte(content)}
}
func dir(name string, mode int64) ent { return ent{Name: name, Type: tar.TypeDir, Mode: mode} }
func symlink(name, target string) ent {
	return ent{Name: name, Type: tar.TypeSymlink, Mode: 0o777, Link: target}
}
func hardlink(name, target string) ent {
	return ent{Name: name, Type: tar.TypeLink, Mode: 0o644, Link: target}
}
func whiteout(name string) ent { return ent{Name: name, Type: tar.TypeReg, Mode: 0o644} }

// mkTar writes entries as a PAX tar.
func mkTar(tb testing.TB, entries ...ent) []byte {
	tb.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i, e := range entries {
		mt := e.ModTime
		if mt.IsZero() {
			mt = t0.Add(time.Duration(i) * time.Minute)
		}
		h := &tar.Header{
			Name: e.Name, Typeflag: e.Type, Mode: e.Mode, Linkname: e.Link,
			Uid: e.UID, Gid: e.GID, Devmajor: e.Major, Devminor: e.Minor,
			ModTime: mt, Format: tar.FormatPAX,
		}
		if e.Type == tar.TypeReg {
			h.Size = int64(len(e.Content))
		}
		for k, v := range e.Xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(h); err != nil {
			tb.Fatalf("tar header %q: %v", e.Name, err)
		}
		if e.Type == tar.TypeReg {
			if _, err := tw.Write(e.Content); err != nil {
				tb.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// mkLayer builds a compressed layer from entries.
func mkLayer(tb testing.TB, c testimage.Compression, entries ...ent) *testimage.Layer {
	tb.Helper()
	l, err := testimage.FromTar(c, mkTar(tb, entries...))
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

// node is one filesystem entry as observed on disk (or predicted).
type node struct {
	Type         string // "file", "dir", "symlink", "char", "block", "fifo"
	Mode         uint32 // permission bits incl. setuid/setgid/sticky (not for symlinks)
	UID, GID     uint32
	Size         int64  // files only
	SHA256       string // files only
	Link         string // symlink target
	Major, Minor uint32
	Xattrs       map[string]string
	MTime        time.Time // non-directories only
	Ino          uint64    `json:"-"`
}

func (n node) String() string {
	var b strings.Builder
	b.WriteString(n.Type)
	fmt.Fprintf(&b, " mode=%04o uid=%d gid=%d", n.Mode, n.UID, n.GID)
	if n.Type == "file" {
		fmt.Fprintf(&b, " size=%d sha=%.12s", n.Size, n.SHA256)
	}
	if n.Link != "" {
		b.WriteString(" -> " + n.Link)
	}
	if n.Type == "char" || n.Type == "block" {
		fmt.Fprintf(&b, " dev=%d:%d", n.Major, n.Minor)
	}
	if len(n.Xattrs) > 0 {
		keys := make([]string, 0, len(n.Xattrs))
		for k, v := range n.Xattrs {
			keys = append(keys, k+"="+v)
		}
		sort.Strings(keys)
		b.WriteString(" xattrs=" + strings.Join(keys, ","))
	}
	if !n.MTime.IsZero() {
		b.WriteString(" mtime=" + n.MTime.UTC().Format(time.RFC3339Nano))
	}
	return b.String()
}

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// scan walks root without following symlinks and returns every entry below
// it (root itself excluded) by slash-separated relative path.
func scan(tb testing.TB, root string) map[string]node {
	tb.Helper()
	out := map[string]node{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		out[filepath.ToSlash(rel)] = stat(tb, p)
		return nil
	})
	if err != nil {
		tb.Fatalf("scan %s: %v", root, err)
	}
	return out
}

// stat describes the entry at p (not following a symlink).
func stat(tb testing.TB, p string) node {
	tb.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		tb.Fatalf("lstat %s: %v", p, err)
	}
	n := node{Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid, Ino: st.Ino,
		MTime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec).UTC(), Xattrs: listXattrs(tb, p)}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		n.Type = "file"
		b, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		n.Size, n.SHA256 = int64(len(b)), sha(b)
	case unix.S_IFDIR:
		n.Type, n.MTime = "dir", time.Time{}
	case unix.S_IFLNK:
		n.Type, n.Mode = "symlink", 0
		l, err := os.Readlink(p)
		if err != nil {
			tb.Fatal(err)
		}
		n.Link = l
	case unix.S_IFCHR:
		n.Type, n.Major, n.Minor = "char", unix.Major(st.Rdev), unix.Minor(st.Rdev)
	case unix.S_IFBLK:
		n.Type, n.Major, n.Minor = "block", unix.Major(st.Rdev), unix.Minor(st.Rdev)
	case unix.S_IFIFO:
		n.Type = "fifo"
	default:
		n.Type = "other"
	}
	return n
}

func listXattrs(tb testing.TB, p string) map[string]string {
	tb.Helper()
	size, err := unix.Llistxattr(p, nil)
	if err != nil || size == 0 {
		if err != nil && !errors.Is(err, unix.ENOTSUP) {
			tb.Fatalf("llistxattr %s: %v", p, err)
		}
		return nil
	}
	buf := make([]byte, size)
	size, err = unix.Llistxattr(p, buf)
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]string{}
	for _, k := range strings.Split(string(buf[:size]), "\x00") {
		if k == "" || k == "security.selinux" {
			continue
		}
		v := make([]byte, 4096)
		n, err := unix.Lgetxattr(p, k, v)
		if err != nil {
			tb.Fatalf("lgetxattr %s %s: %v", p, k, err)
		}
		out[k] = string(v[:n])
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// diffTrees reports differences between want and got, ignoring inode
// numbers.
func diffTrees(tb testing.TB, what string, want, got map[string]node) {
	tb.Helper()
	var paths []string
	for p := range want {
		paths = append(paths, p)
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	bad := 0
	for _, p := range paths {
		w, wok := want[p]
		g, gok := got[p]
		w.Ino, g.Ino = 0, 0
		switch {
		case !gok:
			tb.Errorf("%s: %s missing; want %v", what, p, w)
		case !wok:
			tb.Errorf("%s: %s unexpected: %v", what, p, g)
		case w.String() != g.String():
			tb.Errorf("%s: %s\n  got  %v\n  want %v", what, p, g, w)
		default:
			continue
		}
		if bad++; bad > 40 {
			tb.Fatalf("%s: too many differences", what)
		}
	}
}
