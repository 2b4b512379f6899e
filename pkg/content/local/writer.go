package local

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/stevedore/stevedore/pkg/content"
	"github.com/stevedore/stevedore/pkg/errdefs"
)

// Writer opens the ingest opts.Ref, or resumes it if it exists: the data
// already there is re-hashed, so Digest and Status().Offset describe it, and
// the caller continues from that offset (or calls Truncate(0)). The writer
// holds an exclusive flock on the ingest until it is closed or committed.
//
// Errors: errdefs.ErrInvalidArgument for an empty ref or a missing, malformed
// or non-sha256 expected digest, or a negative total;
// errdefs.ErrAlreadyExists if opts.Expected is already committed;
// errdefs.ErrUnavailable if another writer, in this or another process, holds
// opts.Ref; errdefs.ErrFailedPrecondition if the existing ingest was started
// for a different expected digest or total (Abort it to start over).
func (s *Store) Writer(ctx context.Context, opts content.WriterOpts) (content.Writer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if opts.Ref == "" {
		return nil, fmt.Errorf("content writer: empty ref: %w", errdefs.ErrInvalidArgument)
	}
	if err := validateDigest(opts.Expected); err != nil {
		return nil, fmt.Errorf("content writer %q: expected: %w", opts.Ref, err)
	}
	if opts.Total < 0 {
		return nil, fmt.Errorf("content writer %q: negative total %d: %w", opts.Ref, opts.Total, errdefs.ErrInvalidArgument)
	}
	if _, err := os.Stat(s.blobPath(opts.Expected)); err == nil {
		return nil, fmt.Errorf("content %s: %w", opts.Expected, errdefs.ErrAlreadyExists)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("content writer %q: %w", opts.Ref, err)
	}

	dir := s.ingestDir(opts.Ref)
	lk, err := s.lockIngest(dir, true)
	if err != nil {
		return nil, fmt.Errorf("content writer %q: %w", opts.Ref, err)
	}
	w, err := s.openIngest(dir, lk, opts)
	if err != nil {
		_ = lk.Close()
		return nil, fmt.Errorf("content writer %q: %w", opts.Ref, err)
	}
	return w, nil
}

