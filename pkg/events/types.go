package events

import (
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The event catalogue. docs/events.md documents each one; keep them in step.
const (
	// TypePullRequested: a client asked for REF to be pulled. Aggregate pull/<op>.
	TypePullRequested Type = "pull-requested"
	// TypeDescriptorResolved: a descriptor of the image being pulled is known
	// (the root from resolving the reference, children from reading their
	// parent) and is a unit of fetch work. Aggregate blob/<hex>.
	TypeDescriptorResolved Type = "descriptor-resolved"
	// TypeBlobCommitted: a blob is in the node's content store, verified.
	// Aggregate blob/<hex>.
	TypeBlobCommitted Type = "blob-committed"
	// TypeImageUpdated: an image name now points at a target. Aggregate image/<name token>.
	TypeImageUpdated Type = "image-updated"
	// TypePullCompleted: every blob of the pulled image is committed. Aggregate pull/<op>.
	TypePullCompleted Type = "pull-completed"
	// TypePullFailed: the pull cannot finish. Aggregate pull/<op>.
	TypePullFailed Type = "pull-failed"
	// TypeImageDeleted: an image name was removed. Aggregate image/<name token>.
	TypeImageDeleted Type = "image-deleted"
	// TypeContentDeleteRequested: a client asked for a blob to be removed
	// from the node's content store. Aggregate blob/<hex>.
	TypeContentDeleteRequested Type = "content-delete-requested"
	// TypeBlobDeleted: a blob was removed from the node's content store.
	// Aggregate blob/<hex>.
	TypeBlobDeleted Type = "blob-deleted"
	// TypeContentDeleteFailed: a requested blob removal did not happen.
	// Aggregate blob/<hex>.
	TypeContentDeleteFailed Type = "content-delete-failed"
	// TypeUnpackRequested: every blob of an image that is to be unpacked is
	// committed; the unpacker makes its snapshots. Aggregate image/<name token>.
	TypeUnpackRequested Type = "unpack-requested"
	// TypeLayerApplied: a layer is a committed snapshot on a node.
	// Aggregate snapshot/<chainID hex>.
	TypeLayerApplied Type = "layer-applied"
	// TypeImageUnpacked: every layer of an image is a committed snapshot
	// on a node, so its rootfs can be prepared. Aggregate image/<name token>.
	TypeImageUnpacked Type = "image-unpacked"
	// TypeSnapshotRemoved: a snapshot was removed from a node.
	// Aggregate snapshot/<key token>.
	TypeSnapshotRemoved Type = "snapshot-removed"
)

// catalogue is every event type, in the order docs/events.md documents
// them. A new Type constant goes here too (a test checks that each one is).
var catalogue = []Type{
	TypePullRequested, TypeDescriptorResolved, TypeBlobCommitted, TypeImageUpdated,
	TypeUnpackRequested, TypeLayerApplied, TypeImageUnpacked, TypeSnapshotRemoved,
	TypePullCompleted, TypePullFailed, TypeImageDeleted,
	TypeContentDeleteRequested, TypeBlobDeleted, TypeContentDeleteFailed,
	TypeContainerCreateRequested, TypeContainerCreated, TypeContainerCreateFailed, TypeContainerCreateRefused,
	TypeTaskStartRequested, TypeTaskStarted, TypeTaskStartFailed, TypeTaskKillRequested, TypeTaskExited,
	TypeContainerDeleteRequested, TypeContainerDeleted, TypeContainerDeleteFailed,
	TypeContainerLabelsUpdated,
}

// Types returns every event type of the catalogue, in the order
// docs/events.md documents them. The slice is the caller's to change.
func Types() []Type { return slices.Clone(catalogue) }

// KnownType reports whether t is an event type of the catalogue.
func KnownType(t Type) bool { return slices.Contains(catalogue, t) }

// KindSnapshot is the aggregate kind of snapshots; the id is the chainID's
// hex for committed layers, EncodeToken(key) otherwise.
const KindSnapshot = "snapshot"

// Blob roles in an image.
const (
	RoleIndex    = "index"
	RoleManifest = "manifest"
	RoleConfig   = "config"
	RoleLayer    = "layer"
)

// PullRequested is the payload of TypePullRequested.
type PullRequested struct {
	// Ref is the normalized reference, e.g. "registry.example:5000/app:1.0".
	Ref string `json:"ref"`
	// Platform is the requested platform ("os/arch[/variant]").
	Platform string `json:"platform"`
	// Unpack asks for the image's layers to be unpacked after fetching.
	Unpack bool `json:"unpack"`
	// PlainHTTP allows plain HTTP to a registry that is not on loopback.
	PlainHTTP bool `json:"plain_http,omitempty"`
}

// DescriptorResolved is the payload of TypeDescriptorResolved.
type DescriptorResolved struct {
	Ref        string             `json:"ref"`
	Platform   string             `json:"platform"`
	PlainHTTP  bool               `json:"plain_http,omitempty"`
	Role       string             `json:"role"`
	Descriptor ocispec.Descriptor `json:"descriptor"`
	// Parent is the digest of the index or manifest that listed it; empty for the root.
	Parent digest.Digest `json:"parent,omitempty"`
	// Root is the digest the reference resolved to.
	Root digest.Digest `json:"root"`
	// RootMediaType is the media type of Root.
	RootMediaType string `json:"root_media_type"`
	// Depth is the nesting depth below the root (0 for the root).
	Depth int `json:"depth"`
	// Unpack is carried from the request: unpack once fetched.
	Unpack bool `json:"unpack,omitempty"`
}

// BlobCommitted is the payload of TypeBlobCommitted.
type BlobCommitted struct {
	Ref        string             `json:"ref"`
	Role       string             `json:"role"`
	Descriptor ocispec.Descriptor `json:"descriptor"`
	// Existing is true when the blob was already in the store and nothing was downloaded.
	Existing bool `json:"existing"`
	// Fetched is the number of bytes downloaded by this fetch (less than the
	// size when an interrupted ingest was resumed).
	Fetched int64 `json:"fetched"`
	// Duration is how long the fetch took.
	Duration time.Duration `json:"duration_ns"`
	// Parent is the index or manifest that listed the blob (empty for the root).
	Parent digest.Digest `json:"parent,omitempty"`
	// Unpack is carried from the request: layers are unpacked as they land.
	Unpack bool `json:"unpack,omitempty"`
}

// ImageUpdated is the payload of TypeImageUpdated.
type ImageUpdated struct {
	Name   string             `json:"name"`
	Target ocispec.Descriptor `json:"target"`
	// Size is the sum of the sizes of every blob of the image on this platform.
	Size int64 `json:"size"`
	// Created is the image config's creation time, if it has one.
	Created  *time.Time `json:"created,omitempty"`
	Platform string     `json:"platform"`
}

// PullCompleted is the payload of TypePullCompleted.
type PullCompleted struct {
	Ref    string        `json:"ref"`
	Target digest.Digest `json:"target"`
	Size   int64         `json:"size"`
	Blobs  int           `json:"blobs"`
}

// PullFailed is the payload of TypePullFailed.
type PullFailed struct {
	Ref string `json:"ref"`
	// Code is the error class (errdefs.Code).
	Code string `json:"code"`
	// Message says what went wrong in words a person understands.
	Message string `json:"message"`
	// Digest names the blob that failed, if one did.
	Digest digest.Digest `json:"digest,omitempty"`
}

// ImageDeleted is the payload of TypeImageDeleted.
type ImageDeleted struct {
	Name string `json:"name"`
}

// ContentDeleteRequested is the payload of TypeContentDeleteRequested.
type ContentDeleteRequested struct {
	Digest digest.Digest `json:"digest"`
}

// BlobDeleted is the payload of TypeBlobDeleted.
type BlobDeleted struct {
	Digest digest.Digest `json:"digest"`
}

// ContentDeleteFailed is the payload of TypeContentDeleteFailed.
type ContentDeleteFailed struct {
	Digest  digest.Digest `json:"digest"`
	Code    string        `json:"code"`
	Message string        `json:"message"`
}

// UnpackRequested is the payload of TypeUnpackRequested. It carries the
// image as resolved for the platform, so the unpacker reads nothing but
// the layers.
type UnpackRequested struct {
	Ref      string             `json:"ref"`
	Target   ocispec.Descriptor `json:"target"`
	Manifest digest.Digest      `json:"manifest"`
	Config   digest.Digest      `json:"config"`
	// Layers are the manifest's layers, base first.
	Layers []ocispec.Descriptor `json:"layers"`
	// DiffIDs are the config's rootfs.diff_ids, one per layer.
	DiffIDs []digest.Digest `json:"diff_ids"`
	// Size and Blobs describe the whole image, for the pull's completion.
	Size  int64 `json:"size"`
	Blobs int   `json:"blobs"`
}

// LayerApplied is the payload of TypeLayerApplied.
type LayerApplied struct {
	Ref     string        `json:"ref"`
	ChainID digest.Digest `json:"chain_id"`
	Parent  digest.Digest `json:"parent,omitempty"`
	DiffID  digest.Digest `json:"diff_id"`
	Layer   digest.Digest `json:"layer"`
	// Index is the layer's position in the image, base = 0.
	Index int `json:"index"`
	// Size is the layer's uncompressed size.
	Size int64 `json:"size"`
	// Existing is true when the snapshot was already there.
	Existing    bool          `json:"existing"`
	Duration    time.Duration `json:"duration_ns"`
	Snapshotter string        `json:"snapshotter"`
}

// ImageUnpacked is the payload of TypeImageUnpacked.
type ImageUnpacked struct {
	Name   string        `json:"name"`
	Target digest.Digest `json:"target"`
	// ChainID is the top layer's chainID: the parent of a container's rootfs.
	ChainID     digest.Digest `json:"chain_id"`
	Layers      int           `json:"layers"`
	Snapshotter string        `json:"snapshotter"`
}

// SnapshotRemoved is the payload of TypeSnapshotRemoved.
type SnapshotRemoved struct {
	Key         string `json:"key"`
	Snapshotter string `json:"snapshotter"`
}

// Progress is a live, unpersisted progress tick published on
// ProgressSubject(op) while a blob downloads.
type Progress struct {
	Digest digest.Digest `json:"digest"`
	Role   string        `json:"role"`
	Offset int64         `json:"offset"`
	Total  int64         `json:"total"`
	Node   string        `json:"node,omitempty"`
}

// BlobAggregate returns the aggregate for a blob digest.
func BlobAggregate(d digest.Digest) Aggregate { return Aggregate{Kind: KindBlob, ID: d.Encoded()} }

// PullAggregate returns the aggregate for a pull operation.
func PullAggregate(op string) Aggregate { return Aggregate{Kind: KindPull, ID: op} }

// SnapshotAggregate returns the aggregate for a snapshot key: the hex of a
// chainID key, the encoded key otherwise.
func SnapshotAggregate(key string) Aggregate {
	if d, err := digest.Parse(key); err == nil {
		return Aggregate{Kind: KindSnapshot, ID: d.Encoded()}
	}
	return Aggregate{Kind: KindSnapshot, ID: EncodeToken(key)}
}

// ImageAggregate returns the aggregate for an image name.
func ImageAggregate(name string) Aggregate { return Aggregate{Kind: KindImage, ID: EncodeToken(name)} }
