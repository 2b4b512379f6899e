package archive

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/stevedore/stevedore/pkg/errdefs"
)

const (
	whiteoutPrefix     = ".wh."
	whiteoutMetaPrefix = ".wh..wh."
	whiteoutOpaque     = ".wh..wh..opq"
	opaqueXattr        = "trusted.overlay.opaque"
	paxXattrPrefix     = "SCHILY.xattr."
)

// maxCachedDirs bounds the open parent directory descriptors kept.
const maxCachedDirs = 128

var copyBufs = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// applier holds the state of one Apply.
type applier struct {
	ctx  context.Context
	root int // fd of the target directory
	opts Options

	// The reading pipeline, whose errors classify stream failures; they
	// are written by the pipeline's goroutines: read them only after
	// pipe.close.
	src  *sourceReader
	dec  *decompReader // nil for an uncompressed layer
	m    *meter
	pipe *pipeline

	entries int    // headers read so far
	name    string // current entry's name, for errors

	// dirs caches open parent directories by relative path ("" is not
	// stored: it is root). It is dropped whenever a directory is removed.
	dirs  map[string]int
	stale []int // invalidated fds, closed after the current entry

	// added records every path this layer created or wrote and all their
	// ancestors: in Direct mode for whiteouts and opaque markers, with
	// parallel writers to know which names are new (parallel.go).
	added map[string]struct{}

	parallel bool     // small files go to writers (parallel.go)
	par      *writers // started at the first such file

	dirTimes []dirTime // directory times, set after everything is written

	lowerFDs []int // lazily opened Options.Lowers, -1 until opened

	buf *[]byte
}

type dirTime struct {
	rel string
	ts  [2]unix.Timespec
}

func newApplier(ctx context.Context, root int, opts Options) *applier {
	a := &applier{ctx: ctx, root: root, opts: opts, dirs: make(map[string]int)}
	if opts.Mode == Direct {
		a.added = make(map[string]struct{})
	}
	return a
}

func (a *applier) close() {
	if a.par != nil {
		a.par.stop() // before the directory fds they use are closed
	}
	a.dropDirs()
	a.closeStale()
	for _, fd := range a.lowerFDs {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	unix.Close(a.root)
	if a.buf != nil {
		copyBufs.Put(a.buf)
		a.buf = nil
	}
}

// run reads every entry of the tar and applies it. When it returns, no
// file is in flight.
func (a *applier) run(r io.Reader) error {
	err := a.entriesOf(r)
	if werr := a.drain(); werr != nil {
		return werr // an earlier entry's
	}
	return err
}

func (a *applier) entriesOf(r io.Reader) error {
	tr := tar.NewReader(r)
	for {
		if a.par != nil && a.par.failed.Load() {
			return nil // run returns the writer's error
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return a.streamErr(err, a.entries+1)
		}
		a.entries++
		if a.entries%64 == 0 {
			if err := a.ctx.Err(); err != nil {
				return fmt.Errorf("archive: %w", err)
			}
		}
		a.name = hdr.Name
		if len(a.name) > 512 {
			a.name = a.name[:256] + "…" + a.name[len(a.name)-256:] // keep errors readable
		}
		err = a.entry(hdr, tr)
		a.closeStale()
		if err != nil {
			return err
		}
	}
}

// streamErr classifies an error met while reading entry n (1-based) of the
// layer. The layer's own faults keep their cause's text but not its
// identity (%v): the blob was verified, so a short or garbled stream is the
// layer's fault, and must not look like a cut download (io.ErrUnexpectedEOF),
// which workers retry.
func (a *applier) streamErr(err error, n int) error {
	a.pipe.close()
	switch {
	case a.m.err != nil:
		return a.m.err
	case a.src.err != nil:
		return fmt.Errorf("archive: reading layer: %w", a.src.err)
	case a.dec != nil && a.dec.err != nil:
		derr := a.dec.err
		switch {
		case errors.Is(derr, io.ErrUnexpectedEOF):
			return fmt.Errorf("archive: layer truncated at entry %d: %s stream: %v: %w", n, a.dec.kind, derr, errdefs.ErrInvalidArgument)
		case errors.Is(derr, gzip.ErrChecksum), errors.Is(derr, zstd.ErrCRCMismatch):
			return fmt.Errorf("archive: layer failed its %s checksum: %w: %w", a.dec.kind, derr, errdefs.ErrDataLoss)
		}
		return fmt.Errorf("archive: layer is not valid %s (at entry %d): %v: %w", a.dec.kind, n, derr, errdefs.ErrInvalidArgument)
	case n == 1 && a.entries == 0:
		return fmt.Errorf("archive: layer is not a tar archive: %v: %w", err, errdefs.ErrInvalidArgument)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("archive: layer truncated at entry %d: %v: %w", n, err, errdefs.ErrInvalidArgument)
	}
	return fmt.Errorf("archive: layer is not a valid tar archive at entry %d: %v: %w", n, err, errdefs.ErrInvalidArgument)
}

// invalid returns an error rejecting the current entry.
func (a *applier) invalid(format string, args ...any) error {
	return fmt.Errorf("archive: entry %d %q: %s: %w", a.entries, a.name, fmt.Sprintf(format, args...), errdefs.ErrInvalidArgument)
}

// fsErr wraps a filesystem error of the current entry.
func (a *applier) fsErr(op string, err error) error {
	return entryFSErr(a.entries, a.name, op, err)
}

// entryFSErr wraps a filesystem error of entry n (1-based) named name.
func entryFSErr(n int, name, op string, err error) error {
	if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
		return fmt.Errorf("archive: entry %d %q: %s: %w: %w", n, name, op, err, errdefs.ErrResourceExhausted)
	}
	return fmt.Errorf("archive: entry %d %q: %s: %w", n, name, op, err)
}

