// Package fstree records a directory tree entry by entry (path, type, mode,
// owner, size, content hash, link target, xattrs, mtime) so tests can
// compare two trees, e.g. a mounted snapshot with a reference flattening.
package fstree

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Entry is one file system entry.
type Entry struct {
	Path   string
	Type   string // file, dir, symlink, char, block, fifo, socket
	Mode   fs.FileMode
	UID    uint32
	GID    uint32
	Size   int64
	SHA256 string
	Link   string
	Xattrs map[string]string
	// MTime is the modification time in nanoseconds (not set for dirs,
	// whose times depend on how the tree was built).
	MTime int64
	Rdev  uint64
}

func (e Entry) String() string {
	return fmt.Sprintf("%s %s %v %d:%d size=%d sha=%.12s link=%q rdev=%d mtime=%d xattrs=%v",
		e.Path, e.Type, e.Mode, e.UID, e.GID, e.Size, e.SHA256, e.Link, e.Rdev, e.MTime, e.Xattrs)
}

// Read records every entry under root (root itself excluded), keyed by its
// path relative to root. Extended attributes in the trusted.overlay.
// namespace (overlay's own bookkeeping) are left out.
func Read(root string) (map[string]Entry, error) {
	out := map[string]Entry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		e := Entry{Path: rel, Mode: fi.Mode(), UID: st.Uid, GID: st.Gid}
		switch {
		case fi.Mode().IsRegular():
			e.Type, e.Size = "file", fi.Size()
			sum, err := hashFile(p)
			if err != nil {
				return err
			}
			e.SHA256 = sum
		case fi.IsDir():
			e.Type = "dir"
		case fi.Mode()&fs.ModeSymlink != 0:
			e.Type = "symlink"
			if e.Link, err = os.Readlink(p); err != nil {
				return err
			}
		case fi.Mode()&fs.ModeCharDevice != 0:
			e.Type, e.Rdev = "char", st.Rdev
		case fi.Mode()&fs.ModeDevice != 0:
			e.Type, e.Rdev = "block", st.Rdev
		case fi.Mode()&fs.ModeNamedPipe != 0:
			e.Type = "fifo"
		case fi.Mode()&fs.ModeSocket != 0:
			e.Type = "socket"
		}
		if !fi.IsDir() {
			e.MTime = st.Mtim.Nano()
		}
		if e.Xattrs, err = xattrs(p); err != nil {
			return err
		}
		out[rel] = e
		return nil
	})
	return out, err
}

func hashFile(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func xattrs(p string) (map[string]string, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		if err == unix.ENOTSUP {
			return nil, nil
		}
		return nil, fmt.Errorf("list xattrs of %s: %w", p, err)
	}
	var out map[string]string
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" || strings.HasPrefix(name, "trusted.overlay.") {
			continue
		}
		val := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, name, val)
		if err != nil {
			return nil, fmt.Errorf("xattr %s of %s: %w", name, p, err)
		}
		if out == nil {
			out = map[string]string{}
		}
		out[name] = string(val[:m])
	}
	return out, nil
}

// Diff returns the differences between want and got, one line each, sorted.
func Diff(want, got map[string]Entry) []string {
	var d []string
	for p, w := range want {
		g, ok := got[p]
		if !ok {
			d = append(d, "missing: "+w.String())
			continue
		}
		if w.String() != g.String() {
			d = append(d, "differs:\n  want "+w.String()+"\n  got  "+g.String())
		}
	}
	for p, g := range got {
		if _, ok := want[p]; !ok {
			d = append(d, "unexpected: "+g.String())
		}
	}
	sort.Strings(d)
	return d
}
