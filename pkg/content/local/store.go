// Package local is Stevedore's content store on a local filesystem, modelled
// on containerd's plugins/content/local.
//
// Layout under the root directory:
//
//	blobs/sha256/<hex>              committed blobs, read-only
//	labels/sha256/<hex>.json        a committed blob's labels, replaced atomically
//	ingest/<sha256(ref)>/           one active ingest per ref:
//	    lock                        flock(2)ed by the writer holding the ref
//	    data                        the bytes written so far
//	    ref, expected, total, startedat
//	trash/                          ingests being removed (renamed here first)
//
// Writers on one ref are exclusive across processes: the writer holds an
// exclusive flock on the ingest's lock file, so a holder that dies (even by
// SIGKILL) releases the ref at once and its ingest can be resumed. An ingest
// is removed by renaming it into trash/ while its lock is held, so a removal
// is atomic for everyone else. A blob becomes visible only by an atomic,
// non-replacing rename of verified, fsynced bytes into blobs/.
//
// Only sha256 digests are supported; others are rejected with
// errdefs.ErrInvalidArgument.
package local

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/stevedore/stevedore/pkg/content"
	"github.com/stevedore/stevedore/pkg/errdefs"
)

// copyBufferSize is the buffer size for every bulk copy (re-hashing a resumed
// ingest, digest checks).
const copyBufferSize = 1 << 20

// maxLabelSize caps one label's key plus value, as containerd does.
const maxLabelSize = 4096

// lockRetries bounds how often opening an ingest retries when the ingest is
// removed and recreated under it by other writers.
const lockRetries = 16

// staleTempAge is how old a leftover temporary file must be before New
// removes it; younger ones may belong to another process at work.
const staleTempAge = 10 * time.Minute

// Names of the files in an ingest directory.
const (
	lockFile      = "lock"
	dataFile      = "data"
	refFile       = "ref"
	expectedFile  = "expected"
	totalFile     = "total"
	startedAtFile = "startedat"
	tempPrefix    = ".tmp-"
)

// Store is a content.Store on a local filesystem. It is safe for concurrent
// use by many goroutines and by many processes sharing the same root.
type Store struct {
	root string
}

var _ content.Store = (*Store)(nil)

// New opens (creating if needed) the store rooted at root. It removes what
// earlier crashes left behind and nobody holds: trash, incomplete ingests,
// ingests whose blob is already committed, and old temporary label files.
// Resumable ingests are kept. Errors: errdefs.ErrInvalidArgument for an
// empty root; the filesystem's error if the directories cannot be created.
func New(root string) (*Store, error) {
	if root == "" {
		return nil, fmt.Errorf("content store: empty root: %w", errdefs.ErrInvalidArgument)
	}
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("content store: %w", err)
	}
	s := &Store{root: root}
	for _, d := range []string{s.blobDir(), s.labelDir(), s.ingestRoot(), s.trashDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("content store: create %s: %w", d, err)
		}
	}
	s.cleanup()
	return s, nil
}

// cleanup is best effort: a failure leaves garbage, never a wrong store.
func (s *Store) cleanup() {
	if entries, err := os.ReadDir(s.trashDir()); err == nil {
		for _, e := range entries {
			_ = os.RemoveAll(filepath.Join(s.trashDir(), e.Name()))
		}
	}
	if entries, err := os.ReadDir(s.labelDir()); err == nil {
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), tempPrefix) {
				continue
			}
			if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > staleTempAge {
				_ = os.Remove(filepath.Join(s.labelDir(), e.Name()))
			}
		}
	}
	entries, err := os.ReadDir(s.ingestRoot())
	if err != nil {
		return
	}
	for _, e := range entries {
		dir := filepath.Join(s.ingestRoot(), e.Name())
		lk, err := s.lockIngest(dir, false)
		if err != nil {
			continue // held by a live writer, or gone
		}
		stale := false
		if _, err := os.Stat(filepath.Join(dir, refFile)); err != nil {
			stale = true // created but never initialised
		} else if b, err := os.ReadFile(filepath.Join(dir, expectedFile)); err == nil {
			if d := digest.Digest(b); validateDigest(d) == nil {
				if _, err := os.Stat(s.blobPath(d)); err == nil {
					stale = true // committed, but the ingest was not removed
				}
			}
		}
		if stale {
			s.removeIngest(dir)
		}
		_ = lk.Close()
	}
}