// openIngest resumes the ingest in dir, whose lock is held as lk, or
// initialises it if it is new or its metadata is damaged.
func (s *Store) openIngest(dir string, lk *os.File, opts content.WriterOpts) (*writer, error) {
	w := &writer{
		s:        s,
		dir:      dir,
		lock:     lk,
		ref:      opts.Ref,
		expected: opts.Expected,
		total:    opts.Total,
		hash:     sha256.New(),
	}
	ref, err := os.ReadFile(filepath.Join(dir, refFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	var m ingestMeta
	resume := err == nil && string(ref) == opts.Ref
	if resume {
		if m, err = readMeta(dir); err != nil {
			resume = false // damaged by a crash: start over
		}
	}
	if !resume {
		return w, w.init()
	}

	if m.expected != opts.Expected {
		return nil, fmt.Errorf("ingest was started for %s, not %s: %w", m.expected, opts.Expected, errdefs.ErrFailedPrecondition)
	}
	if m.total > 0 && opts.Total > 0 && m.total != opts.Total {
		return nil, fmt.Errorf("ingest was started with total %d, not %d: %w", m.total, opts.Total, errdefs.ErrFailedPrecondition)
	}
	if m.total > 0 {
		w.total = m.total
	} else if opts.Total > 0 {
		if err := writeMeta(dir, ingestMeta{expected: opts.Expected, total: opts.Total, startedAt: m.startedAt}); err != nil {
			return nil, err
		}
	}
	w.startedAt = m.startedAt

	path := filepath.Join(dir, dataFile)
	// A crash between Commit's chmod and rename leaves the data read-only.
	if err := os.Chmod(path, 0o644); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	n, err := copyBuffer(w.hash, io.NewSectionReader(f, 0, 1<<62))
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("re-hash ingest data: %w", err)
	}
	if w.total > 0 && n > w.total {
		_ = f.Close()
		return nil, fmt.Errorf("ingest holds %d bytes, more than its total %d: %w", n, w.total, errdefs.ErrDataLoss)
	}
	w.data = f
	w.offset, w.flushed = n, n
	w.updatedAt = time.Now()
	return w, nil
}

// init (re)creates the ingest's data and metadata; ref is written last, so
// an ingest with a ref file is complete.
func (w *writer) init() error {
	_ = os.Remove(filepath.Join(w.dir, refFile))
	f, err := os.OpenFile(filepath.Join(w.dir, dataFile), os.O_RDWR|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		_ = f.Close()
		return err
	}
	w.startedAt = time.Now()
	w.updatedAt = w.startedAt
	m := ingestMeta{expected: w.expected, total: w.total, startedAt: w.startedAt}
	if err := writeMeta(w.dir, m); err != nil {
		_ = f.Close()
		return err
	}
	if err := writeFileAtomic(filepath.Join(w.dir, refFile), []byte(w.ref), false); err != nil {
		_ = f.Close()
		return err
	}
	w.data = f
	return nil
}

// writer is a content.Writer on an ingest directory. It is not safe for
// concurrent use.
type writer struct {
	s         *Store
	dir       string
	lock      *os.File // flocked; closing it releases the ref
	data      *os.File // O_APPEND
	ref       string
	expected  digest.Digest
	total     int64
	offset    int64
	flushed   int64 // bytes handed to writeback early (flushAhead)
	hash      hash.Hash
	startedAt time.Time
	updatedAt time.Time
	closed    bool
}

var errClosed = fmt.Errorf("content writer is closed: %w", errdefs.ErrFailedPrecondition)

// Write appends p to the ingest. If that would exceed the expected total,
// nothing is written and the error wraps errdefs.ErrDataLoss.
func (w *writer) Write(p []byte) (int, error) {
	if w.closed {
		return 0, errClosed
	}
	if w.total > 0 && w.offset+int64(len(p)) > w.total {
		return 0, fmt.Errorf("content writer %q: writing %d bytes at offset %d exceeds total %d: %w",
			w.ref, len(p), w.offset, w.total, errdefs.ErrDataLoss)
	}
	n, err := w.data.Write(p)
	w.hash.Write(p[:n])
	w.offset += int64(n)
	w.updatedAt = time.Now()
	if err != nil {
		return n, fmt.Errorf("content writer %q: %w", w.ref, err)
	}
	if w.offset-w.flushed >= flushAhead {
		// Start writing the data back now, without waiting for it, so
		// that Commit's fsync finds little left to do and a large blob
		// is on disk soon after its last byte arrives. A hint only:
		// Commit's fsync is what makes the data durable, so an error
		// here changes nothing.
		_ = unix.SyncFileRange(int(w.data.Fd()), w.flushed, w.offset-w.flushed, unix.SYNC_FILE_RANGE_WRITE)
		w.flushed = w.offset
	}
	return n, nil
}

// flushAhead is how many written bytes start an early writeback.
const flushAhead = 8 << 20

// Digest returns the digest of the bytes written so far.
func (w *writer) Digest() digest.Digest {
	return digest.NewDigest(digest.SHA256, w.hash)
}

// Status returns the ingest's status as this writer knows it.
func (w *writer) Status() (content.Status, error) {
	if w.closed {
		return content.Status{}, errClosed
	}
	return content.Status{
		Ref:       w.ref,
		Offset:    w.offset,
		Total:     w.total,
		Expected:  w.expected,
		StartedAt: w.startedAt,
		UpdatedAt: w.updatedAt,
	}, nil
}

// Truncate discards the ingest's data; only size 0 is supported
// (errdefs.ErrInvalidArgument otherwise).
func (w *writer) Truncate(size int64) error {
	if w.closed {
		return errClosed
	}
	if size != 0 {
		return fmt.Errorf("content writer %q: truncate to %d: only 0 is supported: %w", w.ref, size, errdefs.ErrInvalidArgument)
	}
	if err := w.data.Truncate(0); err != nil {
		return fmt.Errorf("content writer %q: truncate: %w", w.ref, err)
	}
	w.hash.Reset()
	w.offset, w.flushed = 0, 0
	w.updatedAt = time.Now()
	return nil
}

// Close releases the writer and its lock; the ingest stays and can be
// resumed. Closing twice, or after Commit, is a no-op.
func (w *writer) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	var err error
	if w.data != nil {
		err = w.data.Close()
	}
	if lerr := w.lock.Close(); err == nil {
		err = lerr
	}
	if err != nil {
		return fmt.Errorf("content writer %q: close: %w", w.ref, err)
	}
	return nil
}

