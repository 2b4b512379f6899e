// Package testimage builds container images in memory and pushes them to a
// registry, for tests. Layers are built from tar entries (files, dirs,
// symlinks, hardlinks) or random bytes, compressed with gzip, zstd or not at
// all; images use OCI or Docker schema 2 media types; indexes hold one
// image per platform. Everything is deterministic: the same inputs give the
// same digests.
//
// Builders return the descriptors of every blob they make (Blobs), so a test
// can assert that a content store holds exactly those after a pull.
package testimage

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore/stevedore/pkg/images"
)

// Compression is how a layer's tar is compressed.
type Compression int

// Compressions.
const (
	Gzip Compression = iota
	Zstd
	Uncompressed
)

// String returns "gzip", "zstd" or "none".
func (c Compression) String() string {
	switch c {
	case Gzip:
		return "gzip"
	case Zstd:
		return "zstd"
	case Uncompressed:
		return "none"
	}
	return fmt.Sprintf("Compression(%d)", int(c))
}

// Format selects the media types of an image.
type Format int

// Formats.
const (
	OCI Format = iota
	Docker
)

// Epoch is the modification time of entries that do not set one, and the
// default creation time of images.
var Epoch = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// Entry is one tar entry of a layer. Build them with File, Dir, Symlink and
// Hardlink, or fill the fields directly for hostile layers (names with
// "..", absolute link targets, odd types).
type Entry struct {
	Name     string
	Type     byte // tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink, ...
	Mode     int64
	Content  []byte
	Linkname string
	UID, GID int
	ModTime  time.Time
}

// File returns a regular file entry.
func File(name string, content []byte, mode int64) Entry {
	return Entry{Name: name, Type: tar.TypeReg, Mode: mode, Content: content}
}

// Dir returns a directory entry.
func Dir(name string, mode int64) Entry {
	return Entry{Name: name, Type: tar.TypeDir, Mode: mode}
}

// Symlink returns a symbolic link entry name → target.
func Symlink(name, target string) Entry {
	return Entry{Name: name, Type: tar.TypeSymlink, Mode: 0o777, Linkname: target}
}

// Hardlink returns a hard link entry name → target (a path in the layer).
func Hardlink(name, target string) Entry {
	return Entry{Name: name, Type: tar.TypeLink, Mode: 0o644, Linkname: target}
}

// Layer is a built layer: its compressed bytes, the digest of the
// uncompressed tar (the diffID) and its compression.
type Layer struct {
	// Blob is the layer as pushed (compressed unless Uncompressed).
	Blob []byte
	// Digest is the digest of Blob.
	Digest digest.Digest
	// DiffID is the digest of the uncompressed tar.
	DiffID digest.Digest
	// Compression of Blob.
	Compression Compression
	// Tar is the uncompressed tar.
	Tar []byte
}