// cleanName turns a tar name into a path relative to the root: leading and
// repeated slashes and "." components are dropped, ".." is resolved
// lexically. It reports false if ".." would climb above the root. The root
// itself is "".
func cleanName(name string) (string, bool) {
	if !strings.Contains(name, "..") && !strings.Contains(name, "//") && !strings.Contains(name, "./") &&
		!strings.HasPrefix(name, "/") && !strings.HasSuffix(name, "/") && !strings.HasSuffix(name, "/.") && name != "." {
		return name, true // fast path: already clean
	}
	comps := make([]string, 0, 8)
	for c := range strings.SplitSeq(name, "/") {
		switch c {
		case "", ".":
		case "..":
			if len(comps) == 0 {
				return "", false
			}
			comps = comps[:len(comps)-1]
		default:
			comps = append(comps, c)
		}
	}
	return strings.Join(comps, "/"), true
}

// split returns the parent and the last component of a clean relative path.
func split(rel string) (parent, base string) {
	i := strings.LastIndexByte(rel, '/')
	if i < 0 {
		return "", rel
	}
	return rel[:i], rel[i+1:]
}

func join(parent, base string) string {
	if parent == "" {
		return base
	}
	return parent + "/" + base
}

// entry applies one tar entry.
func (a *applier) entry(hdr *tar.Header, tr io.Reader) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	if strings.IndexByte(hdr.Name, 0) >= 0 || strings.IndexByte(hdr.Linkname, 0) >= 0 {
		return a.invalid("name contains a NUL byte")
	}
	if strings.HasPrefix(hdr.Name, "/") {
		return a.invalid("absolute path: a layer's entries are relative to its root")
	}
	rel, ok := cleanName(hdr.Name)
	if !ok {
		return a.invalid("path escapes the layer root (\"..\")")
	}
	parent, base := split(rel)
	if a.par != nil && (hdr.Typeflag == tar.TypeLink || a.isAdded(rel) ||
		strings.HasPrefix(base, whiteoutPrefix) && a.isAdded(join(parent, strings.TrimPrefix(base, whiteoutPrefix)))) {
		// It may observe or replace a file in flight.
		if err := a.drain(); err != nil {
			return err
		}
	}
	if strings.HasPrefix(base, whiteoutPrefix) {
		return a.whiteout(parent, base, hdr)
	}
	if strings.Contains(rel, "/"+whiteoutMetaPrefix) || strings.HasPrefix(rel, whiteoutMetaPrefix) {
		return nil // aufs metadata (.wh..wh.plnk and the like): not part of the image
	}
	if rel == "" {
		if hdr.Typeflag != tar.TypeDir {
			return a.invalid("the root must be a directory")
		}
		return a.dirMeta(a.root, "", hdr)
	}

	switch hdr.Typeflag {
	case tar.TypeDir, tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse, tar.TypeSymlink, tar.TypeLink,
		tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
	default:
		return a.invalid("unsupported entry type %q", hdr.Typeflag)
	}

	pfd, err := a.parent(parent, true)
	if err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		err = a.mkdir(pfd, rel, base, hdr)
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
		if a.isAsyncFile(rel, hdr) {
			err = a.fileAsync(pfd, hdr, base, tr)
		} else {
			err = a.file(pfd, base, hdr, tr)
		}
	case tar.TypeSymlink:
		err = a.symlink(pfd, base, hdr)
	case tar.TypeLink:
		err = a.hardlink(pfd, rel, base, hdr)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		err = a.mknod(pfd, base, hdr)
	}
	if err != nil {
		return err
	}
	a.markAdded(rel)
	return nil
}

