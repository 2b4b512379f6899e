package remotes

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/images"
)

// manifestAccept is the Accept header of manifest requests.
var manifestAccept = strings.Join([]string{
	images.MediaTypeOCIIndex,
	images.MediaTypeOCIManifest,
	images.MediaTypeDockerManifestList,
	images.MediaTypeDockerManifest,
}, ", ")

// Resolve returns the descriptor (media type, digest, size) of the manifest
// or index ref names. It asks with HEAD and falls back to GET when the
// registry does not answer HEAD usefully (no digest or media type, 405); a
// GET reads at most the manifest size limit and computes the digest from the
// bytes. When ref has a digest, the result must have that digest.
//
// plainHTTP speaks plain HTTP to a registry that is not on loopback (a
// loopback registry is always spoken to in plain HTTP).
//
// Errors: a manifest over the size limit wraps errdefs.ErrResourceExhausted;
// a registry that answers with an error status returns a *StatusError (see
// there for classes); a host that does not resolve wraps errdefs.ErrNotFound;
// refused connections and timeouts wrap errdefs.ErrUnavailable; a digest
// that does not match wraps errdefs.ErrDataLoss; a media type that is neither
// an index nor a manifest wraps errdefs.ErrInvalidArgument.
func (r *Remote) Resolve(ctx context.Context, ref Reference, plainHTTP bool) (ocispec.Descriptor, error) {
	if ref.repository == "" {
		return ocispec.Descriptor{}, fmt.Errorf("resolve: empty reference: %w", errdefs.ErrInvalidArgument)
	}
	w := what{registry: ref.registry, object: "manifest for " + ref.short()}
	release, err := r.acquire(ctx, ref.host())
	if err != nil {
		return ocispec.Descriptor{}, classifyError(ctx, err, w)
	}
	defer release()

	ct, err := r.transportFor(ctx, ref, plainHTTP, w)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	w.anonymous = ct.anonymous
	c := client(ct.rt)
	u := r.url(ref, "manifests", ref.Object())

	desc, ok, err := r.resolveHead(ctx, c, u, ref, w)
	if err != nil {
		r.forgetOn401(err, ref, plainHTTP)
		return ocispec.Descriptor{}, err
	}
	if !ok {
		desc, err = r.resolveGet(ctx, c, u, ref, w)
		if err != nil {
			r.forgetOn401(err, ref, plainHTTP)
			return ocispec.Descriptor{}, err
		}
	}
	if ref.dgst != "" && desc.Digest != ref.dgst {
		return ocispec.Descriptor{}, fmt.Errorf("registry %s: %s has digest %s, not the digest the reference names: %w",
			ref.registry, w.object, desc.Digest, errdefs.ErrDataLoss)
	}
	if !images.IsIndex(desc.MediaType) && !images.IsManifest(desc.MediaType) {
		return ocispec.Descriptor{}, fmt.Errorf("registry %s: %s has media type %q, which is neither an image index nor an image manifest: %w",
			ref.registry, w.object, desc.MediaType, errdefs.ErrInvalidArgument)
	}
	return desc, nil
}

func (r *Remote) forgetOn401(err error, ref Reference, plainHTTP bool) {
	if errors.Is(err, errdefs.ErrUnauthenticated) {
		r.forget(ref, plainHTTP)
	}
}

// resolveHead tries HEAD. ok is false when the answer is not enough to
// resolve and a GET should be tried.
func (r *Remote) resolveHead(ctx context.Context, c *http.Client, u string, ref Reference, w what) (desc ocispec.Descriptor, ok bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, u, nil)
	if err != nil {
		return desc, false, fmt.Errorf("registry %s: %v: %w", ref.registry, err, errdefs.ErrInvalidArgument)
	}
	req.Header.Set("Accept", manifestAccept)
	resp, err := c.Do(req)
	if err != nil {
		return desc, false, classifyError(ctx, err, w)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusMethodNotAllowed || resp.StatusCode == http.StatusNotImplemented:
		return desc, false, nil
	case resp.StatusCode != http.StatusOK:
		return desc, false, newStatusError(resp, w)
	}
	mt := contentType(resp)
	if !images.IsIndex(mt) && !images.IsManifest(mt) {
		return desc, false, nil
	}
	size := resp.ContentLength
	if size < 0 {
		return desc, false, nil
	}
	if size > r.opts.limits.MaxManifestSize {
		return desc, false, tooBig(ref.registry, w.object, size, r.opts.limits.MaxManifestSize)
	}
	dg := ref.dgst
	if h := resp.Header.Get("Docker-Content-Digest"); h != "" {
		d, err := digest.Parse(h)
		if err != nil {
			return desc, false, nil
		}
		if dg == "" {
			dg = d
		}
	}
	if dg == "" {
		return desc, false, nil
	}
	return ocispec.Descriptor{MediaType: mt, Digest: dg, Size: size}, true, nil
}

