package testimage

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

type pushOptions struct {
	auth authn.Authenticator
}

// PushOption configures Push and PushIndex.
type PushOption func(*pushOptions)

// WithAuth pushes with basic auth (or, against a bearer registry, exchanges
// these credentials for a token). The default is anonymous.
func WithAuth(user, password string) PushOption {
	return func(o *pushOptions) { o.auth = &authn.Basic{Username: user, Password: password} }
}

// Push pushes img to the registry at host ("127.0.0.1:port", plain HTTP) as
// ref ("repo:tag", or just "repo" to push by digest only) and returns the
// manifest's descriptor (without Platform). Blobs the registry already has
// are not uploaded again.
func Push(ctx context.Context, host, ref string, img *Image, opts ...PushOption) (ocispec.Descriptor, error) {
	b, err := img.Build()
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	repo, tag := splitRef(ref)
	p, err := newPusher(ctx, host, repo, opts)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer p.close()
	if err := p.pushImage(ctx, b, tag); err != nil {
		return ocispec.Descriptor{}, err
	}
	d := b.Manifest
	d.Platform = nil
	return d, nil
}

// PushIndex pushes idx and all its images to host as ref and returns the
// index's descriptor.
func PushIndex(ctx context.Context, host, ref string, idx *Index, opts ...PushOption) (ocispec.Descriptor, error) {
	bi, err := idx.Build()
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	repo, tag := splitRef(ref)
	p, err := newPusher(ctx, host, repo, opts)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer p.close()
	for _, b := range bi.Images {
		if err := p.pushImage(ctx, b, ""); err != nil {
			return ocispec.Descriptor{}, err
		}
	}
	if err := p.putManifest(ctx, bi.Index, bi.IndexBytes, tag); err != nil {
		return ocispec.Descriptor{}, err
	}
	return bi.Index, nil
}

// PushBlob uploads raw bytes as a blob of repo (e.g. to serve a blob no
// manifest lists) and returns its digest.
func PushBlob(ctx context.Context, host, repo string, data []byte, opts ...PushOption) (digest.Digest, error) {
	p, err := newPusher(ctx, host, repo, opts)
	if err != nil {
		return "", err
	}
	defer p.close()
	d := digest.FromBytes(data)
	return d, p.pushBlob(ctx, d, data)
}

// PushManifest puts raw manifest bytes with mediaType as ref (a tag, or the
// digest when ref has no tag), e.g. to serve a deliberately broken or huge
// manifest. It returns the manifest's descriptor.
func PushManifest(ctx context.Context, host, ref, mediaType string, data []byte, opts ...PushOption) (ocispec.Descriptor, error) {
	repo, tag := splitRef(ref)
	p, err := newPusher(ctx, host, repo, opts)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer p.close()
	d := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
	return d, p.putManifest(ctx, d, data, tag)
}

// splitRef splits "repo:tag" (a ':' after the last '/').
func splitRef(ref string) (repo, tag string) {
	i := strings.LastIndex(ref, ":")
	if i > strings.LastIndex(ref, "/") {
		return ref[:i], ref[i+1:]
	}
	return ref, ""
}

type pusher struct {
	tr     *http.Transport
	base   string
	repo   string
	client *http.Client
}

func newPusher(ctx context.Context, host, repo string, opts []PushOption) (*pusher, error) {
	o := pushOptions{auth: authn.Anonymous}
	for _, opt := range opts {
		opt(&o)
	}
	r, err := name.NewRepository(host+"/"+repo, name.Insecure)
	if err != nil {
		return nil, fmt.Errorf("testimage: repository %q: %w", repo, err)
	}
	base := &http.Transport{ResponseHeaderTimeout: 30 * time.Second}
	rt, err := transport.NewWithContext(ctx, r.Registry, o.auth, base,
		[]string{r.Scope(transport.PushScope), r.Scope(transport.PullScope)})
	if err != nil {
		base.CloseIdleConnections()
		return nil, fmt.Errorf("testimage: connecting to %s: %w", host, err)
	}
	return &pusher{tr: base, base: "http://" + host + "/v2/" + repo, repo: repo, client: &http.Client{Transport: rt}}, nil
}

// close releases the pusher's idle connections.
func (p *pusher) close() { p.tr.CloseIdleConnections() }

func (p *pusher) pushImage(ctx context.Context, b *Built, tag string) error {
	for _, l := range b.layers {
		if err := p.pushBlob(ctx, l.Digest, l.Blob); err != nil {
			return err
		}
	}
	if err := p.pushBlob(ctx, b.Config.Digest, b.ConfigBytes); err != nil {
		return err
	}
	return p.putManifest(ctx, b.Manifest, b.ManifestBytes, tag)
}

func (p *pusher) do(ctx context.Context, method, u string, body []byte, hdr map[string]string, want ...int) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.ContentLength = int64(len(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("testimage: %s %s: %w", method, u, err)
	}
	for _, w := range want {
		if resp.StatusCode == w {
			return resp, nil
		}
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	return nil, fmt.Errorf("testimage: %s %s: status %d: %s", method, u, resp.StatusCode, strings.TrimSpace(string(msg)))
}

func (p *pusher) pushBlob(ctx context.Context, d digest.Digest, data []byte) error {
	resp, err := p.do(ctx, http.MethodHead, p.base+"/blobs/"+d.String(), nil, nil, http.StatusOK, http.StatusNotFound)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	resp, err = p.do(ctx, http.MethodPost, p.base+"/blobs/uploads/", nil, nil, http.StatusAccepted)
	if err != nil {
		return err
	}
	resp.Body.Close()
	loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
	if err != nil {
		return fmt.Errorf("testimage: upload location: %w", err)
	}
	q := loc.Query()
	q.Set("digest", d.String())
	loc.RawQuery = q.Encode()
	resp, err = p.do(ctx, http.MethodPut, loc.String(), data,
		map[string]string{"Content-Type": "application/octet-stream"}, http.StatusCreated)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

func (p *pusher) putManifest(ctx context.Context, d ocispec.Descriptor, data []byte, tag string) error {
	target := d.Digest.String()
	if tag != "" {
		target = url.PathEscape(tag)
	}
	resp, err := p.do(ctx, http.MethodPut, p.base+"/manifests/"+target, data,
		map[string]string{"Content-Type": d.MediaType}, http.StatusCreated)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}