// NewLayer builds a layer from entries, in order.
func NewLayer(c Compression, entries ...Entry) (*Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		mt := e.ModTime
		if mt.IsZero() {
			mt = Epoch
		}
		typ := e.Type
		if typ == 0 {
			typ = tar.TypeReg
		}
		h := &tar.Header{
			Name:     e.Name,
			Typeflag: typ,
			Mode:     e.Mode,
			Linkname: e.Linkname,
			Uid:      e.UID,
			Gid:      e.GID,
			ModTime:  mt,
			Format:   tar.FormatPAX,
		}
		if typ == tar.TypeReg {
			h.Size = int64(len(e.Content))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("testimage: tar header %q: %w", e.Name, err)
		}
		if typ == tar.TypeReg {
			if _, err := tw.Write(e.Content); err != nil {
				return nil, fmt.Errorf("testimage: tar content %q: %w", e.Name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("testimage: tar: %w", err)
	}
	return FromTar(c, buf.Bytes())
}

// FromTar builds a layer from an uncompressed tar.
func FromTar(c Compression, tarBytes []byte) (*Layer, error) {
	blob, err := compress(c, tarBytes)
	if err != nil {
		return nil, err
	}
	return &Layer{
		Blob:        blob,
		Digest:      digest.FromBytes(blob),
		DiffID:      digest.FromBytes(tarBytes),
		Compression: c,
		Tar:         tarBytes,
	}, nil
}

func compress(c Compression, data []byte) ([]byte, error) {
	var buf bytes.Buffer
	var w io.WriteCloser
	var err error
	switch c {
	case Uncompressed:
		return append([]byte(nil), data...), nil
	case Gzip:
		w, err = gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	case Zstd:
		w, err = zstd.NewWriter(&buf, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	default:
		return nil, fmt.Errorf("testimage: unknown compression %v", c)
	}
	if err != nil {
		return nil, fmt.Errorf("testimage: %v compressor: %w", c, err)
	}
	if _, err := w.Write(data); err != nil {
		return nil, fmt.Errorf("testimage: %v compress: %w", c, err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("testimage: %v compress: %w", c, err)
	}
	return buf.Bytes(), nil
}

// RandomLayer returns a gzip layer holding one file, "random.bin", of
// sizeBytes pseudo-random (incompressible) bytes derived from seed; the
// blob is a little larger than sizeBytes.
func RandomLayer(sizeBytes, seed int64) (*Layer, error) {
	return RandomLayerWith(sizeBytes, seed, Gzip)
}

// RandomLayerWith is RandomLayer with a choice of compression.
func RandomLayerWith(sizeBytes, seed int64, c Compression) (*Layer, error) {
	if sizeBytes < 0 {
		return nil, fmt.Errorf("testimage: negative layer size %d", sizeBytes)
	}
	data := make([]byte, sizeBytes)
	_, _ = rand.New(rand.NewSource(seed)).Read(data)
	return NewLayer(c, File("random.bin", data, 0o644))
}

// MediaType returns the layer's media type in format f.
func (l *Layer) MediaType(f Format) string {
	switch {
	case f == Docker && l.Compression == Gzip:
		return images.MediaTypeDockerLayerGzip
	case f == Docker && l.Compression == Zstd:
		return images.MediaTypeDockerLayerZstd
	case f == Docker:
		return images.MediaTypeDockerLayer
	case l.Compression == Gzip:
		return images.MediaTypeOCILayerGzip
	case l.Compression == Zstd:
		return images.MediaTypeOCILayerZstd
	}
	return images.MediaTypeOCILayer
}

// Descriptor returns the layer's descriptor in format f.
func (l *Layer) Descriptor(f Format) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: l.MediaType(f), Digest: l.Digest, Size: int64(len(l.Blob))}
}

// Image is an image to build: its layers and config. Zero fields get
// defaults: OS/Architecture linux/amd64, Created Epoch, RootFS from the
// layers' diffIDs (set RootFS yourself to build a wrong config on purpose).
type Image struct {
	Format Format
	Layers []*Layer
	Config ocispec.Image
	// Annotations go into the manifest.
	Annotations map[string]string
}

// Built is an image serialized: its manifest and config bytes and the
// descriptors of every blob.
type Built struct {
	// Manifest is the descriptor of the manifest (with Platform set from the
	// config, as an index lists it).
	Manifest      ocispec.Descriptor
	ManifestBytes []byte
	Config        ocispec.Descriptor
	ConfigBytes   []byte
	// Layers are the layers' descriptors, in order.
	Layers []ocispec.Descriptor

	layers []*Layer
}

// Build serializes img.
func (img *Image) Build() (*Built, error) {
	cfg := img.Config
	if cfg.OS == "" {
		cfg.OS = "linux"
	}
	if cfg.Architecture == "" {
		cfg.Architecture = "amd64"
	}
	if cfg.Created == nil {
		t := Epoch
		cfg.Created = &t
	}
	if cfg.RootFS.Type == "" {
		cfg.RootFS.Type = "layers"
		cfg.RootFS.DiffIDs = []digest.Digest{}
		for _, l := range img.Layers {
			cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, l.DiffID)
		}
	}
	cfgBytes, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("testimage: config: %w", err)
	}
	b := &Built{ConfigBytes: cfgBytes, layers: img.Layers}
	cfgType, mfType := images.MediaTypeOCIConfig, images.MediaTypeOCIManifest
	if img.Format == Docker {
		cfgType, mfType = images.MediaTypeDockerConfig, images.MediaTypeDockerManifest
	}
	b.Config = ocispec.Descriptor{MediaType: cfgType, Digest: digest.FromBytes(cfgBytes), Size: int64(len(cfgBytes))}
	b.Layers = []ocispec.Descriptor{}
	for _, l := range img.Layers {
		b.Layers = append(b.Layers, l.Descriptor(img.Format))
	}
	m := ocispec.Manifest{
		MediaType:   mfType,
		Config:      b.Config,
		Layers:      b.Layers,
		Annotations: img.Annotations,
	}
	m.SchemaVersion = 2
	b.ManifestBytes, err = json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("testimage: manifest: %w", err)
	}
	b.Manifest = ocispec.Descriptor{
		MediaType: mfType,
		Digest:    digest.FromBytes(b.ManifestBytes),
		Size:      int64(len(b.ManifestBytes)),
		Platform: &ocispec.Platform{
			OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant,
			OSVersion: cfg.OSVersion, OSFeatures: cfg.OSFeatures,
		},
	}
	return b, nil
}

