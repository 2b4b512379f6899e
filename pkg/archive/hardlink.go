package archive

import (
	"archive/tar"
	"errors"
	"fmt"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

type lookupState int

const (
	missing lookupState = iota // not in this layer: look further down
	found
	hidden // deleted or shadowed by this layer: do not look further down
)

// lookupResult is where a hard link target was found in one layer.
type lookupResult struct {
	state  lookupState
	opaque bool // an opaque directory on the path hides the layers below
	pfd    int  // found: the target's parent directory; caller closes it unless it is the layer root
	base   string
	st     unix.Stat_t
}

// hardlink creates base in pfd as a hard link to the entry named by
// hdr.Linkname: in this layer (the whole root filesystem in Direct mode) or,
// in overlay form, in Options.Lowers.
func (a *applier) hardlink(pfd int, rel, base string, hdr *tar.Header) error {
	target, ok := cleanName(hdr.Linkname)
	switch {
	case strings.HasPrefix(hdr.Linkname, "/"):
		return a.invalid("hard link target %q is an absolute path: a layer's entries are relative to its root", hdr.Linkname)
	case !ok:
		return a.invalid("hard link target %q escapes the layer root", hdr.Linkname)
	case target == "":
		return a.invalid("hard link to the root directory")
	case target == rel:
		return nil // a link to itself: already there
	}

	overlay := a.opts.Mode == OverlayForm
	res, err := a.lookup(a.root, target, overlay)
	if err != nil {
		return err
	}
	switch {
	case res.state == found:
		defer a.closeLookup(a.root, res)
		return a.link(res, pfd, base, false)
	case res.state == hidden:
		return a.invalid("hard link target %q was deleted or shadowed in this layer", target)
	case !overlay || res.opaque:
		return a.invalid("hard link target %q not found", target)
	case a.opts.Lowers == nil:
		return fmt.Errorf("archive: entry %d %q: hard link to %q: %w", a.entries, a.name, target, ErrNeedsLowers)
	}
	for i := range a.opts.Lowers {
		lfd, err := a.lowerFD(i)
		if err != nil {
			return err
		}
		res, err := a.lookup(lfd, target, true)
		if err != nil {
			return err
		}
		if res.state == found {
			defer a.closeLookup(lfd, res)
			return a.link(res, pfd, base, true)
		}
		if res.state == hidden || res.opaque {
			break
		}
	}
	return a.invalid("hard link target %q not found in this layer nor in its %d lower layers", target, len(a.opts.Lowers))
}

func (a *applier) closeLookup(root int, res lookupResult) {
	if res.pfd != root {
		unix.Close(res.pfd)
	}
}

func (a *applier) lowerFD(i int) (int, error) {
	if a.lowerFDs == nil {
		a.lowerFDs = make([]int, len(a.opts.Lowers))
		for j := range a.lowerFDs {
			a.lowerFDs[j] = -1
		}
	}
	if a.lowerFDs[i] < 0 {
		fd, err := openDir(a.opts.Lowers[i])
		if err != nil {
			return -1, a.fsErr("open lower layer "+a.opts.Lowers[i], err)
		}
		a.lowerFDs[i] = fd
	}
	return a.lowerFDs[i], nil
}

// isWhiteout reports an overlayfs whiteout: a 0/0 character device.
func isWhiteout(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

// lookup finds target in the layer rooted at root without following any
// symlink. With overlay set, whiteouts hide and opaque directories are
// reported. A symlink on the path, a directory or a symlink pointing out of
// the root as the target reject the entry.
func (a *applier) lookup(root int, target string, overlay bool) (lookupResult, error) {
	var r lookupResult
	parent, base := split(target)
	fd := root
	closeFD := func() {
		if fd != root {
			unix.Close(fd)
		}
	}
	if parent != "" {
		for c := range strings.SplitSeq(parent, "/") {
			var st unix.Stat_t
			if err := unix.Fstatat(fd, c, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				closeFD()
				if errors.Is(err, unix.ENOENT) {
					return r, nil
				}
				return r, a.fsErr("look up hard link target "+target, err)
			}
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFDIR:
			case unix.S_IFLNK:
				closeFD()
				return r, a.invalid("hard link target %q goes through a symlink", target)
			default: // a whiteout or a file where a directory should be
				closeFD()
				r.state = hidden
				return r, nil
			}
			nfd, err := openBeneath(fd, c, unix.O_RDONLY|unix.O_DIRECTORY)
			closeFD()
			if err != nil {
				if errors.Is(err, unix.ELOOP) {
					return r, a.invalid("hard link target %q goes through a symlink", target)
				}
				return r, a.fsErr("look up hard link target "+target, err)
			}
			fd = nfd
			if overlay && isOpaque(fd) {
				r.opaque = true
			}
		}
	}
	if err := unix.Fstatat(fd, base, &r.st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		closeFD()
		if errors.Is(err, unix.ENOENT) {
			return r, nil
		}
		return r, a.fsErr("look up hard link target "+target, err)
	}
	switch {
	case overlay && isWhiteout(&r.st):
		closeFD()
		r.state = hidden
		return r, nil
	case r.st.Mode&unix.S_IFMT == unix.S_IFDIR:
		closeFD()
		return r, a.invalid("hard link target %q is a directory", target)
	case r.st.Mode&unix.S_IFMT == unix.S_IFLNK:
		dest, err := readlinkat(fd, base)
		if err != nil {
			closeFD()
			return r, a.fsErr("read symlink "+target, err)
		}
		if _, ok := cleanName(join(parent, dest)); !ok || path.IsAbs(dest) {
			closeFD()
			return r, a.invalid("hard link target %q is a symlink pointing outside the layer (%q)", target, dest)
		}
	}
	r.state, r.pfd, r.base = found, fd, base
	return r, nil
}

func isOpaque(fd int) bool {
	var v [2]byte
	n, err := unix.Fgetxattr(fd, opaqueXattr, v[:])
	return err == nil && n == 1 && v[0] == 'y'
}

func readlinkat(dirfd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// link creates base in pfd as a hard link to the lookup result. With
// allowCopy, a target on another filesystem is copied instead.
func (a *applier) link(src lookupResult, pfd int, base string, allowCopy bool) error {
	err := unix.Linkat(src.pfd, src.base, pfd, base, 0)
	if errors.Is(err, unix.EEXIST) {
		if err = a.replace(pfd, base); err == nil {
			err = unix.Linkat(src.pfd, src.base, pfd, base, 0)
		}
	}
	if errors.Is(err, unix.EXDEV) && allowCopy {
		return a.copyNode(src, pfd, base)
	}
	if err != nil {
		return a.fsErr("hard link", err)
	}
	return nil
}

// copyNode copies a lower layer's file to base in pfd, with its mode,
// owner, xattrs and times.
func (a *applier) copyNode(src lookupResult, pfd int, base string) error {
	st := &src.st
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if err := a.copyFile(src, pfd, base); err != nil {
			return err
		}
	case unix.S_IFLNK:
		dest, err := readlinkat(src.pfd, src.base)
		if err == nil {
			err = unix.Symlinkat(dest, pfd, base)
		}
		if err != nil {
			return a.fsErr("copy symlink from lower layer", err)
		}
	default:
		if err := unix.Mknodat(pfd, base, st.Mode&unix.S_IFMT|0o600, int(st.Rdev)); err != nil {
			return a.fsErr("copy node from lower layer", err)
		}
	}
	if err := unix.Fchownat(pfd, base, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return a.fsErr("chown", err)
	}
	if err := copyXattrs(procPath(src.pfd, src.base), procPath(pfd, base)); err != nil {
		return a.fsErr("copy xattrs", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		if err := fchmodatNoFollow(pfd, base, st.Mode&0o7777); err != nil {
			return a.fsErr("chmod", err)
		}
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return a.fsErr("set times", err)
	}
	return nil
}

func (a *applier) copyFile(src lookupResult, pfd int, base string) error {
	sfd, err := openNoFollow(src.pfd, src.base, unix.O_RDONLY)
	if err != nil {
		return a.fsErr("open lower layer file", err)
	}
	defer unix.Close(sfd)
	dfd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return a.fsErr("create copy", err)
	}
	err = copyFD(dfd, sfd, a.copyBuf())
	if cerr := unix.Close(dfd); err == nil {
		err = cerr
	}
	if err != nil {
		return a.fsErr("copy from lower layer", err)
	}
	return nil
}

func (a *applier) copyBuf() []byte {
	if a.buf == nil {
		a.buf = copyBufs.Get().(*[]byte)
	}
	return *a.buf
}

// copyFD copies sfd to dfd, with copy_file_range when the kernel can.
func copyFD(dfd, sfd int, buf []byte) error {
	for {
		n, err := unix.CopyFileRange(sfd, nil, dfd, nil, 1<<30, 0)
		if err == nil && n == 0 {
			return nil
		}
		if err == nil || errors.Is(err, unix.EINTR) {
			continue
		}
		if !errors.Is(err, unix.EXDEV) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EOPNOTSUPP) {
			return err
		}
		break
	}
	for {
		n, err := unix.Read(sfd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if err := writeAll(dfd, buf[:n]); err != nil {
			return err
		}
	}
}

// copyXattrs copies the xattrs of src to dst (paths not followed at the
// last component), except trusted.overlay.* ones.
func copyXattrs(src, dst string) error {
	size, err := unix.Llistxattr(src, nil)
	if err != nil || size == 0 {
		if ignorableXattrErr(err) {
			return nil
		}
		return err
	}
	list := make([]byte, size)
	size, err = unix.Llistxattr(src, list)
	if err != nil {
		return err
	}
	for name := range strings.SplitSeq(string(list[:size]), "\x00") {
		if name == "" || strings.HasPrefix(name, "trusted.overlay.") {
			continue
		}
		vsize, err := unix.Lgetxattr(src, name, nil)
		if err != nil {
			return err
		}
		val := make([]byte, vsize)
		if vsize, err = unix.Lgetxattr(src, name, val); err != nil {
			return err
		}
		if err := unix.Lsetxattr(dst, name, val[:vsize], 0); err != nil && !ignorableXattrErr(err) {
			return err
		}
	}
	return nil
}