// markAdded records rel and its ancestors as written by this layer (Direct
// mode and parallel writers only).
func (a *applier) markAdded(rel string) {
	if a.added == nil {
		return
	}
	for rel != "" {
		if _, ok := a.added[rel]; ok {
			return
		}
		a.added[rel] = struct{}{}
		rel, _ = split(rel)
	}
}

func (a *applier) isAdded(rel string) bool {
	_, ok := a.added[rel]
	return ok
}

// parent returns an fd of the directory rel ("" is the root), creating
// missing directories (mode 0755, owned by root) if create is set. It never
// follows a symlink: a symlink anywhere on the path rejects the entry. If
// create is false and the directory does not exist it returns -1 and no
// error. The fd is owned by the applier.
func (a *applier) parent(rel string, create bool) (int, error) {
	if rel == "" {
		return a.root, nil
	}
	if fd, ok := a.dirs[rel]; ok {
		return fd, nil
	}
	// A file in flight could be where the path expects a directory.
	if err := a.drain(); err != nil {
		return -1, err
	}
	fd, err := openBeneath(a.root, rel, unix.O_RDONLY|unix.O_DIRECTORY)
	if errors.Is(err, unix.ENOENT) {
		if !create {
			return -1, nil
		}
		fd, err = a.mkdirAll(rel)
	}
	if err != nil {
		return -1, a.parentErr(rel, err)
	}
	a.cacheDir(rel, fd)
	return fd, nil
}

func (a *applier) parentErr(rel string, err error) error {
	switch {
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENOTDIR):
		// Name the offending component (error path only).
		at := ""
		for c := range strings.SplitSeq(rel, "/") {
			at = join(at, c)
			var st unix.Stat_t
			if unix.Fstatat(a.root, at, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
				break
			}
			if st.Mode&unix.S_IFMT == unix.S_IFLNK {
				return a.invalid("parent path goes through symlink %q", at)
			}
			if st.Mode&unix.S_IFMT != unix.S_IFDIR {
				return a.invalid("parent path %q is not a directory", at)
			}
		}
		return a.invalid("parent path %q goes through a symlink or a non-directory", rel)
	case errors.Is(err, unix.EXDEV):
		return a.invalid("parent path %q escapes the layer root", rel)
	}
	return a.fsErr("open parent "+rel, err)
}

// mkdirAll creates the missing directories of rel, one component at a time.
func (a *applier) mkdirAll(rel string) (int, error) {
	fd := a.root
	done := ""
	for c := range strings.SplitSeq(rel, "/") {
		done = join(done, c)
		nfd, err := openBeneath(fd, c, unix.O_RDONLY|unix.O_DIRECTORY)
		if errors.Is(err, unix.ENOENT) {
			if err = unix.Mkdirat(fd, c, 0o755); err == nil || errors.Is(err, unix.EEXIST) {
				created := err == nil
				a.markAdded(done)
				nfd, err = openBeneath(fd, c, unix.O_RDONLY|unix.O_DIRECTORY)
				if err == nil && created {
					if err = unix.Fchmod(nfd, 0o755); err != nil { // whatever the umask
						unix.Close(nfd)
					}
				}
			}
		}
		if fd != a.root {
			unix.Close(fd)
		}
		if err != nil {
			return -1, err
		}
		fd = nfd
	}
	return fd, nil
}

