package images

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore/stevedore/pkg/errdefs"
)

// ChildDescriptor is a descriptor listed by an index or a manifest, with the
// role it plays in the image.
type ChildDescriptor struct {
	Descriptor ocispec.Descriptor
	// Role is RoleIndex, RoleManifest, RoleConfig or RoleLayer.
	Role string
}

// manifestOrIndex holds the fields of both an index and a manifest, so one
// decode can tell which of the two a blob really is.
type manifestOrIndex struct {
	SchemaVersion *int                 `json:"schemaVersion"`
	MediaType     string               `json:"mediaType,omitempty"`
	Config        *ocispec.Descriptor  `json:"config,omitempty"`
	Layers        []ocispec.Descriptor `json:"layers,omitempty"`
	Manifests     []ocispec.Descriptor `json:"manifests,omitempty"`
	FSLayers      json.RawMessage      `json:"fsLayers,omitempty"`
}

// Children returns the descriptors an index or manifest blob lists, with a
// manifest size limit of DefaultMaxManifestSize. See ChildrenLimit.
func Children(blob []byte, desc ocispec.Descriptor, platform Platform) ([]ChildDescriptor, error) {
	return ChildrenLimit(blob, desc, platform, DefaultMaxManifestSize)
}

// ChildrenLimit returns the descriptors the index or manifest blob (described
// by desc) lists.
//
// For an index (OCI index or Docker manifest list) it returns exactly one
// child: the manifest (or nested index) that best matches platform, exact
// matches before compatible ones (arm/v7 before arm/v6), earlier entries
// before later ones on a tie; an entry without a platform matches last. When
// nothing matches, the error wraps errdefs.ErrNotFound and lists the
// platforms the index offers.
//
// For a manifest (OCI or Docker schema 2) it returns the config first and
// then the layers in order.
//
// Errors: a blob larger than maxSize, or a desc.Size larger than maxSize,
// wraps errdefs.ErrResourceExhausted; bytes that do not match desc's size or
// digest wrap errdefs.ErrDataLoss; JSON that is malformed, does not match
// desc.MediaType, or lists a descriptor with a bad digest, a negative size or
// an unknown layer type wraps errdefs.ErrInvalidArgument; a media type that is
// neither an index nor a manifest (including Docker schema 1) wraps
// errdefs.ErrInvalidArgument.
func ChildrenLimit(blob []byte, desc ocispec.Descriptor, platform Platform, maxSize int64) ([]ChildDescriptor, error) {
	if err := checkBlob(blob, desc, maxSize, "manifest"); err != nil {
		return nil, err
	}
	mt := baseType(desc.MediaType)
	switch mt {
	case MediaTypeDockerSchema1Manifest, MediaTypeDockerSchema1SignedManifest:
		return nil, fmt.Errorf("manifest %s is a Docker schema 1 manifest, which is not supported (push the image again with a current client): %w",
			desc.Digest, errdefs.ErrInvalidArgument)
	}
	if !IsIndex(mt) && !IsManifest(mt) {
		return nil, fmt.Errorf("blob %s has media type %q, which is neither an image index nor a manifest: %w",
			desc.Digest, desc.MediaType, errdefs.ErrInvalidArgument)
	}
	var m manifestOrIndex
	if err := json.Unmarshal(blob, &m); err != nil {
		return nil, fmt.Errorf("%s %s is not valid JSON: %v: %w", kindOf(mt), desc.Digest, err, errdefs.ErrInvalidArgument)
	}
	if err := checkShape(&m, desc); err != nil {
		return nil, err
	}
	if IsIndex(mt) {
		return indexChildren(&m, desc, platform)
	}
	return manifestChildren(&m, desc)
}

func kindOf(mediaType string) string {
	if IsIndex(mediaType) {
		return "index"
	}
	return "manifest"
}

