// Package archive applies OCI image layers to directories, fast and safely.
//
// A layer is a tar stream, optionally compressed with gzip or zstd (detected
// from its magic bytes). [Apply] extracts one layer into a directory in one of
// two forms:
//
//   - [OverlayForm]: the layer is written into its own, normally empty,
//     directory as an overlayfs upper/lower layer. Whiteouts become 0/0
//     character devices and opaque directories get the
//     "trusted.overlay.opaque=y" xattr; nothing below the directory is
//     deleted. Layers can be applied in parallel because a layer needs its
//     parents only to resolve a hard link whose target lives in a parent
//     layer ([ErrNeedsLowers], [Options.Lowers]).
//   - [Direct]: the layer is applied onto a full root filesystem (a copy of
//     the parent's rootfs). Whiteouts delete, opaque markers prune.
//
// # Safety
//
// No entry may create, change or follow anything outside the target
// directory (DESIGN.md, invariant 3). All filesystem work is done relative to
// directory file descriptors: parents are opened with openat2(2) and
// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, and the final component is handled by
// *at system calls that never follow it (AT_SYMLINK_NOFOLLOW, O_NOFOLLOW,
// O_EXCL). Concretely:
//
//   - an absolute name (or hard link target) is rejected: layer entries are
//     relative to the layer root; a ".." that would climb above the directory
//     is rejected;
//   - an entry whose parent path goes through a symlink is rejected, wherever
//     the symlink points (even inside the directory);
//   - a hard link whose target escapes, goes through a symlink, is a directory,
//     or is a symlink pointing outside the directory (absolute, or climbing
//     out with "..") is rejected;
//   - symlinks themselves may point anywhere: they are created, never followed;
//   - xattrs named trusted.overlay.* in the tar are ignored, so a layer cannot
//     forge overlayfs metadata (redirects, opaque markers, metacopy).
//
// Rejections wrap [errdefs.ErrInvalidArgument] and name the entry and the
// reason. On any error the directory is left partly written: callers apply
// into a temporary directory, remove it on error, and rename it into place
// only on success (invariant 3).
//
// # Durability
//
// Apply does not fsync anything. Call [SyncDir] once when all layers of a
// snapshot are written, before renaming it into place.
//
// Applying requires root (CAP_CHOWN, CAP_MKNOD, CAP_SYS_ADMIN for trusted.*
// xattrs) and Linux 5.6 or later (openat2).
package archive

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/stevedore/stevedore/pkg/errdefs"
)

// Mode selects how whiteouts and opaque directories are represented.
type Mode int

const (
	// OverlayForm writes the layer as an overlayfs layer into its own
	// directory: a whiteout ".wh.NAME" becomes a character device NAME with
	// device number 0/0, an opaque marker ".wh..wh..opq" becomes the xattr
	// trusted.overlay.opaque=y on its directory, and nothing already in the
	// directory is deleted because of them.
	OverlayForm Mode = iota + 1
	// Direct applies the layer onto a root filesystem: a whiteout ".wh.NAME"
	// removes NAME (recursively) from its directory, an opaque marker removes
	// the directory's existing children that were not added by this layer.
	// Whiteouts never remove what the same layer added (OCI image spec).
	Direct
)

