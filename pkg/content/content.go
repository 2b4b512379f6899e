// Package content defines Stevedore's content store: blobs addressed by
// digest, written through resumable, verified ingests. The contracts follow
// containerd's content model. Implementations live in subpackages (local) and
// every implementation runs the conformance suite in content/testsuite.
package content

import (
	"context"
	"io"
	"time"

	"github.com/opencontainers/go-digest"
)

// Info describes a committed blob.
type Info struct {
	Digest    digest.Digest     `json:"digest"`
	Size      int64             `json:"size"`
	CreatedAt time.Time         `json:"created_at"`
	UpdatedAt time.Time         `json:"updated_at"`
	Labels    map[string]string `json:"labels,omitempty"`
}

// Status describes an active (uncommitted) ingest.
type Status struct {
	Ref       string        `json:"ref"`
	Offset    int64         `json:"offset"`
	Total     int64         `json:"total"`
	Expected  digest.Digest `json:"expected"`
	StartedAt time.Time     `json:"started_at"`
	UpdatedAt time.Time     `json:"updated_at"`
}

// ReaderAt is a committed blob opened for reading. Size is the blob's size.
type ReaderAt interface {
	io.ReaderAt
	io.Closer
	Size() int64
}

// Provider reads committed blobs.
type Provider interface {
	// ReaderAt opens the committed blob. It returns an error wrapping
	// errdefs.ErrNotFound if the blob is not committed.
	ReaderAt(ctx context.Context, dgst digest.Digest) (ReaderAt, error)
}

// WalkFunc is called for every committed blob by Manager.Walk.
type WalkFunc func(Info) error

// Manager inspects and changes committed blobs.
type Manager interface {
	// Info returns the blob's info, or an error wrapping errdefs.ErrNotFound.
	Info(ctx context.Context, dgst digest.Digest) (Info, error)
	// Update replaces the blob's labels with info.Labels and returns the new
	// info. Only labels can be updated.
	Update(ctx context.Context, info Info) (Info, error)
	// Walk calls fn for every committed blob, in no particular order. An
	// error from fn stops the walk and is returned.
	Walk(ctx context.Context, fn WalkFunc) error
	// Delete removes the committed blob, or returns an error wrapping
	// errdefs.ErrNotFound.
	Delete(ctx context.Context, dgst digest.Digest) error
}

// IngestManager inspects and aborts active ingests.
type IngestManager interface {
	// Status returns the status of the active ingest ref, or an error
	// wrapping errdefs.ErrNotFound.
	Status(ctx context.Context, ref string) (Status, error)
	// ListStatuses returns every active ingest.
	ListStatuses(ctx context.Context) ([]Status, error)
	// Abort removes the active ingest ref and its data. It returns an error
	// wrapping errdefs.ErrNotFound if there is none, and one wrapping
	// errdefs.ErrUnavailable if a writer holds it.
	Abort(ctx context.Context, ref string) error
}

// WriterOpts says what a writer is for.
type WriterOpts struct {
	// Ref names the ingest. Writers with the same ref, in any process, are
	// exclusive: only one can be open at a time. Use the digest string when
	// the expected digest is known, so that concurrent fetches of the same
	// blob coordinate.
	Ref string
	// Expected is the digest the bytes must hash to. Required.
	Expected digest.Digest
	// Total is the expected size in bytes; 0 means unknown.
	Total int64
}

// Ingester opens writers.
type Ingester interface {
	// Writer opens (or resumes) the ingest opts.Ref. If an ingest with that
	// ref exists, the writer continues from its offset: Status().Offset says
	// where, and the caller must continue writing from that offset (or call
	// Truncate(0) to start over).
	//
	// Errors: errdefs.ErrAlreadyExists if opts.Expected is already
	// committed; errdefs.ErrUnavailable if another writer (in this or
	// another process) holds opts.Ref; errdefs.ErrInvalidArgument for a
	// missing ref or a missing or malformed digest;
	// errdefs.ErrFailedPrecondition if the existing ingest opts.Ref was
	// started for a different expected digest or total (Abort it first).
	Writer(ctx context.Context, opts WriterOpts) (Writer, error)
}

// Writer writes one ingest. It is not safe for concurrent use.
type Writer interface {
	// Write appends to the ingest. Writing beyond the expected total fails
	// with errdefs.ErrDataLoss.
	io.Writer
	// Close releases the writer; the ingest stays and can be resumed.
	io.Closer
	// Digest returns the digest of the bytes written so far.
	Digest() digest.Digest
	// Status returns the ingest's status.
	Status() (Status, error)
	// Truncate discards everything after size bytes. Only 0 is supported.
	Truncate(size int64) error
	// Commit verifies that exactly size bytes (if size > 0, else
	// WriterOpts.Total if > 0) hashing to expected (if not empty, else
	// WriterOpts.Expected) were written, makes the blob visible atomically
	// and durably, and removes the ingest. Commit always closes the writer,
	// even on error.
	//
	// Errors: errdefs.ErrAlreadyExists if the blob was committed meanwhile
	// (a success for the caller; the ingest is removed); errdefs.ErrDataLoss
	// if the size or digest does not match (the ingest is removed, so a
	// retry starts from zero).
	Commit(ctx context.Context, size int64, expected digest.Digest, labels map[string]string) error
}

// Store is the whole content store.
type Store interface {
	Manager
	Provider
	IngestManager
	Ingester
}