func (a *applier) cacheDir(rel string, fd int) {
	if old, ok := a.dirs[rel]; ok {
		a.stale = append(a.stale, old)
	}
	if len(a.dirs) >= maxCachedDirs {
		a.dropDirs()
	}
	a.dirs[rel] = fd
}

// dropDirs invalidates the parent cache, e.g. after a directory was
// removed. The fds stay open until the current entry is done.
func (a *applier) dropDirs() {
	for rel, fd := range a.dirs {
		a.stale = append(a.stale, fd)
		delete(a.dirs, rel)
	}
}

func (a *applier) closeStale() {
	if len(a.stale) > 0 {
		a.drain() // files in flight may use them; an error is returned by run
	}
	for _, fd := range a.stale {
		unix.Close(fd)
	}
	a.stale = a.stale[:0]
}

// remove deletes base in pfd, recursively if it is a directory.
func (a *applier) remove(pfd int, base string) error {
	if err := a.drain(); err != nil {
		return err
	}
	isDir, err := removeAllAt(pfd, base)
	if isDir {
		a.dropDirs()
	}
	if err != nil {
		return a.fsErr("remove existing "+base, err)
	}
	return nil
}

// replace removes an existing base in pfd before a non-directory is created
// in its place (hard links to it are broken, never written through).
func (a *applier) replace(pfd int, base string) error {
	return a.remove(pfd, base)
}

// whiteout applies ".wh.NAME" or ".wh..wh..opq" found in directory parent.
func (a *applier) whiteout(parent, base string, hdr *tar.Header) error {
	if base == whiteoutOpaque {
		return a.opaque(parent)
	}
	if strings.HasPrefix(base, whiteoutMetaPrefix) {
		return nil // other aufs metadata
	}
	name := strings.TrimPrefix(base, whiteoutPrefix)
	if name == "" || name == "." || name == ".." {
		return a.invalid("whiteout of %q escapes its directory", name)
	}
	target := join(parent, name)
	if a.opts.Mode == OverlayForm {
		pfd, err := a.parent(parent, true)
		if err != nil {
			return err
		}
		err = unix.Mknodat(pfd, name, unix.S_IFCHR, 0)
		if errors.Is(err, unix.EEXIST) {
			return nil // already whited out, or added by this layer: it stays
		}
		if err != nil {
			return a.fsErr("create whiteout", err)
		}
		a.markAdded(target)
		return a.whiteoutMeta(pfd, name, hdr)
	}
	// Direct: delete what the lower layers have at target.
	if a.isAdded(target) {
		return nil
	}
	pfd, err := a.parent(parent, false)
	if err != nil || pfd < 0 {
		return err
	}
	if err := a.remove(pfd, name); err != nil {
		return err
	}
	a.forgetDirTimes(target)
	return nil
}

// whiteoutMeta gives a whiteout device the owner and times of its entry,
// so that the layer directory is reproducible.
func (a *applier) whiteoutMeta(pfd int, name string, hdr *tar.Header) error {
	if err := unix.Fchownat(pfd, name, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return a.fsErr("chown whiteout", err)
	}
	ts := times(hdr)
	if err := unix.UtimesNanoAt(pfd, name, ts[:], unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return a.fsErr("set whiteout times", err)
	}
	return nil
}

// opaque applies ".wh..wh..opq" to directory rel.
func (a *applier) opaque(rel string) error {
	if a.opts.Mode == OverlayForm {
		fd, err := a.parent(rel, true)
		if err != nil {
			return err
		}
		if err := unix.Fsetxattr(fd, opaqueXattr, []byte("y"), 0); err != nil {
			return a.fsErr("set "+opaqueXattr, err)
		}
		return nil
	}
	fd, err := a.parent(rel, false)
	if err != nil || fd < 0 {
		return err
	}
	a.markAdded(rel)
	return a.prune(fd, rel)
}

// prune removes the children of directory rel (open as fd) that this layer
// did not add, recursing into those it kept.
func (a *applier) prune(fd int, rel string) error {
	names, err := readDirNames(fd)
	if err != nil {
		return a.fsErr("read directory "+rel, err)
	}
	for _, n := range names {
		child := join(rel, n)
		if !a.isAdded(child) {
			if err := a.remove(fd, n); err != nil {
				return err
			}
			a.forgetDirTimes(child)
			continue
		}
		cfd, err := unix.Openat(fd, n, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
			continue
		}
		if err != nil {
			return a.fsErr("open "+child, err)
		}
		err = a.prune(cfd, child)
		unix.Close(cfd)
		if err != nil {
			return err
		}
	}
	return nil
}

