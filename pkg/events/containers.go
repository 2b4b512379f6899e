package events

import (
	"encoding/json"
	"time"

	"github.com/opencontainers/go-digest"
)

// KindContainer is the aggregate kind of containers and their tasks; the id
// is the container id.
const KindContainer = "container"

// Container and task lifecycle. Requests are recorded by the gateway; the
// node's executor records what happened. The executor's appends for one
// container are serialized with an expected last sequence over the
// container's subjects, so two conflicting requests cannot both win.
const (
	TypeContainerCreateRequested Type = "container-create-requested"
	TypeContainerCreated         Type = "container-created"
	TypeContainerCreateFailed    Type = "container-create-failed"
	// TypeContainerCreateRefused: the gateway refused to record a create
	// (its id is in use). The container it names is not changed.
	TypeContainerCreateRefused   Type = "container-create-refused"
	TypeTaskStartRequested       Type = "task-start-requested"
	TypeTaskStarted              Type = "task-started"
	TypeTaskStartFailed          Type = "task-start-failed"
	TypeTaskKillRequested        Type = "task-kill-requested"
	TypeTaskExited               Type = "task-exited"
	TypeContainerDeleteRequested Type = "container-delete-requested"
	TypeContainerDeleted         Type = "container-deleted"
	TypeContainerDeleteFailed    Type = "container-delete-failed"
	TypeContainerLabelsUpdated   Type = "container-labels-updated"
)

// ContainerAggregate returns the aggregate of container id.
func ContainerAggregate(id string) Aggregate { return Aggregate{Kind: KindContainer, ID: id} }

// BindMount is a host path mounted into a container.
type BindMount struct {
	Source      string `json:"source"`
	Destination string `json:"destination"`
	ReadOnly    bool   `json:"readonly,omitempty"`
}

// ContainerOptions are the run options a client gave; the executor turns
// them and the image config into the runtime spec.
type ContainerOptions struct {
	Args          []string          `json:"args,omitempty"`
	Entrypoint    []string          `json:"entrypoint,omitempty"`
	EntrypointSet bool              `json:"entrypoint_set,omitempty"`
	Env           []string          `json:"env,omitempty"`
	User          string            `json:"user,omitempty"`
	WorkingDir    string            `json:"workdir,omitempty"`
	Hostname      string            `json:"hostname,omitempty"`
	Network       string            `json:"network,omitempty"`
	Mounts        []BindMount       `json:"mounts,omitempty"`
	ReadOnly      bool              `json:"readonly,omitempty"`
	MemoryLimit   int64             `json:"memory,omitempty"`
	CPUs          float64           `json:"cpus,omitempty"`
	PidsLimit     int64             `json:"pids_limit,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
	Platform      string            `json:"platform,omitempty"`
}

// ContainerCreateRequested is the payload of TypeContainerCreateRequested.
type ContainerCreateRequested struct {
	ID      string           `json:"id"`
	Image   string           `json:"image"`
	Node    string           `json:"node"`
	Options ContainerOptions `json:"options"`
	// Rm removes the container when its task exits.
	Rm bool `json:"rm,omitempty"`
	// Start starts the task right after creating the container.
	Start bool `json:"start,omitempty"`
	// Stdin keeps the task's stdin open, fed from NATS.
	Stdin bool `json:"stdin,omitempty"`
}

// ContainerCreated is the payload of TypeContainerCreated.
type ContainerCreated struct {
	ID          string        `json:"id"`
	Image       string        `json:"image"`
	ImageDigest digest.Digest `json:"image_digest"`
	// ChainID is the image's top layer: the parent of the rootfs snapshot.
	ChainID     digest.Digest `json:"chain_id"`
	SnapshotKey string        `json:"snapshot_key"`
	Snapshotter string        `json:"snapshotter"`
	// Spec is the OCI runtime spec the task runs with.
	Spec   json.RawMessage   `json:"spec"`
	Labels map[string]string `json:"labels,omitempty"`
	Node   string            `json:"node"`
	Rm     bool              `json:"rm,omitempty"`
}

// Failure is the payload of the *-failed container and task events.
type Failure struct {
	ID      string `json:"id"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// ContainerCreateRefused is the payload of TypeContainerCreateRefused: what
// was asked, and why it was refused.
type ContainerCreateRefused struct {
	ID      string `json:"id"`
	Image   string `json:"image"`
	Node    string `json:"node"`
	Start   bool   `json:"start,omitempty"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// TaskStartRequested is the payload of TypeTaskStartRequested.
type TaskStartRequested struct {
	ID    string `json:"id"`
	Node  string `json:"node"`
	Stdin bool   `json:"stdin,omitempty"`
}

// TaskStarted is the payload of TypeTaskStarted.
type TaskStarted struct {
	ID        string    `json:"id"`
	Pid       int       `json:"pid"`
	StartedAt time.Time `json:"started_at"`
}

// TaskKillRequested is the payload of TypeTaskKillRequested.
type TaskKillRequested struct {
	ID     string `json:"id"`
	Node   string `json:"node"`
	Signal string `json:"signal"`
}

// TaskExited is the payload of TypeTaskExited.
type TaskExited struct {
	ID string `json:"id"`
	// Code is the exit code; 128+n when killed by signal n.
	Code      int       `json:"code"`
	Signal    string    `json:"signal,omitempty"`
	OOMKilled bool      `json:"oom_killed,omitempty"`
	StartedAt time.Time `json:"started_at"`
	ExitedAt  time.Time `json:"exited_at"`
}

// ContainerDeleteRequested is the payload of TypeContainerDeleteRequested.
type ContainerDeleteRequested struct {
	ID    string `json:"id"`
	Node  string `json:"node"`
	Force bool   `json:"force,omitempty"`
}

// ContainerDeleted is the payload of TypeContainerDeleted.
type ContainerDeleted struct {
	ID string `json:"id"`
}

// ContainerLabelsUpdated is the payload of TypeContainerLabelsUpdated: the
// container's labels after the update.
type ContainerLabelsUpdated struct {
	ID     string            `json:"id"`
	Labels map[string]string `json:"labels"`
}
