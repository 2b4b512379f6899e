package remotes_test

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore/stevedore/internal/testutil/testimage"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/images"
	"github.com/stevedore/stevedore/pkg/remotes"
)

// quirkyServer serves on a loopback port with handler, for registry
// behaviour the test registry does not have.
func quirkyServer(t *testing.T, handler http.HandlerFunc) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

func TestQuirkyRegistries(t *testing.T) {
	credentials(t, nil)
	b, err := (&testimage.Image{Format: testimage.Docker}).Build()
	if err != nil {
		t.Fatal(err)
	}
	manifest := b.ManifestBytes
	blob := []byte(strings.Repeat("blob-bytes-", 100))
	blobDesc := ocispec.Descriptor{MediaType: images.MediaTypeOCILayerGzip, Digest: digest.FromBytes(blob), Size: int64(len(blob))}
	var modeV atomic.Value
	modeV.Store("")
	mode := func() string { return modeV.Load().(string) }
	host := quirkyServer(t, func(w http.ResponseWriter, req *http.Request) {
		switch {
		case req.URL.Path == "/v2/":
			w.WriteHeader(200)
		case strings.Contains(req.URL.Path, "/manifests/") && req.Method == http.MethodHead:
			w.WriteHeader(http.StatusMethodNotAllowed)
		case strings.Contains(req.URL.Path, "/manifests/"):
			w.Header().Set("Content-Type", "application/json")
			if mode() == "huge" {
				// Chunked, no Content-Length: the limit must hold while reading.
				for range 3000 {
					_, _ = w.Write([]byte(strings.Repeat(" ", 1024)))
				}
			}
			_, _ = w.Write(manifest)
		case strings.Contains(req.URL.Path, "/blobs/"):
			switch mode() {
			case "short":
				w.Header().Set("Content-Length", strconv.Itoa(len(blob)))
				_, _ = w.Write(blob[:100])
				if hj, ok := w.(http.Hijacker); ok {
					c, _, _ := hj.Hijack()
					c.Close()
				}
			case "long":
				// Chunked, more bytes than the descriptor says.
				_, _ = w.Write(blob)
				w.(http.Flusher).Flush()
				_, _ = w.Write([]byte("extra"))
			}
		}
	})
	r := newRemote(t, remotes.WithMaxManifestSize(1<<20))
	ref := parse(t, host+"/quirky:1")

	t.Run("HEAD not allowed, GET with a generic content type", func(t *testing.T) {
		modeV.Store("")
		d, err := r.Resolve(ctxT(t), ref, false)
		if err != nil {
			t.Fatal(err)
		}
		if d.MediaType != images.MediaTypeDockerManifest || d.Digest != digest.FromBytes(manifest) || d.Size != int64(len(manifest)) {
			t.Errorf("Resolve = %+v", d)
		}
	})
	t.Run("chunked manifest over the limit", func(t *testing.T) {
		modeV.Store("huge")
		_, err := r.Resolve(ctxT(t), ref, false)
		if !errors.Is(err, errdefs.ErrResourceExhausted) {
			t.Errorf("error = %v, want ErrResourceExhausted", err)
		}
	})
	t.Run("connection closed early", func(t *testing.T) {
		modeV.Store("short")
		rc, _, err := r.Fetch(ctxT(t), ref, blobDesc, 0, false)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.ReadAll(rc)
		rc.Close()
		if !errors.Is(err, errdefs.ErrUnavailable) {
			t.Errorf("read error = %v, want ErrUnavailable", err)
		}
	})
	t.Run("more bytes than the descriptor", func(t *testing.T) {
		modeV.Store("long")
		rc, _, err := r.Fetch(ctxT(t), ref, blobDesc, 0, false)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if !errors.Is(err, errdefs.ErrDataLoss) || string(got) != string(blob) {
			t.Errorf("read %d bytes, error = %v; want the promised bytes then ErrDataLoss", len(got), err)
		}
	})
}