// checkBlob applies the size limit and verifies blob against desc.
func checkBlob(blob []byte, desc ocispec.Descriptor, maxSize int64, what string) error {
	if err := desc.Digest.Validate(); err != nil {
		return fmt.Errorf("%s descriptor has an invalid digest %q: %v: %w", what, desc.Digest, err, errdefs.ErrInvalidArgument)
	}
	if desc.Size < 0 {
		return fmt.Errorf("%s %s has a negative size %d: %w", what, desc.Digest, desc.Size, errdefs.ErrInvalidArgument)
	}
	if desc.Size > maxSize || int64(len(blob)) > maxSize {
		return fmt.Errorf("%s %s is %d bytes, over the limit of %d bytes: %w",
			what, desc.Digest, max(desc.Size, int64(len(blob))), maxSize, errdefs.ErrResourceExhausted)
	}
	if int64(len(blob)) != desc.Size {
		return fmt.Errorf("%s %s is %d bytes, but its descriptor says %d: %w", what, desc.Digest, len(blob), desc.Size, errdefs.ErrDataLoss)
	}
	if got := desc.Digest.Algorithm().FromBytes(blob); got != desc.Digest {
		return fmt.Errorf("%s bytes hash to %s, not %s: %w", what, got, desc.Digest, errdefs.ErrDataLoss)
	}
	return nil
}

// checkShape verifies that the decoded JSON is what desc.MediaType says.
func checkShape(m *manifestOrIndex, desc ocispec.Descriptor) error {
	mt := baseType(desc.MediaType)
	kind := kindOf(mt)
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s %s (%s): %s: %w", kind, desc.Digest, desc.MediaType, fmt.Sprintf(format, args...), errdefs.ErrInvalidArgument)
	}
	if m.FSLayers != nil {
		return bad("it is a Docker schema 1 manifest, which is not supported")
	}
	if m.SchemaVersion == nil || *m.SchemaVersion != 2 {
		return bad("schemaVersion must be 2")
	}
	if m.MediaType != "" && baseType(m.MediaType) != mt {
		return bad("its mediaType field says %q", m.MediaType)
	}
	isDocker := strings.HasPrefix(mt, "application/vnd.docker.")
	if isDocker && m.MediaType == "" {
		return bad("a Docker schema 2 %s must have a mediaType field", kind)
	}
	if IsIndex(mt) {
		if m.Config != nil || m.Layers != nil {
			return bad("it has config or layers, so it is a manifest, not an index")
		}
		for i, d := range m.Manifests {
			if err := checkDescriptor(d); err != nil {
				return bad("manifests[%d]: %v", i, err)
			}
		}
		return nil
	}
	if m.Manifests != nil {
		return bad("it has a manifests field, so it is an index, not a manifest")
	}
	if m.Config == nil {
		return bad("it has no config")
	}
	if err := checkDescriptor(*m.Config); err != nil {
		return bad("config: %v", err)
	}
	if !IsConfig(m.Config.MediaType) {
		return bad("config media type %q is not an image config, so this is not a container image", m.Config.MediaType)
	}
	for i, d := range m.Layers {
		if err := checkDescriptor(d); err != nil {
			return bad("layers[%d]: %v", i, err)
		}
		if !IsLayer(d.MediaType) {
			return bad("layers[%d] has media type %q, which is not a layer type Stevedore can unpack", i, d.MediaType)
		}
	}
	return nil
}

func checkDescriptor(d ocispec.Descriptor) error {
	if err := d.Digest.Validate(); err != nil {
		return fmt.Errorf("invalid digest %q: %v", d.Digest, err)
	}
	if d.Size < 0 {
		return fmt.Errorf("negative size %d", d.Size)
	}
	if d.MediaType == "" {
		return fmt.Errorf("no media type")
	}
	return nil
}