// Commit verifies the bytes written and makes them the committed blob. The
// size checked is size if > 0, else the writer's total if > 0; the digest
// checked is expected if not empty, else the writer's expected digest.
// Commit always closes the writer.
//
// Errors: errdefs.ErrDataLoss naming expected and actual values if the size
// or digest does not match (the ingest is removed); errdefs.ErrAlreadyExists
// if the blob was committed meanwhile (the ingest is removed);
// errdefs.ErrInvalidArgument for a malformed expected digest or label (the
// ingest is kept); errdefs.ErrFailedPrecondition if the writer was closed.
func (w *writer) Commit(ctx context.Context, size int64, expected digest.Digest, labels map[string]string) error {
	if w.closed {
		return errClosed
	}
	defer w.Close()
	if err := ctx.Err(); err != nil {
		return err
	}
	if expected == "" {
		expected = w.expected
	}
	if err := validateDigest(expected); err != nil {
		return fmt.Errorf("content commit %q: %w", w.ref, err)
	}
	if err := validateLabels(labels); err != nil {
		return fmt.Errorf("content commit %q: %w", w.ref, err)
	}
	if size <= 0 {
		size = w.total
	}

	fi, err := w.data.Stat()
	if err != nil {
		return fmt.Errorf("content commit %q: %w", w.ref, err)
	}
	if fi.Size() != w.offset {
		w.s.removeIngest(w.dir)
		return fmt.Errorf("content commit %q: data file has %d bytes, writer wrote %d: %w", w.ref, fi.Size(), w.offset, errdefs.ErrDataLoss)
	}
	if size > 0 && w.offset != size {
		w.s.removeIngest(w.dir)
		return fmt.Errorf("content commit %q: unexpected size: expected %d bytes, got %d: %w", w.ref, size, w.offset, errdefs.ErrDataLoss)
	}
	if actual := w.Digest(); actual != expected {
		w.s.removeIngest(w.dir)
		return fmt.Errorf("content commit %q: unexpected digest: expected %s, got %s: %w", w.ref, expected, actual, errdefs.ErrDataLoss)
	}

	// Make the bytes durable and read-only before they become visible.
	now := time.Now()
	src := filepath.Join(w.dir, dataFile)
	if err := os.Chtimes(src, now, now); err != nil {
		return fmt.Errorf("content commit %q: %w", w.ref, err)
	}
	if err := w.data.Chmod(0o444); err != nil {
		return fmt.Errorf("content commit %q: %w", w.ref, err)
	}
	if err := w.data.Sync(); err != nil {
		return fmt.Errorf("content commit %q: fsync: %w", w.ref, err)
	}
	err = w.data.Close()
	w.data = nil
	if err != nil {
		return fmt.Errorf("content commit %q: %w", w.ref, err)
	}

	target := w.s.blobPath(expected)
	if err := renameNoReplace(src, target); err != nil {
		if errors.Is(err, fs.ErrExist) {
			w.s.removeIngest(w.dir)
			return fmt.Errorf("content %s: %w", expected, errdefs.ErrAlreadyExists)
		}
		return fmt.Errorf("content commit %q: %w", w.ref, err)
	}
	if err := syncDir(filepath.Dir(target)); err != nil {
		return fmt.Errorf("content commit %q: %w", w.ref, err)
	}
	// The blob is ours and new: its labels replace any a crashed Delete left.
	if len(labels) > 0 {
		err = w.s.writeLabels(expected, labels)
	} else if rerr := os.Remove(w.s.labelPath(expected)); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		err = rerr
	}
	// The blob is committed; a leftover ingest without data is removed by New.
	w.s.removeIngest(w.dir)
	if err != nil {
		return fmt.Errorf("content commit %q: blob committed, but labels: %w", w.ref, err)
	}
	return nil
}