func (s *Store) blobDir() string    { return filepath.Join(s.root, "blobs", "sha256") }
func (s *Store) labelDir() string   { return filepath.Join(s.root, "labels", "sha256") }
func (s *Store) ingestRoot() string { return filepath.Join(s.root, "ingest") }
func (s *Store) trashDir() string   { return filepath.Join(s.root, "trash") }

// blobPath assumes dgst has been validated.
func (s *Store) blobPath(dgst digest.Digest) string {
	return filepath.Join(s.blobDir(), dgst.Encoded())
}

func (s *Store) labelPath(dgst digest.Digest) string {
	return filepath.Join(s.labelDir(), dgst.Encoded()+".json")
}

// ingestDir names the ingest of ref by the sha256 of ref, so that any ref is
// a safe path component.
func (s *Store) ingestDir(ref string) string {
	sum := sha256.Sum256([]byte(ref))
	return filepath.Join(s.ingestRoot(), fmt.Sprintf("%x", sum))
}

// validateDigest accepts well-formed sha256 digests only.
func validateDigest(dgst digest.Digest) error {
	if dgst == "" {
		return fmt.Errorf("missing digest: %w", errdefs.ErrInvalidArgument)
	}
	if err := dgst.Validate(); err != nil {
		return fmt.Errorf("invalid digest %q: %v: %w", dgst, err, errdefs.ErrInvalidArgument)
	}
	if dgst.Algorithm() != digest.SHA256 {
		return fmt.Errorf("digest %q: unsupported algorithm %q (only sha256): %w", dgst, dgst.Algorithm(), errdefs.ErrInvalidArgument)
	}
	return nil
}

func validateLabels(labels map[string]string) error {
	for k, v := range labels {
		if k == "" {
			return fmt.Errorf("empty label key: %w", errdefs.ErrInvalidArgument)
		}
		if len(k)+len(v) > maxLabelSize {
			return fmt.Errorf("label %q: key and value exceed %d bytes: %w", k, maxLabelSize, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// Info returns the committed blob's size, labels and times: CreatedAt is
// when it was committed, UpdatedAt when its labels last changed (or
// CreatedAt). Errors: errdefs.ErrInvalidArgument for a bad digest,
// errdefs.ErrNotFound if the blob is not committed.
func (s *Store) Info(ctx context.Context, dgst digest.Digest) (content.Info, error) {
	if err := validateDigest(dgst); err != nil {
		return content.Info{}, fmt.Errorf("content info: %w", err)
	}
	return s.info(dgst)
}

func (s *Store) info(dgst digest.Digest) (content.Info, error) {
	fi, err := os.Stat(s.blobPath(dgst))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return content.Info{}, fmt.Errorf("content %s: %w", dgst, errdefs.ErrNotFound)
		}
		return content.Info{}, fmt.Errorf("content info %s: %w", dgst, err)
	}
	info := content.Info{
		Digest:    dgst,
		Size:      fi.Size(),
		CreatedAt: fi.ModTime(),
		UpdatedAt: fi.ModTime(),
	}
	labels, updated, err := s.readLabels(dgst)
	if err != nil {
		return content.Info{}, fmt.Errorf("content info %s: %w", dgst, err)
	}
	info.Labels = labels
	if updated.After(info.UpdatedAt) {
		info.UpdatedAt = updated
	}
	return info, nil
}

// readLabels returns the labels and the time they were written; no labels
// file means no labels.
func (s *Store) readLabels(dgst digest.Digest) (map[string]string, time.Time, error) {
	f, err := os.Open(s.labelPath(dgst))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, time.Time{}, nil
		}
		return nil, time.Time{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, time.Time{}, err
	}
	var labels map[string]string
	if err := json.NewDecoder(f).Decode(&labels); err != nil {
		return nil, time.Time{}, fmt.Errorf("read labels: %v: %w", err, errdefs.ErrInternal)
	}
	if len(labels) == 0 {
		labels = nil
	}
	return labels, fi.ModTime(), nil
}

// writeLabels atomically replaces the labels of dgst.
func (s *Store) writeLabels(dgst digest.Digest, labels map[string]string) error {
	if labels == nil {
		labels = map[string]string{}
	}
	b, err := json.Marshal(labels)
	if err != nil {
		return fmt.Errorf("encode labels: %w", err)
	}
	return writeFileAtomic(s.labelPath(dgst), b, true)
}

// Update replaces the committed blob's labels with info.Labels (nil or empty
// removes them) and returns the new info. Nothing else can be updated.
// Errors: errdefs.ErrInvalidArgument for a bad digest or label (empty key,
// key plus value over 4096 bytes), errdefs.ErrNotFound if the blob is not
// committed.
func (s *Store) Update(ctx context.Context, info content.Info) (content.Info, error) {
	if err := validateDigest(info.Digest); err != nil {
		return content.Info{}, fmt.Errorf("content update: %w", err)
	}
	if err := validateLabels(info.Labels); err != nil {
		return content.Info{}, fmt.Errorf("content update %s: %w", info.Digest, err)
	}
	if _, err := os.Stat(s.blobPath(info.Digest)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return content.Info{}, fmt.Errorf("content %s: %w", info.Digest, errdefs.ErrNotFound)
		}
		return content.Info{}, fmt.Errorf("content update %s: %w", info.Digest, err)
	}
	if err := s.writeLabels(info.Digest, info.Labels); err != nil {
		return content.Info{}, fmt.Errorf("content update %s: %w", info.Digest, err)
	}
	return s.info(info.Digest)
}

