package testimage_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore/stevedore/internal/testutil/registry"
	"github.com/stevedore/stevedore/internal/testutil/testimage"
	"github.com/stevedore/stevedore/pkg/images"
)

func decompress(t *testing.T, l *testimage.Layer) []byte {
	t.Helper()
	var r io.Reader
	switch l.Compression {
	case testimage.Gzip:
		gz, err := gzip.NewReader(bytes.NewReader(l.Blob))
		if err != nil {
			t.Fatal(err)
		}
		r = gz
	case testimage.Zstd:
		zr, err := zstd.NewReader(bytes.NewReader(l.Blob))
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		r = zr
	default:
		r = bytes.NewReader(l.Blob)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLayerEntries(t *testing.T) {
	entries := []testimage.Entry{
		testimage.Dir("etc", 0o755),
		testimage.File("etc/hosts", []byte("127.0.0.1 localhost\n"), 0o644),
		testimage.Symlink("etc/link", "hosts"),
		testimage.Hardlink("etc/hard", "etc/hosts"),
		{Name: "../escape", Type: tar.TypeReg, Mode: 0o600, Content: []byte("x")},
	}
	for _, c := range []testimage.Compression{testimage.Gzip, testimage.Zstd, testimage.Uncompressed} {
		l, err := testimage.NewLayer(c, entries...)
		if err != nil {
			t.Fatal(err)
		}
		if l.Digest != digest.FromBytes(l.Blob) {
			t.Errorf("%v: Digest is not the digest of Blob", c)
		}
		raw := decompress(t, l)
		if digest.FromBytes(raw) != l.DiffID || !bytes.Equal(raw, l.Tar) {
			t.Errorf("%v: DiffID is not the digest of the uncompressed tar", c)
		}
		tr := tar.NewReader(bytes.NewReader(raw))
		for i, want := range entries {
			h, err := tr.Next()
			if err != nil {
				t.Fatalf("%v: entry %d: %v", c, i, err)
			}
			if h.Name != want.Name || h.Typeflag != want.Type || h.Linkname != want.Linkname || h.Mode != want.Mode || !h.ModTime.Equal(testimage.Epoch) {
				t.Errorf("%v: entry %d = %s %c %q %o, want %+v", c, i, h.Name, h.Typeflag, h.Linkname, h.Mode, want)
			}
			body, _ := io.ReadAll(tr)
			if !bytes.Equal(body, want.Content) {
				t.Errorf("%v: entry %d content %q", c, i, body)
			}
		}
		if _, err := tr.Next(); !errors.Is(err, io.EOF) {
			t.Errorf("%v: extra entries: %v", c, err)
		}
		again, _ := testimage.NewLayer(c, entries...)
		if again.Digest != l.Digest {
			t.Errorf("%v: not deterministic", c)
		}
	}
}

func TestRandomLayer(t *testing.T) {
	const size = 1 << 20
	a, err := testimage.RandomLayer(size, 42)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := testimage.RandomLayer(size, 42)
	c, _ := testimage.RandomLayer(size, 43)
	if a.Digest != b.Digest || a.Digest == c.Digest {
		t.Errorf("same seed must give the same layer, another seed another")
	}
	if len(a.Blob) < size || a.Compression != testimage.Gzip {
		t.Errorf("blob is %d bytes (%v); random data should not compress", len(a.Blob), a.Compression)
	}
	z, err := testimage.RandomLayerWith(1000, 1, testimage.Zstd)
	if err != nil || z.MediaType(testimage.OCI) != images.MediaTypeOCILayerZstd || z.MediaType(testimage.Docker) != images.MediaTypeDockerLayerZstd {
		t.Errorf("zstd random layer: %v %v", z, err)
	}
}

func TestBuild(t *testing.T) {
	l1, _ := testimage.NewLayer(testimage.Gzip, testimage.File("a", []byte("a"), 0o644))
	l2, _ := testimage.NewLayer(testimage.Uncompressed, testimage.File("b", []byte("b"), 0o644))
	for _, tc := range []struct {
		f                      testimage.Format
		manifest, config, lay1 string
	}{
		{testimage.OCI, images.MediaTypeOCIManifest, images.MediaTypeOCIConfig, images.MediaTypeOCILayerGzip},
		{testimage.Docker, images.MediaTypeDockerManifest, images.MediaTypeDockerConfig, images.MediaTypeDockerLayerGzip},
	} {
		img := &testimage.Image{Format: tc.f, Layers: []*testimage.Layer{l1, l2}}
		b, err := img.Build()
		if err != nil {
			t.Fatal(err)
		}
		if b.Manifest.MediaType != tc.manifest || b.Config.MediaType != tc.config || b.Layers[0].MediaType != tc.lay1 {
			t.Errorf("format %d: %s %s %s", tc.f, b.Manifest.MediaType, b.Config.MediaType, b.Layers[0].MediaType)
		}
		md := b.Manifest
		md.Platform = nil
		children, err := images.Children(b.ManifestBytes, md, images.Platform{OS: "linux", Architecture: "amd64"})
		if err != nil || len(children) != 3 {
			t.Fatalf("format %d: the built manifest does not parse: %v", tc.f, err)
		}
		_, diffIDs, err := images.ParseConfig(b.ConfigBytes)
		if err != nil || len(diffIDs) != 2 || diffIDs[0] != l1.DiffID || diffIDs[1] != l2.DiffID {
			t.Errorf("format %d: config diffIDs %v %v", tc.f, diffIDs, err)
		}
		blobs := b.Blobs()
		if len(blobs) != 4 || blobs[0].Digest != b.Manifest.Digest || blobs[0].Platform != nil || blobs[1].Digest != b.Config.Digest {
			t.Errorf("format %d: Blobs() = %+v", tc.f, blobs)
		}
	}
}

func TestPushAndIndex(t *testing.T) {
	reg := registry.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, f := range []testimage.Format{testimage.OCI, testimage.Docker} {
		idx, err := testimage.MultiPlatform(f, testimage.Zstd)
		if err != nil {
			t.Fatal(err)
		}
		d, err := testimage.PushIndex(ctx, reg.Host(), "multi:latest", idx)
		if err != nil {
			t.Fatal(err)
		}
		blobs, err := idx.Blobs()
		if err != nil {
			t.Fatal(err)
		}
		// index + 3 × (manifest, config, own layer) + 1 shared layer
		if len(blobs) != 11 || blobs[0].Digest != d.Digest {
			t.Fatalf("format %d: %d blobs, want 11 starting with the index", f, len(blobs))
		}
		for _, b := range blobs {
			path := registry.BlobPath("multi", b.Digest)
			if images.IsIndex(b.MediaType) || images.IsManifest(b.MediaType) {
				path = registry.ManifestPath("multi", b.Digest.String())
			}
			resp, err := http.Get("http://" + reg.Host() + path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || digest.FromBytes(body) != b.Digest {
				t.Errorf("format %d: %s: %d", f, path, resp.StatusCode)
			}
			if path == registry.ManifestPath("multi", b.Digest.String()) && resp.Header.Get("Content-Type") != b.MediaType {
				t.Errorf("format %d: %s served as %q, want %q", f, path, resp.Header.Get("Content-Type"), b.MediaType)
			}
		}
		resp, err := http.Get("http://" + reg.Host() + registry.ManifestPath("multi", "latest"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if digest.FromBytes(body) != d.Digest {
			t.Errorf("format %d: tag does not point at the index", f)
		}
		var platforms []ocispec.Platform
		bi, _ := idx.Build()
		for _, img := range bi.Images {
			platforms = append(platforms, *img.Manifest.Platform)
		}
		if len(platforms) != 3 || platforms[2].Variant != "v7" || platforms[1].Architecture != "arm64" {
			t.Errorf("format %d: platforms %+v", f, platforms)
		}
	}

	// Raw pushes for hostile cases.
	blob := []byte("not a layer")
	bd, err := testimage.PushBlob(ctx, reg.Host(), "raw", blob)
	if err != nil || bd != digest.FromBytes(blob) {
		t.Fatalf("PushBlob: %v %v", bd, err)
	}
	md, err := testimage.PushManifest(ctx, reg.Host(), "raw:bad", images.MediaTypeOCIManifest, []byte(`{"schemaVersion":2}`))
	if err != nil || md.Size != 19 {
		t.Fatalf("PushManifest: %v %v", md, err)
	}
}