// String returns "overlay" or "direct".
func (m Mode) String() string {
	switch m {
	case OverlayForm:
		return "overlay"
	case Direct:
		return "direct"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// DefaultMaxSize is the uncompressed size limit used when Options.MaxSize is 0.
const DefaultMaxSize int64 = 64 << 30

// Options configure Apply.
type Options struct {
	// Mode is OverlayForm or Direct. It must be set.
	Mode Mode
	// DiffID is the expected digest of the uncompressed tar. Empty means do
	// not check. Its algorithm (normally sha256) is the one Result.DiffID is
	// computed with.
	DiffID digest.Digest
	// MaxSize bounds the uncompressed bytes read (a decompression bomb
	// guard); 0 means DefaultMaxSize. Exceeding it fails the apply with an
	// error wrapping errdefs.ErrResourceExhausted.
	MaxSize int64
	// Lowers are the directories of the layers below this one, top-most
	// first, each written by Apply in OverlayForm. They are read only to
	// resolve hard links whose target is not in this layer. OverlayForm
	// only; nil means "not known yet" (see ErrNeedsLowers).
	Lowers []string
}

// Result describes an applied layer.
type Result struct {
	// DiffID is the digest of the whole uncompressed stream, including the
	// tar's end-of-archive blocks and trailing padding.
	DiffID digest.Digest
	// Size is the number of uncompressed bytes (the tar's size).
	Size int64
	// Entries is the number of tar headers read, whiteouts included.
	Entries int
}

// ErrNeedsLowers is returned (wrapped, with the entry named) in OverlayForm
// when a hard link's target is not in the layer itself and Options.Lowers is
// nil. The caller applies the layer again, into a fresh directory, once its
// parent layers exist, passing them as Options.Lowers. It wraps
// errdefs.ErrFailedPrecondition.
var ErrNeedsLowers = fmt.Errorf("archive: hard link target is in a parent layer; apply again with Options.Lowers: %w", errdefs.ErrFailedPrecondition)

// Apply extracts the layer read from r into dir (which must exist) and
// returns its diffID, uncompressed size and entry count. r may be gzip- or
// zstd-compressed or a plain tar. The stream is read to its end, so the
// diffID covers all of it.
//
// Errors:
//   - errdefs.ErrInvalidArgument: bad options; the stream is not a tar
//     ("layer is not a tar archive: …"), is truncated ("layer truncated at
//     entry N: …") or is not valid gzip/zstd; an entry is unsafe or
//     malformed (the message names it and the reason);
//   - errdefs.ErrDataLoss: the diffID differs from Options.DiffID (both
//     digests are in the message), or a gzip/zstd checksum failed;
//   - errdefs.ErrResourceExhausted: more than Options.MaxSize uncompressed
//     bytes, or the filesystem is full;
//   - ErrNeedsLowers (errdefs.ErrFailedPrecondition): see there;
//   - errdefs.ErrNotFound: dir does not exist;
//   - errors of r and of ctx, wrapped; other filesystem errors wrap the errno.
//
// After an error dir holds part of the layer and must be discarded. Apply
// does not fsync; see SyncDir. Applies into different directories may run
// concurrently.
//
// Reading, decompression, hashing and writing run in parallel goroutines;
// in overlay form into an empty dir, small files are also created by two
// writer goroutines while the tar is read on (in tar order where it
// matters: see parallel.go). Apply returns only after it has stopped
// reading r and every file is written, so a Read blocked in r delays its
// return (make r honour ctx).
func Apply(ctx context.Context, dir string, r io.Reader, opts Options) (Result, error) {
	if opts.Mode != OverlayForm && opts.Mode != Direct {
		return Result{}, fmt.Errorf("archive: unknown mode %d: %w", int(opts.Mode), errdefs.ErrInvalidArgument)
	}
	if opts.Mode == Direct && opts.Lowers != nil {
		return Result{}, fmt.Errorf("archive: Lowers are only used in overlay form: %w", errdefs.ErrInvalidArgument)
	}
	if opts.MaxSize < 0 {
		return Result{}, fmt.Errorf("archive: negative MaxSize %d: %w", opts.MaxSize, errdefs.ErrInvalidArgument)
	}
	if opts.MaxSize == 0 {
		opts.MaxSize = DefaultMaxSize
	}
	alg := digest.Canonical
	if opts.DiffID != "" {
		if err := opts.DiffID.Validate(); err != nil {
			return Result{}, fmt.Errorf("archive: expected diffID %q: %w: %w", opts.DiffID, err, errdefs.ErrInvalidArgument)
		}
		alg = opts.DiffID.Algorithm()
	}
	if err := ctx.Err(); err != nil {
		return Result{}, fmt.Errorf("archive: %w", err)
	}

	root, err := openDir(dir)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return Result{}, fmt.Errorf("archive: target directory %s: %w: %w", dir, err, errdefs.ErrNotFound)
		}
		return Result{}, fmt.Errorf("archive: target directory %s: %w", dir, err)
	}

	src := &sourceReader{r: r}
	in := getBufReader(src)
	defer putBufReader(in)
	dec, closeDec, err := decompressor(in, src)
	if err != nil {
		unix.Close(root)
		return Result{}, err
	}
	defer closeDec()

	// Three stages run in parallel: decompression (for a compressed
	// layer), hashing and counting, and the filesystem work (which hands
	// small files to writers, parallel.go).
	pipe := &pipeline{}
	defer pipe.close()
	var up io.Reader = dec
	if dec != io.Reader(in) {
		up = pipe.add(dec)
	}
	m := &meter{ctx: ctx, r: up, h: alg.Hash(), max: opts.MaxSize}
	ra := pipe.add(m)

	a := newApplier(ctx, root, opts)
	defer a.close()
	if err := a.startParallel(); err != nil {
		return Result{}, fmt.Errorf("archive: target directory %s: %w", dir, err)
	}
	a.src, a.m, a.pipe = src, m, pipe
	if d, ok := dec.(*decompReader); ok {
		a.dec = d
	}
	applyErr := a.run(ra)
	if applyErr == nil {
		// Read the rest (end-of-archive blocks, record padding) so that
		// the diffID covers the whole stream and compressed trailers
		// (gzip CRC, zstd checksum) are verified.
		if _, err := io.Copy(io.Discard, ra); err != nil {
			applyErr = a.streamErr(err, a.entries+1)
		}
	}
	if applyErr == nil {
		applyErr = a.finishDirs()
	}
	if applyErr != nil {
		return Result{}, applyErr
	}
	pipe.close() // the hash and count are complete
	res := Result{DiffID: digest.NewDigest(alg, m.h), Size: m.n, Entries: a.entries}
	if opts.DiffID != "" && res.DiffID != opts.DiffID {
		return Result{}, fmt.Errorf("archive: layer diffID mismatch: got %s, expected %s: %w", res.DiffID, opts.DiffID, errdefs.ErrDataLoss)
	}
	return res, nil
}