func (r *Remote) resolveGet(ctx context.Context, c *http.Client, u string, ref Reference, w what) (ocispec.Descriptor, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("registry %s: %v: %w", ref.registry, err, errdefs.ErrInvalidArgument)
	}
	req.Header.Set("Accept", manifestAccept)
	resp, err := c.Do(req)
	if err != nil {
		return ocispec.Descriptor{}, classifyError(ctx, err, w)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ocispec.Descriptor{}, newStatusError(resp, w)
	}
	limit := r.opts.limits.MaxManifestSize
	if resp.ContentLength > limit {
		return ocispec.Descriptor{}, tooBig(ref.registry, w.object, resp.ContentLength, limit)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return ocispec.Descriptor{}, classifyError(ctx, err, w)
	}
	if int64(len(body)) > limit {
		return ocispec.Descriptor{}, tooBig(ref.registry, w.object, int64(len(body)), limit)
	}
	mt := contentType(resp)
	if !images.IsIndex(mt) && !images.IsManifest(mt) {
		mt = images.SniffMediaType(body)
	}
	alg := digest.Canonical
	if ref.dgst != "" && ref.dgst.Algorithm().Available() {
		alg = ref.dgst.Algorithm()
	}
	return ocispec.Descriptor{MediaType: mt, Digest: alg.FromBytes(body), Size: int64(len(body))}, nil
}

func tooBig(registry, object string, size, limit int64) error {
	return fmt.Errorf("registry %s: %s is %d bytes, over the limit of %d bytes: %w",
		registry, object, size, limit, errdefs.ErrResourceExhausted)
}

// contentType returns the media type of resp without parameters.
func contentType(resp *http.Response) string {
	ct := resp.Header.Get("Content-Type")
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.TrimSpace(ct)
}

// url returns the https URL of an API path; ggcr's transport switches the
// scheme to http when the registry was found to speak plain HTTP and that
// is allowed.
func (r *Remote) url(ref Reference, kind, object string) string {
	return "https://" + ref.host() + "/v2/" + ref.repository + "/" + kind + "/" + object
}

