package client

import (
	"context"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"

	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/errdefs"
)

// ContentReader returns a reader of the committed blob dgst. It reads the
// blob from the gateway in chunks of at most api.MaxReadChunk bytes as it is
// read, using ctx for every request, and verifies the bytes against dgst:
// the read that reaches the end returns an error wrapping errdefs.ErrDataLoss
// instead of io.EOF if they do not match. A blob that is not there gives an
// error wrapping errdefs.ErrNotFound on the first Read.
func (c *Client) ContentReader(ctx context.Context, dgst digest.Digest) (io.ReadCloser, error) {
	if err := dgst.Validate(); err != nil {
		return nil, fmt.Errorf("content %q: %w: %w", dgst, errdefs.ErrInvalidArgument, err)
	}
	return &blobReader{ctx: ctx, c: c, dgst: dgst, verifier: dgst.Verifier()}, nil
}

type blobReader struct {
	ctx      context.Context
	c        *Client
	dgst     digest.Digest
	verifier digest.Verifier
	offset   int64
	buf      []byte
	err      error // sticky: io.EOF at the end, or the error that stopped reading
}

func (r *blobReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		r.fill()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// fill fetches the next chunk into buf, or sets err.
func (r *blobReader) fill() {
	data, err := r.c.request(r.ctx, api.SubjectContentRead, api.ContentReadRequest{
		Digest: r.dgst, Offset: r.offset, Length: api.MaxReadChunk,
	})
	switch {
	case err != nil:
		r.err = fmt.Errorf("read content %s at %d: %w", r.dgst, r.offset, err)
	case len(data) == 0:
		if !r.verifier.Verified() {
			r.err = fmt.Errorf("read content %s: %w: the %d bytes received do not match the digest", r.dgst, errdefs.ErrDataLoss, r.offset)
			return
		}
		r.err = io.EOF
	case len(data) > api.MaxReadChunk:
		r.err = fmt.Errorf("read content %s at %d: %w: chunk of %d bytes exceeds the %d limit", r.dgst, r.offset, errdefs.ErrDataLoss, len(data), api.MaxReadChunk)
	default:
		_, _ = r.verifier.Write(data) // a digest verifier's Write never fails
		r.offset += int64(len(data))
		r.buf = data
	}
}

// Close releases the reader. Reads after Close fail.
func (r *blobReader) Close() error {
	r.buf = nil
	if r.err == nil || r.err == io.EOF {
		r.err = fmt.Errorf("read content %s: reader closed: %w", r.dgst, io.ErrClosedPipe)
	}
	return nil
}