// Blobs returns the descriptors of every blob of the image: manifest,
// config, layers (without Platform).
func (b *Built) Blobs() []ocispec.Descriptor {
	m := b.Manifest
	m.Platform = nil
	out := []ocispec.Descriptor{m, b.Config}
	return append(out, b.Layers...)
}

// Blobs builds img and returns the descriptors of its blobs (manifest,
// config, layers).
func (img *Image) Blobs() ([]ocispec.Descriptor, error) {
	b, err := img.Build()
	if err != nil {
		return nil, err
	}
	return b.Blobs(), nil
}

// Index is a multi-platform image: one image per platform (taken from each
// image's config), in an OCI index or a Docker manifest list.
type Index struct {
	Format Format
	Images []*Image
	// Extra descriptors appended to the index's manifests as they are, e.g.
	// an attestation manifest or an entry without a platform. They are not
	// pushed.
	Extra []ocispec.Descriptor
}

// BuiltIndex is an index serialized.
type BuiltIndex struct {
	Index      ocispec.Descriptor
	IndexBytes []byte
	Images     []*Built
}

// Build serializes idx and its images.
func (idx *Index) Build() (*BuiltIndex, error) {
	bi := &BuiltIndex{}
	var manifests []ocispec.Descriptor
	for i, img := range idx.Images {
		if img.Format != idx.Format {
			return nil, fmt.Errorf("testimage: image %d has a different format from its index", i)
		}
		b, err := img.Build()
		if err != nil {
			return nil, err
		}
		bi.Images = append(bi.Images, b)
		manifests = append(manifests, b.Manifest)
	}
	manifests = append(manifests, idx.Extra...)
	mt := images.MediaTypeOCIIndex
	if idx.Format == Docker {
		mt = images.MediaTypeDockerManifestList
	}
	ix := ocispec.Index{MediaType: mt, Manifests: manifests}
	ix.SchemaVersion = 2
	var err error
	bi.IndexBytes, err = json.Marshal(ix)
	if err != nil {
		return nil, fmt.Errorf("testimage: index: %w", err)
	}
	bi.Index = ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(bi.IndexBytes), Size: int64(len(bi.IndexBytes))}
	return bi, nil
}

// Blobs returns the descriptors of every blob of the index: the index, then
// for each image its manifest, config and layers (shared blobs once).
func (bi *BuiltIndex) Blobs() []ocispec.Descriptor {
	out := []ocispec.Descriptor{bi.Index}
	seen := map[digest.Digest]bool{bi.Index.Digest: true}
	for _, b := range bi.Images {
		for _, d := range b.Blobs() {
			if !seen[d.Digest] {
				seen[d.Digest] = true
				out = append(out, d)
			}
		}
	}
	return out
}

// Blobs builds idx and returns the descriptors of all its blobs.
func (idx *Index) Blobs() ([]ocispec.Descriptor, error) {
	bi, err := idx.Build()
	if err != nil {
		return nil, err
	}
	return bi.Blobs(), nil
}

// Platforms is the platforms of MultiPlatform.
var Platforms = []ocispec.Platform{
	{OS: "linux", Architecture: "amd64"},
	{OS: "linux", Architecture: "arm64"},
	{OS: "linux", Architecture: "arm", Variant: "v7"},
}

// MultiPlatform returns an index with one small image per platform in
// Platforms (linux/amd64, linux/arm64, linux/arm/v7). Each image has two
// layers: one shared by all, one naming its platform in /etc/platform.
func MultiPlatform(f Format, c Compression) (*Index, error) {
	shared, err := NewLayer(c, Dir("etc", 0o755), File("etc/os-release", []byte("ID=testimage\n"), 0o644))
	if err != nil {
		return nil, err
	}
	idx := &Index{Format: f}
	for _, p := range Platforms {
		name := p.OS + "/" + p.Architecture
		if p.Variant != "" {
			name += "/" + p.Variant
		}
		own, err := NewLayer(c, File("etc/platform", []byte(name+"\n"), 0o644))
		if err != nil {
			return nil, err
		}
		var cfg ocispec.Image
		cfg.Platform = p
		idx.Images = append(idx.Images, &Image{Format: f, Layers: []*Layer{shared, own}, Config: cfg})
	}
	return idx, nil
}
