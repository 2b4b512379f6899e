// Package images holds pure functions over image JSON: the media types of
// OCI and Docker schema 2 images, the children of an index or a manifest
// (with platform selection), platform parsing and matching in the manner of
// containerd, and the few fields of an image config Stevedore needs.
//
// Nothing here does I/O. Callers pass the bytes of a blob that has already
// been fetched and verified (or that this package verifies against its
// descriptor), and get back descriptors to fetch next.
package images

import (
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Media types of OCI images.
const (
	MediaTypeOCIIndex    = ocispec.MediaTypeImageIndex
	MediaTypeOCIManifest = ocispec.MediaTypeImageManifest
	MediaTypeOCIConfig   = ocispec.MediaTypeImageConfig

	MediaTypeOCILayer     = ocispec.MediaTypeImageLayer
	MediaTypeOCILayerGzip = ocispec.MediaTypeImageLayerGzip
	MediaTypeOCILayerZstd = ocispec.MediaTypeImageLayerZstd

	// Nondistributable ("foreign") OCI layers: the registry may not hold
	// them; their descriptor may carry URLs.
	MediaTypeOCILayerNonDistributable     = "application/vnd.oci.image.layer.nondistributable.v1.tar"
	MediaTypeOCILayerNonDistributableGzip = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
	MediaTypeOCILayerNonDistributableZstd = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
)

// Media types of Docker schema 2 images.
const (
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerConfig       = "application/vnd.docker.container.image.v1+json"

	MediaTypeDockerLayer     = "application/vnd.docker.image.rootfs.diff.tar"
	MediaTypeDockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	MediaTypeDockerLayerZstd = "application/vnd.docker.image.rootfs.diff.tar.zstd"

	// Foreign Docker layers (Windows base layers): the registry may not hold
	// them; their descriptor may carry URLs.
	MediaTypeDockerLayerForeign     = "application/vnd.docker.image.rootfs.foreign.diff.tar"
	MediaTypeDockerLayerForeignGzip = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

	// MediaTypeDockerSchema1Manifest is recognized only to be refused with a
	// clear message; schema 1 images are not supported.
	MediaTypeDockerSchema1Manifest       = "application/vnd.docker.distribution.manifest.v1+json"
	MediaTypeDockerSchema1SignedManifest = "application/vnd.docker.distribution.manifest.v1+prettyjws"
)

// Compression names returned by LayerCompression.
const (
	CompressionNone = ""
	CompressionGzip = "gzip"
	CompressionZstd = "zstd"
)

// Blob roles in an image. They are the same strings as the roles in
// pkg/events (events.RoleIndex and so on).
const (
	RoleIndex    = "index"
	RoleManifest = "manifest"
	RoleConfig   = "config"
	RoleLayer    = "layer"
)

// Default limits. They bound what this package will parse: a manifest or
// index larger than DefaultMaxManifestSize or a config larger than
// DefaultMaxConfigSize is refused with errdefs.ErrResourceExhausted.
const (
	DefaultMaxManifestSize = 4 << 20
	DefaultMaxConfigSize   = 8 << 20
)

// layerTypes maps every recognized layer media type to its compression.
var layerTypes = map[string]string{
	MediaTypeOCILayer:                     CompressionNone,
	MediaTypeOCILayerGzip:                 CompressionGzip,
	MediaTypeOCILayerZstd:                 CompressionZstd,
	MediaTypeOCILayerNonDistributable:     CompressionNone,
	MediaTypeOCILayerNonDistributableGzip: CompressionGzip,
	MediaTypeOCILayerNonDistributableZstd: CompressionZstd,
	MediaTypeDockerLayer:                  CompressionNone,
	MediaTypeDockerLayerGzip:              CompressionGzip,
	MediaTypeDockerLayerZstd:              CompressionZstd,
	MediaTypeDockerLayerForeign:           CompressionNone,
	MediaTypeDockerLayerForeignGzip:       CompressionGzip,
}

// baseType strips media type parameters ("; charset=utf-8") and lowercases.
func baseType(mediaType string) string {
	if i := strings.IndexByte(mediaType, ';'); i >= 0 {
		mediaType = mediaType[:i]
	}
	return strings.ToLower(strings.TrimSpace(mediaType))
}

// IsIndex reports whether mediaType is an OCI image index or a Docker
// manifest list.
func IsIndex(mediaType string) bool {
	switch baseType(mediaType) {
	case MediaTypeOCIIndex, MediaTypeDockerManifestList:
		return true
	}
	return false
}

// IsManifest reports whether mediaType is an OCI image manifest or a Docker
// schema 2 manifest. Docker schema 1 manifests are not manifests here.
func IsManifest(mediaType string) bool {
	switch baseType(mediaType) {
	case MediaTypeOCIManifest, MediaTypeDockerManifest:
		return true
	}
	return false
}

// IsConfig reports whether mediaType is an OCI or Docker image config.
func IsConfig(mediaType string) bool {
	switch baseType(mediaType) {
	case MediaTypeOCIConfig, MediaTypeDockerConfig:
		return true
	}
	return false
}

// IsLayer reports whether mediaType is a layer this package knows: OCI or
// Docker, uncompressed, gzip or zstd, distributable or not.
func IsLayer(mediaType string) bool {
	_, ok := layerTypes[baseType(mediaType)]
	return ok
}

// IsNonDistributable reports whether mediaType is a nondistributable OCI
// layer or a foreign Docker layer, which a registry may not hold.
func IsNonDistributable(mediaType string) bool {
	mt := baseType(mediaType)
	return strings.Contains(mt, ".nondistributable.") || strings.Contains(mt, ".foreign.")
}

// LayerCompression returns the compression of a layer media type:
// CompressionGzip, CompressionZstd or CompressionNone. ok is false when
// mediaType is not a layer (see IsLayer).
func LayerCompression(mediaType string) (compression string, ok bool) {
	compression, ok = layerTypes[baseType(mediaType)]
	return compression, ok
}

// RoleOf returns the role of a blob with mediaType (RoleIndex, RoleManifest,
// RoleConfig or RoleLayer), or "" when the media type is none of these.
func RoleOf(mediaType string) string {
	switch {
	case IsIndex(mediaType):
		return RoleIndex
	case IsManifest(mediaType):
		return RoleManifest
	case IsConfig(mediaType):
		return RoleConfig
	case IsLayer(mediaType):
		return RoleLayer
	}
	return ""
}