// Walk calls fn with the info of every committed blob, in no particular
// order. An error from fn stops the walk and is returned as is; a cancelled
// ctx stops it with ctx.Err(). Blobs deleted during the walk may be skipped.
func (s *Store) Walk(ctx context.Context, fn content.WalkFunc) error {
	entries, err := os.ReadDir(s.blobDir())
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("content walk: %w", err)
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !e.Type().IsRegular() {
			continue
		}
		dgst := digest.NewDigestFromEncoded(digest.SHA256, e.Name())
		if validateDigest(dgst) != nil {
			continue
		}
		info, err := s.info(dgst)
		if err != nil {
			if errors.Is(err, errdefs.ErrNotFound) {
				continue
			}
			return fmt.Errorf("content walk: %w", err)
		}
		if err := fn(info); err != nil {
			return err
		}
	}
	return nil
}

// Delete removes the committed blob and its labels. Readers already open
// keep reading it. Errors: errdefs.ErrInvalidArgument for a bad digest,
// errdefs.ErrNotFound if the blob is not committed.
func (s *Store) Delete(ctx context.Context, dgst digest.Digest) error {
	if err := validateDigest(dgst); err != nil {
		return fmt.Errorf("content delete: %w", err)
	}
	if err := os.Remove(s.blobPath(dgst)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("content %s: %w", dgst, errdefs.ErrNotFound)
		}
		return fmt.Errorf("content delete %s: %w", dgst, err)
	}
	// A labels file left behind by a crash here is harmless: labels are read
	// only for existing blobs, and Commit replaces them.
	if err := os.Remove(s.labelPath(dgst)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("content delete %s labels: %w", dgst, err)
	}
	return nil
}

type readerAt struct {
	f    *os.File
	size int64
}

func (r *readerAt) ReadAt(p []byte, off int64) (int, error) { return r.f.ReadAt(p, off) }
func (r *readerAt) Close() error                            { return r.f.Close() }
func (r *readerAt) Size() int64                             { return r.size }