func indexChildren(m *manifestOrIndex, desc ocispec.Descriptor, platform Platform) ([]ChildDescriptor, error) {
	type candidate struct {
		desc ocispec.Descriptor
		rank int
		pos  int
	}
	var (
		cands     []candidate
		available []string
	)
	const noPlatformRank = 1 << 20
	for i, d := range m.Manifests {
		if !IsManifest(d.MediaType) && !IsIndex(d.MediaType) {
			continue // artifacts, attestations with their own types
		}
		if d.Platform == nil {
			cands = append(cands, candidate{d, noPlatformRank, i})
			available = append(available, "(no platform)")
			continue
		}
		available = append(available, FromOCI(*d.Platform).String())
		if r, ok := platform.rank(*d.Platform); ok {
			cands = append(cands, candidate{d, r, i})
		}
	}
	if len(cands) == 0 {
		list := strings.Join(dedupe(available), ", ")
		if list == "" {
			list = "none"
		}
		return nil, fmt.Errorf("no manifest for platform %s in index %s, available: %s: %w",
			platform, desc.Digest, list, errdefs.ErrNotFound)
	}
	sort.SliceStable(cands, func(i, j int) bool {
		if cands[i].rank != cands[j].rank {
			return cands[i].rank < cands[j].rank
		}
		return cands[i].pos < cands[j].pos
	})
	best := cands[0].desc
	role := RoleManifest
	if IsIndex(best.MediaType) {
		role = RoleIndex
	}
	return []ChildDescriptor{{Descriptor: best, Role: role}}, nil
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func manifestChildren(m *manifestOrIndex, _ ocispec.Descriptor) ([]ChildDescriptor, error) {
	out := make([]ChildDescriptor, 0, 1+len(m.Layers))
	out = append(out, ChildDescriptor{Descriptor: *m.Config, Role: RoleConfig})
	for _, l := range m.Layers {
		out = append(out, ChildDescriptor{Descriptor: l, Role: RoleLayer})
	}
	return out, nil
}

// SniffMediaType returns the media type of a manifest or index blob whose
// media type is unknown (a registry that answered with a generic
// Content-Type): its mediaType field if it has one, otherwise the OCI index
// or manifest type by shape. It returns "" when blob is neither.
func SniffMediaType(blob []byte) string {
	var m manifestOrIndex
	if err := json.Unmarshal(blob, &m); err != nil {
		return ""
	}
	if m.MediaType != "" {
		return m.MediaType
	}
	switch {
	case m.FSLayers != nil:
		return MediaTypeDockerSchema1Manifest
	case m.Manifests != nil && m.Config == nil:
		return MediaTypeOCIIndex
	case m.Config != nil && m.Manifests == nil:
		return MediaTypeOCIManifest
	}
	return ""
}

// ParseConfig returns the creation time (nil when the config has none) and
// the layer diffIDs of an image config blob. A blob over
// DefaultMaxConfigSize wraps errdefs.ErrResourceExhausted; malformed JSON, a
// rootfs type other than "layers" or an invalid diffID wraps
// errdefs.ErrInvalidArgument.
func ParseConfig(blob []byte) (created *time.Time, diffIDs []digest.Digest, err error) {
	if len(blob) > DefaultMaxConfigSize {
		return nil, nil, fmt.Errorf("image config is %d bytes, over the limit of %d bytes: %w",
			len(blob), DefaultMaxConfigSize, errdefs.ErrResourceExhausted)
	}
	var img ocispec.Image
	dec := json.NewDecoder(bytes.NewReader(blob))
	if err := dec.Decode(&img); err != nil {
		return nil, nil, fmt.Errorf("image config is not valid JSON: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if img.RootFS.Type != "layers" {
		return nil, nil, fmt.Errorf("image config rootfs type is %q, want \"layers\": %w", img.RootFS.Type, errdefs.ErrInvalidArgument)
	}
	for i, d := range img.RootFS.DiffIDs {
		if err := d.Validate(); err != nil {
			return nil, nil, fmt.Errorf("image config diff_ids[%d] %q is invalid: %v: %w", i, d, err, errdefs.ErrInvalidArgument)
		}
	}
	if img.Created != nil {
		t := *img.Created
		created = &t
	}
	return created, img.RootFS.DiffIDs, nil
}
