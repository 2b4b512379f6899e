package content

import (
	"context"
	_ "crypto/sha256" // digest algorithms ReadBlob can verify
	_ "crypto/sha512"
	"errors"
	"fmt"
	"io"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore/stevedore/pkg/errdefs"
)

// copyBufferSize is the buffer size WriteBlob copies with.
const copyBufferSize = 1 << 20

// ReadBlob reads the whole committed blob desc into memory and verifies it
// against desc's size and digest. It is for small blobs (manifests, indexes,
// configs): it refuses, before reading, any blob larger than max.
//
// Errors: errdefs.ErrInvalidArgument if max <= 0, desc.Size < 0 or
// desc.Digest is malformed or of an unavailable algorithm;
// errdefs.ErrResourceExhausted if desc.Size or the stored size exceeds max;
// errdefs.ErrNotFound (from p) if the blob is not committed;
// errdefs.ErrDataLoss if the stored bytes do not match desc.
func ReadBlob(ctx context.Context, p Provider, desc ocispec.Descriptor, max int64) ([]byte, error) {
	if err := desc.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("read blob %q: %v: %w", desc.Digest, err, errdefs.ErrInvalidArgument)
	}
	if max <= 0 || desc.Size < 0 {
		return nil, fmt.Errorf("read blob %s: size %d, max %d: %w", desc.Digest, desc.Size, max, errdefs.ErrInvalidArgument)
	}
	if desc.Size > max {
		return nil, fmt.Errorf("read blob %s: %d bytes exceed the limit of %d: %w", desc.Digest, desc.Size, max, errdefs.ErrResourceExhausted)
	}
	ra, err := p.ReaderAt(ctx, desc.Digest)
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", desc.Digest, err)
	}
	defer ra.Close()
	size := ra.Size()
	if size > max {
		return nil, fmt.Errorf("read blob %s: stored blob has %d bytes, over the limit of %d: %w", desc.Digest, size, max, errdefs.ErrResourceExhausted)
	}
	if size != desc.Size {
		return nil, fmt.Errorf("read blob %s: stored blob has %d bytes, descriptor says %d: %w", desc.Digest, size, desc.Size, errdefs.ErrDataLoss)
	}
	b := make([]byte, size)
	n, err := ra.ReadAt(b, 0)
	if n == len(b) && errors.Is(err, io.EOF) {
		err = nil
	}
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", desc.Digest, err)
	}
	if actual := desc.Digest.Algorithm().FromBytes(b); actual != desc.Digest {
		return nil, fmt.Errorf("read blob: stored bytes hash to %s, expected %s: %w", actual, desc.Digest, errdefs.ErrDataLoss)
	}
	return b, nil
}

// WriteBlob writes the blob desc, read from r, through ing under ref, and
// commits it with labels. A blob that is already committed (before or while
// writing) is a success.
//
// r must yield the blob from its first byte. If the ingest ref already holds
// n bytes from an earlier attempt, WriteBlob resumes it: when r is an
// io.Seeker it seeks r to n; otherwise it truncates the ingest and writes
// everything again, so r is never read past bytes it has not produced.
// (Callers that can fetch from an offset, such as an HTTP Range request,
// should do so themselves with Ingester.Writer and Status().Offset.)
//
// Errors: those of Ingester.Writer and Writer.Commit except
// errdefs.ErrAlreadyExists; errdefs.ErrDataLoss if r yields more than
// desc.Size bytes or bytes that do not match desc; r's own errors.
func WriteBlob(ctx context.Context, ing Ingester, ref string, r io.Reader, desc ocispec.Descriptor, labels map[string]string) error {
	w, err := ing.Writer(ctx, WriterOpts{Ref: ref, Expected: desc.Digest, Total: desc.Size})
	if err != nil {
		if errors.Is(err, errdefs.ErrAlreadyExists) {
			return nil
		}
		return fmt.Errorf("write blob %s: %w", desc.Digest, err)
	}
	if err := copyFrom(w, r); err != nil {
		_ = w.Close()
		return fmt.Errorf("write blob %s: %w", desc.Digest, err)
	}
	if err := w.Commit(ctx, desc.Size, desc.Digest, labels); err != nil {
		if errors.Is(err, errdefs.ErrAlreadyExists) {
			return nil
		}
		return fmt.Errorf("write blob %s: %w", desc.Digest, err)
	}
	return nil
}

// copyFrom positions r at w's offset (or restarts w) and copies r into w.
func copyFrom(w Writer, r io.Reader) error {
	st, err := w.Status()
	if err != nil {
		return err
	}
	if st.Offset > 0 {
		seeker, ok := r.(io.Seeker)
		if ok {
			if pos, err := seeker.Seek(st.Offset, io.SeekStart); err != nil || pos != st.Offset {
				ok = false
				if _, err := seeker.Seek(0, io.SeekStart); err != nil {
					return fmt.Errorf("rewind reader: %w", err)
				}
			}
		}
		if !ok {
			if err := w.Truncate(0); err != nil {
				return err
			}
		}
	}
	_, err = io.CopyBuffer(w, r, make([]byte, copyBufferSize))
	return err
}