// ReaderAt opens the committed blob for reading; the caller must Close it.
// Errors: errdefs.ErrInvalidArgument for a bad digest, errdefs.ErrNotFound if
// the blob is not committed.
func (s *Store) ReaderAt(ctx context.Context, dgst digest.Digest) (content.ReaderAt, error) {
	if err := validateDigest(dgst); err != nil {
		return nil, fmt.Errorf("content reader: %w", err)
	}
	f, err := os.Open(s.blobPath(dgst))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("content %s: %w", dgst, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("content reader %s: %w", dgst, err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("content reader %s: %w", dgst, err)
	}
	return &readerAt{f: f, size: fi.Size()}, nil
}

// Status returns the status of the active ingest ref: Offset is the number
// of bytes written so far, UpdatedAt the time of the last write. Errors:
// errdefs.ErrInvalidArgument for an empty ref, errdefs.ErrNotFound if there
// is no such ingest.
func (s *Store) Status(ctx context.Context, ref string) (content.Status, error) {
	if ref == "" {
		return content.Status{}, fmt.Errorf("content status: empty ref: %w", errdefs.ErrInvalidArgument)
	}
	st, err := readStatus(s.ingestDir(ref))
	if err != nil {
		return content.Status{}, fmt.Errorf("content status %q: %w", ref, err)
	}
	if st.Ref != ref {
		return content.Status{}, fmt.Errorf("content status %q: ingest holds ref %q: %w", ref, st.Ref, errdefs.ErrInternal)
	}
	return st, nil
}

// ListStatuses returns the status of every active ingest, in no particular
// order. Ingests that are being created or removed right now, or whose
// metadata a crash damaged, are left out.
func (s *Store) ListStatuses(ctx context.Context) ([]content.Status, error) {
	entries, err := os.ReadDir(s.ingestRoot())
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("content list statuses: %w", err)
	}
	var out []content.Status
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		st, err := readStatus(filepath.Join(s.ingestRoot(), e.Name()))
		if err != nil {
			continue
		}
		out = append(out, st)
	}
	return out, nil
}

// readStatus reads an ingest's metadata; ErrNotFound if it has none (yet).
func readStatus(dir string) (content.Status, error) {
	ref, err := os.ReadFile(filepath.Join(dir, refFile))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return content.Status{}, errdefs.ErrNotFound
		}
		return content.Status{}, err
	}
	m, err := readMeta(dir)
	if err != nil {
		return content.Status{}, err
	}
	st := content.Status{
		Ref:       string(ref),
		Total:     m.total,
		Expected:  m.expected,
		StartedAt: m.startedAt,
		UpdatedAt: m.startedAt,
	}
	fi, err := os.Stat(filepath.Join(dir, dataFile))
	switch {
	case err == nil:
		st.Offset = fi.Size()
		if fi.ModTime().After(st.UpdatedAt) {
			st.UpdatedAt = fi.ModTime()
		}
	case errors.Is(err, fs.ErrNotExist):
		// Renamed into blobs/ by a commit that did not finish removing the ingest.
	default:
		return content.Status{}, err
	}
	return st, nil
}

type ingestMeta struct {
	expected  digest.Digest
	total     int64
	startedAt time.Time
}

func readMeta(dir string) (ingestMeta, error) {
	var m ingestMeta
	b, err := os.ReadFile(filepath.Join(dir, expectedFile))
	if err != nil {
		return m, err
	}
	m.expected = digest.Digest(b)
	if b, err = os.ReadFile(filepath.Join(dir, totalFile)); err != nil {
		return m, err
	}
	if m.total, err = strconv.ParseInt(string(b), 10, 64); err != nil {
		return m, fmt.Errorf("ingest total %q: %v: %w", b, err, errdefs.ErrInternal)
	}
	if b, err = os.ReadFile(filepath.Join(dir, startedAtFile)); err != nil {
		return m, err
	}
	if err := m.startedAt.UnmarshalText(b); err != nil {
		return m, fmt.Errorf("ingest startedat %q: %v: %w", b, err, errdefs.ErrInternal)
	}
	return m, nil
}

func writeMeta(dir string, m ingestMeta) error {
	started, err := m.startedAt.MarshalText()
	if err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
	}{
		{expectedFile, []byte(m.expected)},
		{totalFile, []byte(strconv.FormatInt(m.total, 10))},
		{startedAtFile, started},
	} {
		if err := writeFileAtomic(filepath.Join(dir, f.name), f.data, false); err != nil {
			return err
		}
	}
	return nil
}