func (a *applier) forgetDirTimes(rel string) {
	out := a.dirTimes[:0]
	for _, d := range a.dirTimes {
		if d.rel != rel && !strings.HasPrefix(d.rel, rel+"/") {
			out = append(out, d)
		}
	}
	a.dirTimes = out
}

// mkdir creates directory base in pfd, or keeps an existing one (only its
// metadata changes); anything else in the way is removed first.
func (a *applier) mkdir(pfd int, rel, base string, hdr *tar.Header) error {
	err := unix.Mkdirat(pfd, base, 0o700)
	if errors.Is(err, unix.EEXIST) {
		var st unix.Stat_t
		if err = unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			if err = a.replace(pfd, base); err == nil {
				err = unix.Mkdirat(pfd, base, 0o700)
			}
		}
	}
	if err != nil {
		return a.fsErr("mkdir", err)
	}
	fd, err := openNoFollow(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return a.fsErr("open directory", err)
	}
	if err := a.dirMeta(fd, rel, hdr); err != nil {
		unix.Close(fd)
		return err
	}
	a.cacheDir(rel, fd) // its children usually come next
	return nil
}

// dirMeta sets a directory's owner, xattrs and mode now and its times at
// the end.
func (a *applier) dirMeta(fd int, rel string, hdr *tar.Header) error {
	if err := a.fdMeta(fd, hdr); err != nil {
		return err
	}
	a.dirTimes = append(a.dirTimes, dirTime{rel: rel, ts: times(hdr)})
	return nil
}

// fdMeta sets owner, xattrs and mode through an open fd.
func (a *applier) fdMeta(fd int, hdr *tar.Header) error {
	if op, err := setMeta(fd, hdr); err != nil {
		return a.fsErr(op, err)
	}
	return nil
}

// setMeta sets owner, xattrs and mode (in that order: chown clears setuid,
// setgid and file capabilities) through an open fd. On failure it names
// the operation.
func setMeta(fd int, hdr *tar.Header) (op string, err error) {
	if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
		return "chown", err
	}
	for k, v := range xattrs(hdr) {
		if err := unix.Fsetxattr(fd, k, []byte(v), 0); err != nil && !ignorableXattrErr(err) {
			return "set xattr " + k, err
		}
	}
	if err := unix.Fchmod(fd, mode(hdr)); err != nil {
		return "chmod", err
	}
	return "", nil
}

// file writes a regular file.
func (a *applier) file(pfd int, base string, hdr *tar.Header, tr io.Reader) error {
	const flags = unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err := unix.Openat(pfd, base, flags, 0o600)
	if errors.Is(err, unix.EEXIST) {
		if err = a.replace(pfd, base); err == nil {
			fd, err = unix.Openat(pfd, base, flags, 0o600)
		}
	}
	if err != nil {
		return a.fsErr("create", err)
	}
	err = a.writeFile(fd, hdr, tr)
	if cerr := unix.Close(fd); err == nil && cerr != nil {
		err = a.fsErr("close", cerr)
	}
	return err
}