// Flatten applies layers to dir in order, in Direct mode, without diffID
// checks: the reference flattening of an image into one root filesystem,
// used by tests and by native snapshots. Errors are those of Apply, wrapped
// with the layer's index.
func Flatten(ctx context.Context, dir string, layers ...io.Reader) error {
	for i, l := range layers {
		if _, err := Apply(ctx, dir, l, Options{Mode: Direct}); err != nil {
			return fmt.Errorf("archive: flatten layer %d: %w", i, err)
		}
	}
	return nil
}

// SyncDir makes everything written under dir durable. It uses syncfs(2) on
// the filesystem holding dir: one system call whatever the number of files,
// at the cost of also flushing unrelated dirty data of that filesystem. Call
// it once after the last Apply of a snapshot and before renaming the
// snapshot into place; after the rename, sync the parent directory (or call
// SyncDir again) to make the rename itself durable.
func SyncDir(dir string) error {
	fd, err := openDir(dir)
	if err != nil {
		return fmt.Errorf("archive: sync %s: %w", dir, err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return fmt.Errorf("archive: syncfs %s: %w", dir, err)
	}
	return nil
}

// bufSize is the size of the read buffers and of the file copy buffer.
const bufSize = 1 << 20

var bufReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, bufSize) }}

func getBufReader(r io.Reader) *bufio.Reader {
	br := bufReaders.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

func putBufReader(br *bufio.Reader) {
	br.Reset(nil)
	bufReaders.Put(br)
}

var (
	gzipMagic = []byte{0x1f, 0x8b, 0x08}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// decompressor returns the uncompressed stream of in, chosen by magic bytes.
func decompressor(in *bufio.Reader, src *sourceReader) (io.Reader, func(), error) {
	magic, _ := in.Peek(4) // short or failed peeks fall through to "tar"
	switch {
	case bytes.HasPrefix(magic, gzipMagic):
		zr, err := gzip.NewReader(in)
		if err != nil && src.err != nil {
			return nil, nil, fmt.Errorf("archive: reading layer: %w", src.err)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("archive: layer is not valid gzip: %w: %w", err, errdefs.ErrInvalidArgument)
		}
		return &decompReader{r: zr, kind: "gzip"}, func() { zr.Close() }, nil
	case bytes.HasPrefix(magic, zstdMagic):
		zr, err := zstd.NewReader(in, zstd.WithDecoderLowmem(false), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, nil, fmt.Errorf("archive: zstd: %w: %w", err, errdefs.ErrInvalidArgument)
		}
		return &decompReader{r: zr, kind: "zstd"}, zr.Close, nil
	}
	return in, func() {}, nil
}

// sourceReader remembers the caller's reader's error, so that it is not
// mistaken for a malformed layer.
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

// decompReader remembers the decompressor's errors.
type decompReader struct {
	r    io.Reader
	kind string
	err  error
}

func (d *decompReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if err != nil && err != io.EOF {
		d.err = err
	}
	return n, err
}

// meter hashes and counts the uncompressed stream, enforces the size limit
// and notices cancellation.
type meter struct {
	ctx context.Context
	r   io.Reader
	h   hash.Hash
	n   int64
	max int64
	err error // sticky: limit exceeded or context done
}

func (m *meter) Read(p []byte) (int, error) {
	if m.err != nil {
		return 0, m.err
	}
	if err := m.ctx.Err(); err != nil {
		m.err = fmt.Errorf("archive: %w", err)
		return 0, m.err
	}
	n, err := m.r.Read(p)
	if n > 0 {
		if m.n+int64(n) > m.max {
			m.err = fmt.Errorf("archive: layer exceeds the limit of %d uncompressed bytes (a decompression bomb?): %w", m.max, errdefs.ErrResourceExhausted)
			return 0, m.err
		}
		m.h.Write(p[:n])
		m.n += int64(n)
	}
	return n, err
}