// Abort removes the active ingest ref and its data. Errors:
// errdefs.ErrInvalidArgument for an empty ref, errdefs.ErrNotFound if there
// is no such ingest, errdefs.ErrUnavailable if a writer (in any process)
// holds it.
func (s *Store) Abort(ctx context.Context, ref string) error {
	if ref == "" {
		return fmt.Errorf("content abort: empty ref: %w", errdefs.ErrInvalidArgument)
	}
	dir := s.ingestDir(ref)
	lk, err := s.lockIngest(dir, false)
	if err != nil {
		return fmt.Errorf("content abort %q: %w", ref, err)
	}
	defer lk.Close()
	if _, err := os.Stat(filepath.Join(dir, refFile)); err != nil {
		// Not initialised: a crash left it, or a writer is creating it and
		// has not taken the lock yet. Either way there is nothing to abort.
		return fmt.Errorf("content abort %q: %w", ref, errdefs.ErrNotFound)
	}
	if err := s.removeIngestErr(dir); err != nil {
		return fmt.Errorf("content abort %q: %w", ref, err)
	}
	return nil
}

// lockIngest opens and exclusively flocks dir/lock without blocking, and
// checks that the file it locked is still the ingest's lock file (a holder
// may have removed the ingest meanwhile). With create, the ingest directory
// is created if missing. The lock is released by closing the file.
//
// Errors: errdefs.ErrUnavailable if someone else holds it; without create,
// errdefs.ErrNotFound if there is no such ingest.
func (s *Store) lockIngest(dir string, create bool) (*os.File, error) {
	path := filepath.Join(dir, lockFile)
	for range lockRetries {
		if create {
			if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return nil, err
			}
		}
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				if create {
					continue // removed between Mkdir and OpenFile
				}
				return nil, errdefs.ErrNotFound
			}
			return nil, err
		}
		if err := flock(f); err != nil {
			_ = f.Close()
			return nil, err
		}
		held, err1 := f.Stat()
		now, err2 := os.Stat(path)
		if err1 == nil && err2 == nil && os.SameFile(held, now) {
			return f, nil
		}
		_ = f.Close()
		if err1 != nil {
			return nil, err1
		}
		if err2 != nil && !errors.Is(err2, fs.ErrNotExist) {
			return nil, err2
		}
		if !create && errors.Is(err2, fs.ErrNotExist) {
			return nil, errdefs.ErrNotFound
		}
	}
	return nil, fmt.Errorf("ingest %s keeps being removed under us: %w", dir, errdefs.ErrUnavailable)
}

func flock(f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EWOULDBLOCK):
			return fmt.Errorf("ingest is held by another writer: %w", errdefs.ErrUnavailable)
		default:
			return fmt.Errorf("flock %s: %w", f.Name(), err)
		}
	}
}

// removeIngestErr atomically removes the ingest dir, whose lock the caller
// holds: it renames dir into trash (the step others can observe), then
// deletes it at leisure. Only the rename can fail.
func (s *Store) removeIngestErr(dir string) error {
	tmp, err := os.MkdirTemp(s.trashDir(), "ingest-")
	if err != nil {
		return fmt.Errorf("remove ingest: %w", err)
	}
	if err := os.Rename(dir, filepath.Join(tmp, "ingest")); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("remove ingest: %w", err)
	}
	_ = os.RemoveAll(tmp) // garbage at worst; New removes it
	return nil
}

// removeIngest is removeIngestErr where the caller has a better error to
// report; a leftover ingest is resumable or cleaned by New.
func (s *Store) removeIngest(dir string) { _ = s.removeIngestErr(dir) }

// writeFileAtomic replaces path with data: a temporary file in the same
// directory is written (and with durable, fsynced along with the directory)
// and renamed over path.
func writeFileAtomic(path string, data []byte, durable bool) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, tempPrefix+filepath.Base(path)+"-")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Chmod(0o644); err != nil {
		return err
	}
	if durable {
		if err = f.Sync(); err != nil {
			return err
		}
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	if durable {
		return syncDir(dir)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		_ = d.Close()
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return d.Close()
}

// copyBuffer is io.CopyBuffer with a fresh copy buffer.
func copyBuffer(dst io.Writer, src io.Reader) (int64, error) {
	return io.CopyBuffer(dst, src, make([]byte, copyBufferSize))
}
