//go:build linux

// Package fsutil holds the filesystem helpers the snapshotters share: a
// faithful tree copy, disk usage and directory fsync.
package fsutil

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Copy copies the tree at src to dst, which must not exist, preserving
// everything a root filesystem needs: file types (regular files,
// directories, symlinks, character and block devices, FIFOs, sockets),
// permission bits with setuid/setgid/sticky, owners, extended attributes
// (trusted.* and security.* included, so file capabilities survive),
// access and modification times, and hard links between files inside src.
// Symlinks are copied, never followed. ctx is checked between files.
func Copy(ctx context.Context, dst, src string) error {
	c := copier{ctx: ctx, links: map[devIno]string{}}
	return c.copy(dst, src)
}

type devIno struct{ dev, ino uint64 }

type copier struct {
	ctx   context.Context
	links map[devIno]string // first dst path of each multiply linked inode
}

func (c *copier) copy(dst, src string) error {
	if err := c.ctx.Err(); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		return &os.PathError{Op: "lstat", Path: src, Err: err}
	}
	typ := st.Mode & unix.S_IFMT
	if typ != unix.S_IFDIR && st.Nlink > 1 {
		id := devIno{uint64(st.Dev), st.Ino}
		if first, ok := c.links[id]; ok {
			return os.Link(first, dst)
		}
		c.links[id] = dst
	}
	switch typ {
	case unix.S_IFDIR:
		if err := os.Mkdir(dst, 0o700); err != nil {
			return err
		}
		entries, err := os.ReadDir(src)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if err := c.copy(filepath.Join(dst, e.Name()), filepath.Join(src, e.Name())); err != nil {
				return err
			}
		}
	case unix.S_IFREG:
		if err := c.copyFile(dst, src); err != nil {
			return err
		}
	case unix.S_IFLNK:
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		if err := os.Symlink(target, dst); err != nil {
			return err
		}
	case unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO, unix.S_IFSOCK:
		if err := unix.Mknod(dst, typ|0o600, int(st.Rdev)); err != nil {
			return &os.PathError{Op: "mknod", Path: dst, Err: err}
		}
	default:
		return fmt.Errorf("copy %s: unknown file type %#o", src, typ)
	}
	return copyMetadata(dst, src, &st)
}

func (c *copier) copyFile(dst, src string) error {
	in, err := os.OpenFile(src, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	// io.Copy between *os.File uses copy_file_range, which shares extents
	// where the filesystem can (reflinks) and stays in the kernel otherwise.
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return out.Close()
}

// copyMetadata sets dst's owner, mode, xattrs and times from src's stat.
// Order matters: chown clears setuid bits and file capabilities, so mode and
// xattrs come after it, and times come last.
func copyMetadata(dst, src string, st *unix.Stat_t) error {
	if err := unix.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return &os.PathError{Op: "lchown", Path: dst, Err: err}
	}
	isLink := st.Mode&unix.S_IFMT == unix.S_IFLNK
	if !isLink {
		if err := unix.Chmod(dst, st.Mode&0o7777); err != nil {
			return &os.PathError{Op: "chmod", Path: dst, Err: err}
		}
	}
	if err := copyXattrs(dst, src); err != nil {
		return err
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimensat", Path: dst, Err: err}
	}
	return nil
}

func copyXattrs(dst, src string) error {
	names, err := listXattrs(src)
	if err != nil {
		return err
	}
	for _, name := range names {
		val, err := getXattr(src, name)
		if err != nil {
			return err
		}
		if err := unix.Lsetxattr(dst, name, val, 0); err != nil {
			return &os.PathError{Op: "lsetxattr " + name, Path: dst, Err: err}
		}
	}
	return nil
}

func listXattrs(path string) ([]string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Llistxattr(path, buf)
		switch {
		case errors.Is(err, unix.ERANGE):
			buf = make([]byte, len(buf)*4)
			continue
		case errors.Is(err, unix.ENOTSUP):
			return nil, nil
		case err != nil:
			return nil, &os.PathError{Op: "llistxattr", Path: path, Err: err}
		}
		var names []string
		start := 0
		for i := 0; i < n; i++ {
			if buf[i] == 0 {
				if i > start {
					names = append(names, string(buf[start:i]))
				}
				start = i + 1
			}
		}
		return names, nil
	}
}

func getXattr(path, name string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Lgetxattr(path, name, buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, len(buf)*4)
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "lgetxattr " + name, Path: path, Err: err}
		}
		return buf[:n], nil
	}
}

// DiskUsage returns the bytes allocated (st_blocks × 512) and the number of
// inodes of the tree at dir, dir included, counting hard-linked inodes once.
func DiskUsage(ctx context.Context, dir string) (size, inodes int64, err error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, 0, fmt.Errorf("disk usage of %s: %w", dir, &os.PathError{Op: "open", Path: dir, Err: err})
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return 0, 0, fmt.Errorf("disk usage of %s: %w", dir, &os.PathError{Op: "fstat", Path: dir, Err: err})
	}
	du := usage{ctx: ctx, buf: make([]byte, 32<<10)}
	du.add(&st)
	if err := du.dir(fd, dir); err != nil { // closes fd
		return 0, 0, fmt.Errorf("disk usage of %s: %w", dir, err)
	}
	return du.size, du.inodes, nil
}

// usage sums the blocks and inodes of a tree, each multiply linked inode
// once. It works relative to directory fds (fstatat per entry), so the
// kernel does not resolve each entry's full path again.
type usage struct {
	ctx          context.Context
	size, inodes int64
	seen         map[devIno]struct{} // multiply linked inodes counted
	buf          []byte
}

func (u *usage) add(st *unix.Stat_t) {
	if st.Nlink > 1 && st.Mode&unix.S_IFMT != unix.S_IFDIR {
		id := devIno{uint64(st.Dev), st.Ino}
		if _, ok := u.seen[id]; ok {
			return
		}
		if u.seen == nil {
			u.seen = map[devIno]struct{}{}
		}
		u.seen[id] = struct{}{}
	}
	u.size += st.Blocks * 512
	u.inodes++
}

// dir adds the entries of the open directory fd (named path, for errors),
// recursively, and closes fd.
func (u *usage) dir(fd int, path string) error {
	defer unix.Close(fd)
	if err := u.ctx.Err(); err != nil {
		return err
	}
	var names []string
	for {
		n, err := unix.Getdents(fd, u.buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "getdents", Path: path, Err: err}
		}
		if n == 0 {
			break
		}
		_, _, names = unix.ParseDirent(u.buf[:n], -1, names)
	}
	for _, name := range names {
		var st unix.Stat_t
		if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return &os.PathError{Op: "lstat", Path: filepath.Join(path, name), Err: err}
		}
		u.add(&st)
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			continue
		}
		cfd, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return &os.PathError{Op: "open", Path: filepath.Join(path, name), Err: err}
		}
		if err := u.dir(cfd, filepath.Join(path, name)); err != nil {
			return err
		}
	}
	return nil
}

// SyncDir fsyncs the directory dir, making the entries created, renamed or
// removed in it durable.
func SyncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// SyncFS flushes the whole filesystem that holds path (syncfs(2)).
func SyncFS(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", path, err)
	}
	return nil
}