// Fetch opens the content of desc in ref's repository: manifests and indexes
// from /manifests/<digest>, everything else from /blobs/<digest> (following
// redirects to blob storage without forwarding credentials).
//
// With offset > 0 it asks for the rest of the blob with "Range:
// bytes=offset-". start says where the returned bytes begin: offset when
// the registry answered 206 Partial Content, 0 when it answered 200 with the
// whole blob (the caller must then truncate what it has and start over).
// With offset == desc.Size nothing is requested and rc is empty.
//
// The caller must close rc; until then the fetch holds one of the
// registry's connection slots. rc does not verify the digest (the caller
// hashes what it writes), but a read fails with an error wrapping
// errdefs.ErrDataLoss when the registry sends more bytes than desc.Size and
// with one wrapping errdefs.ErrUnavailable when the connection ends early.
//
// Errors: an invalid desc or offset wraps errdefs.ErrInvalidArgument; a
// manifest or config larger than its limit wraps
// errdefs.ErrResourceExhausted; otherwise as for Resolve.
func (r *Remote) Fetch(ctx context.Context, ref Reference, desc ocispec.Descriptor, offset int64, plainHTTP bool) (rc io.ReadCloser, start int64, err error) {
	if ref.repository == "" {
		return nil, 0, fmt.Errorf("fetch: empty reference: %w", errdefs.ErrInvalidArgument)
	}
	if err := desc.Digest.Validate(); err != nil {
		return nil, 0, fmt.Errorf("fetch: descriptor has an invalid digest %q: %v: %w", desc.Digest, err, errdefs.ErrInvalidArgument)
	}
	if desc.Size < 0 || offset < 0 || offset > desc.Size {
		return nil, 0, fmt.Errorf("fetch %s: invalid size %d or offset %d: %w", desc.Digest, desc.Size, offset, errdefs.ErrInvalidArgument)
	}
	isManifest := images.IsIndex(desc.MediaType) || images.IsManifest(desc.MediaType)
	kind, object := "blobs", "blob "+desc.Digest.String()+" of "+ref.Name()[len(ref.registry)+1:]
	if isManifest {
		kind, object = "manifests", "manifest "+desc.Digest.String()+" of "+ref.Name()[len(ref.registry)+1:]
		if desc.Size > r.opts.limits.MaxManifestSize {
			return nil, 0, tooBig(ref.registry, object, desc.Size, r.opts.limits.MaxManifestSize)
		}
	} else if images.IsConfig(desc.MediaType) && desc.Size > r.opts.limits.MaxConfigSize {
		return nil, 0, tooBig(ref.registry, "image config "+desc.Digest.String(), desc.Size, r.opts.limits.MaxConfigSize)
	}
	if offset == desc.Size && offset > 0 {
		return io.NopCloser(strings.NewReader("")), offset, nil
	}
	w := what{registry: ref.registry, object: object}

	release, err := r.acquire(ctx, ref.host())
	if err != nil {
		return nil, 0, classifyError(ctx, err, w)
	}
	ok := false
	defer func() {
		if !ok {
			release()
		}
	}()

	ct, err := r.transportFor(ctx, ref, plainHTTP, w)
	if err != nil {
		return nil, 0, err
	}
	w.anonymous = ct.anonymous
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url(ref, kind, desc.Digest.String()), nil)
	if err != nil {
		return nil, 0, fmt.Errorf("registry %s: %v: %w", ref.registry, err, errdefs.ErrInvalidArgument)
	}
	if isManifest {
		accept := manifestAccept
		if desc.MediaType != "" && !strings.Contains(accept, desc.MediaType) {
			accept = desc.MediaType + ", " + accept
		}
		req.Header.Set("Accept", accept)
	}
	if offset > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
	}
	resp, err := client(ct.rt).Do(req)
	if err != nil {
		return nil, 0, classifyError(ctx, err, w)
	}
	switch {
	case resp.StatusCode == http.StatusPartialContent && offset > 0:
		first, err := rangeStart(resp.Header.Get("Content-Range"))
		if err != nil || first != offset {
			resp.Body.Close()
			return nil, 0, fmt.Errorf("registry %s: %s: asked for bytes from %d, got Content-Range %q: %w",
				ref.registry, object, offset, resp.Header.Get("Content-Range"), errdefs.ErrUnavailable)
		}
		start = offset
	case resp.StatusCode == http.StatusOK:
		start = 0
	default:
		err := newStatusError(resp, w)
		resp.Body.Close()
		r.forgetOn401(err, ref, plainHTTP)
		return nil, 0, err
	}
	want := desc.Size - start
	if resp.ContentLength >= 0 && resp.ContentLength != want {
		resp.Body.Close()
		return nil, 0, fmt.Errorf("registry %s: %s: the registry sends %d bytes from offset %d, but the descriptor says %d bytes in all: %w",
			ref.registry, object, resp.ContentLength, start, desc.Size, errdefs.ErrDataLoss)
	}
	ok = true
	return &body{ctx: ctx, rc: resp.Body, remaining: want, release: release, w: w}, start, nil
}

// rangeStart parses the first byte position of "bytes first-last/total".
func rangeStart(cr string) (int64, error) {
	rest, ok := strings.CutPrefix(cr, "bytes ")
	if !ok {
		return 0, fmt.Errorf("not a byte range")
	}
	first, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, fmt.Errorf("no range")
	}
	return strconv.ParseInt(strings.TrimSpace(first), 10, 64)
}

// body is a fetched blob's stream: it bounds the bytes read to what the
// descriptor promises, classifies read errors and releases the connection
// slot on Close.
type body struct {
	ctx       context.Context
	rc        io.ReadCloser
	remaining int64
	release   func()
	w         what
	err       error
}

// Read implements io.Reader.
func (b *body) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.remaining <= 0 {
		// Anything beyond the promised size is an error, not silently dropped.
		var one [1]byte
		n, _ := io.ReadFull(b.rc, one[:])
		if n > 0 {
			b.err = fmt.Errorf("registry %s: %s: the registry sent more bytes than the descriptor's size: %w",
				b.w.registry, b.w.object, errdefs.ErrDataLoss)
			return 0, b.err
		}
		b.err = io.EOF
		return 0, io.EOF
	}
	if int64(len(p)) > b.remaining {
		p = p[:b.remaining]
	}
	n, err := b.rc.Read(p)
	b.remaining -= int64(n)
	if err == io.EOF && b.remaining > 0 {
		b.err = fmt.Errorf("registry %s: %s: connection closed with %d bytes still to come: %w",
			b.w.registry, b.w.object, b.remaining, errdefs.ErrUnavailable)
		return n, b.err
	}
	if err != nil && err != io.EOF {
		b.err = classifyError(b.ctx, err, b.w)
		return n, b.err
	}
	if err == io.EOF {
		// remaining is 0: report EOF on the next call after the size check.
		err = nil
	}
	return n, err
}

// Close closes the response body and releases the connection slot.
func (b *body) Close() error {
	err := b.rc.Close()
	b.release()
	return err
}
