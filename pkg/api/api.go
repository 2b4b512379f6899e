// Package api defines the request/reply API the gateway serves as a NATS
// micro service and the client package calls: subjects, requests, replies and
// how errors travel. It carries data only.
package api

import (
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore/stevedore/pkg/content"
)

// ServiceName is the micro service name (`nats micro ls` shows it).
const ServiceName = "stevedore"

// ServiceVersion is the API's semantic version.
const ServiceVersion = "0.1.0"

// Endpoint subjects. Each takes the request type named beside it as JSON and
// replies with the reply type, or with a micro error whose code is an
// errdefs code (errdefs.Code) and whose description is the message.
const (
	SubjectPull          = "sd.api.pull"           // PullRequest → OpReply
	SubjectImagesList    = "sd.api.images.list"    // ImagesListRequest → ImagesListReply
	SubjectImagesRemove  = "sd.api.images.remove"  // ImageRemoveRequest → OpReply
	SubjectContentList   = "sd.api.content.list"   // ContentListRequest → ContentListReply
	SubjectContentInfo   = "sd.api.content.info"   // ContentRequest → content.Info
	SubjectContentRead   = "sd.api.content.read"   // ContentReadRequest → raw bytes
	SubjectContentDelete = "sd.api.content.delete" // ContentRequest → OpReply
	SubjectContentActive = "sd.api.content.active" // ContentListRequest → ContentActiveReply
	SubjectOperation     = "sd.api.ops.get"        // OperationRequest → Operation
)

// ErrorCodeHeader is unused by micro (which sets Nats-Service-Error-Code);
// the code is an errdefs code string such as "not_found".

// MaxReadChunk is the most bytes one ContentReadRequest returns.
const MaxReadChunk = 512 << 10

// PullRequest asks for an image to be pulled.
type PullRequest struct {
	Namespace string `json:"namespace,omitempty"`
	Ref       string `json:"ref"`
	// Platform is "os/arch[/variant]"; empty means the gateway host's.
	Platform  string `json:"platform,omitempty"`
	Unpack    bool   `json:"unpack,omitempty"`
	PlainHTTP bool   `json:"plain_http,omitempty"`
}

// OpReply says which operation a request started and where its first event
// is in the log, so a client can follow it from there.
type OpReply struct {
	Operation string `json:"operation"`
	Seq       uint64 `json:"seq"`
	// Ref is the normalized reference, where the request had one.
	Ref string `json:"ref,omitempty"`
}

// ImagesListRequest lists images.
type ImagesListRequest struct {
	Namespace string `json:"namespace,omitempty"`
}

// Image is one image in the view.
type Image struct {
	Name      string             `json:"name"`
	Target    ocispec.Descriptor `json:"target"`
	Size      int64              `json:"size"`
	Created   *time.Time         `json:"created,omitempty"`
	Platform  string             `json:"platform,omitempty"`
	UpdatedAt time.Time          `json:"updated_at"`
	// Unpacked lists the nodes where the image's layers are snapshots.
	Unpacked []string `json:"unpacked,omitempty"`
}

// ImagesListReply is the images view.
type ImagesListReply struct {
	Images []Image `json:"images"`
}

// ImageRemoveRequest removes an image name.
type ImageRemoveRequest struct {
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// ContentListRequest lists content on the gateway's node.
type ContentListRequest struct {
	Namespace string `json:"namespace,omitempty"`
}

// ContentListReply lists committed blobs.
type ContentListReply struct {
	Blobs []content.Info `json:"blobs"`
}

// ContentActiveReply lists active ingests.
type ContentActiveReply struct {
	Active []content.Status `json:"active"`
}

// ContentRequest names one blob.
type ContentRequest struct {
	Namespace string        `json:"namespace,omitempty"`
	Digest    digest.Digest `json:"digest"`
}

// ContentReadRequest reads up to Length bytes (at most MaxReadChunk) of a
// blob from Offset. The reply body is the raw bytes; an empty body means the
// end of the blob.
type ContentReadRequest struct {
	Digest digest.Digest `json:"digest"`
	Offset int64         `json:"offset"`
	Length int64         `json:"length"`
}

// OperationRequest asks for one operation's state.
type OperationRequest struct {
	Operation string `json:"operation"`
}

// Operation states.
const (
	OpRunning   = "running"
	OpCompleted = "completed"
	OpFailed    = "failed"
)

// Operation is the view of one operation (one ctl command's effects).
type Operation struct {
	ID        string    `json:"id"`
	Kind      string    `json:"kind"`
	Ref       string    `json:"ref,omitempty"`
	State     string    `json:"state"`
	Message   string    `json:"message,omitempty"`
	Code      string    `json:"code,omitempty"`
	Actor     string    `json:"actor,omitempty"`
	StartedAt time.Time `json:"started_at"`
	EndedAt   time.Time `json:"ended_at,omitzero"`
}

// Snapshot endpoints are served by each node's unpacker (which owns the
// node's snapshots), on subjects that name the node.
const (
	SnapshotsService = "stevedore-snapshots"
)

// SnapshotsSubject returns the subject of a node's snapshot endpoint verb
// ("list", "mounts", "remove").
func SnapshotsSubject(node, verb string) string { return "sd.node." + node + ".snapshots." + verb }

// SnapshotsListRequest lists a node's snapshots.
type SnapshotsListRequest struct{}

// Snapshot is one snapshot on a node.
type Snapshot struct {
	Key     string            `json:"key"`
	Parent  string            `json:"parent,omitempty"`
	Kind    string            `json:"kind"`
	Size    int64             `json:"size"`
	Inodes  int64             `json:"inodes"`
	Created time.Time         `json:"created"`
	Labels  map[string]string `json:"labels,omitempty"`
}

// SnapshotsListReply is a node's snapshots.
type SnapshotsListReply struct {
	Node        string     `json:"node"`
	Snapshotter string     `json:"snapshotter"`
	Snapshots   []Snapshot `json:"snapshots"`
}

// SnapshotRequest names one snapshot.
type SnapshotRequest struct {
	Key string `json:"key"`
}

// Mount is a mount as data: what a person would pass to mount(8).
type Mount struct {
	Type    string   `json:"type"`
	Source  string   `json:"source"`
	Options []string `json:"options,omitempty"`
}

// SnapshotMountsReply is how to mount a snapshot.
type SnapshotMountsReply struct {
	Mounts []Mount `json:"mounts"`
	// Command is a mount(8) command line for TARGET.
	Command string `json:"command"`
	// Snapshotter names the snapshotter that holds the snapshot.
	Snapshotter string `json:"snapshotter,omitempty"`
}

// SnapshotRemoveReply says where the removal was recorded in the log.
type SnapshotRemoveReply struct {
	Seq uint64 `json:"seq"`
}

// SnapshotPrepareRequest prepares an active snapshot on a committed parent
// (a container's rootfs). The reply is a SnapshotMountsReply.
type SnapshotPrepareRequest struct {
	Key    string            `json:"key"`
	Parent string            `json:"parent"`
	Labels map[string]string `json:"labels,omitempty"`
}