func (a *applier) writeFile(fd int, hdr *tar.Header, tr io.Reader) error {
	buf := a.copyBuf()
	for {
		n := 0
		var rerr error
		for n < len(buf) && rerr == nil {
			var k int
			k, rerr = tr.Read(buf[n:])
			n += k
		}
		if n > 0 {
			if err := writeAll(fd, buf[:n]); err != nil {
				return a.fsErr("write", err)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return a.streamErr(rerr, a.entries)
		}
	}
	if err := a.fdMeta(fd, hdr); err != nil {
		return err
	}
	ts := times(hdr)
	if err := futimens(fd, &ts); err != nil {
		return a.fsErr("set times", err)
	}
	return nil
}

// symlink creates a symbolic link. Its target is stored, never followed.
func (a *applier) symlink(pfd int, base string, hdr *tar.Header) error {
	if hdr.Linkname == "" {
		return a.invalid("symlink with an empty target")
	}
	err := unix.Symlinkat(hdr.Linkname, pfd, base)
	if errors.Is(err, unix.EEXIST) {
		if err = a.replace(pfd, base); err == nil {
			err = unix.Symlinkat(hdr.Linkname, pfd, base)
		}
	}
	if err != nil {
		return a.fsErr("symlink", err)
	}
	return a.nodeMeta(pfd, base, hdr, false)
}

// mknod creates a character or block device or a fifo.
func (a *applier) mknod(pfd int, base string, hdr *tar.Header) error {
	var typ uint32
	switch hdr.Typeflag {
	case tar.TypeChar:
		typ = unix.S_IFCHR
	case tar.TypeBlock:
		typ = unix.S_IFBLK
	default:
		typ = unix.S_IFIFO
	}
	dev := int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))
	err := unix.Mknodat(pfd, base, typ|0o600, dev)
	if errors.Is(err, unix.EEXIST) {
		if err = a.replace(pfd, base); err == nil {
			err = unix.Mknodat(pfd, base, typ|0o600, dev)
		}
	}
	if err != nil {
		return a.fsErr("mknod", err)
	}
	return a.nodeMeta(pfd, base, hdr, true)
}

// nodeMeta sets owner, xattrs, mode (unless a symlink) and times of base in
// pfd without following it.
func (a *applier) nodeMeta(pfd int, base string, hdr *tar.Header, chmod bool) error {
	if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return a.fsErr("chown", err)
	}
	if xa := xattrs(hdr); len(xa) > 0 {
		// No setxattrat(2) in x/sys: go through the parent's fd in /proc,
		// a magic link to exactly that directory; lsetxattr does not
		// follow the last component.
		p := procPath(pfd, base)
		for k, v := range xa {
			if err := unix.Lsetxattr(p, k, []byte(v), 0); err != nil && !ignorableXattrErr(err) {
				return a.fsErr("set xattr "+k, err)
			}
		}
	}
	if chmod {
		if err := fchmodatNoFollow(pfd, base, mode(hdr)); err != nil {
			return a.fsErr("chmod", err)
		}
	}
	ts := times(hdr)
	if err := unix.UtimesNanoAt(pfd, base, ts[:], unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return a.fsErr("set times", err)
	}
	return nil
}

// finishDirs sets the times of the directories of this layer, now that
// nothing more is written into them.
func (a *applier) finishDirs() error {
	for _, d := range a.dirTimes {
		fd := a.root
		if d.rel != "" {
			var err error
			fd, err = openBeneath(a.root, d.rel, unix.O_RDONLY|unix.O_DIRECTORY)
			if err != nil {
				continue // replaced or removed by a later entry
			}
		}
		err := futimens(fd, &d.ts)
		if fd != a.root {
			unix.Close(fd)
		}
		if err != nil {
			return fmt.Errorf("archive: set times of directory %q: %w", d.rel, err)
		}
	}
	return nil
}

// mode returns the permission bits of hdr, setuid, setgid and sticky
// included.
func mode(hdr *tar.Header) uint32 {
	return uint32(hdr.Mode) & 0o7777
}

// times returns atime and mtime for hdr. Like Docker, an access time older
// than the modification time (or absent) is replaced by the latter.
func times(hdr *tar.Header) [2]unix.Timespec {
	at := hdr.AccessTime
	if at.Before(hdr.ModTime) {
		at = hdr.ModTime
	}
	return [2]unix.Timespec{timespec(at), timespec(hdr.ModTime)}
}

func timespec(t time.Time) unix.Timespec {
	return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}

// xattrs returns the extended attributes recorded in hdr's PAX records,
// without trusted.overlay.* (a layer must not forge overlayfs metadata).
func xattrs(hdr *tar.Header) map[string]string {
	var out map[string]string
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, paxXattrPrefix)
		if !ok || name == "" || strings.HasPrefix(name, "trusted.overlay.") {
			continue
		}
		if out == nil {
			out = make(map[string]string)
		}
		out[name] = v
	}
	return out
}

// ignorableXattrErr reports errors meaning "this filesystem or file type
// cannot hold this xattr" (e.g. user.* on a symlink), which, like Docker,
// we skip.
func ignorableXattrErr(err error) bool {
	return errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EPERM)
}
