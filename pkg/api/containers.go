package api

import (
	"encoding/json"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stevedore/stevedore/pkg/events"
)

// Container and task endpoints of the gateway. Mutations record a request
// event and reply with the operation; the node's executor does the work and
// records what happened, which a client follows with Wait.
const (
	SubjectContainersCreate = "sd.api.containers.create" // ContainerCreateRequest → OpReply
	SubjectContainersStart  = "sd.api.containers.start"  // ContainerStartRequest → OpReply
	SubjectContainersKill   = "sd.api.containers.kill"   // ContainerKillRequest → OpReply
	SubjectContainersDelete = "sd.api.containers.delete" // ContainerDeleteRequest → OpReply
	SubjectContainersLabel  = "sd.api.containers.label"  // ContainerLabelRequest → OpReply
	SubjectContainersList   = "sd.api.containers.list"   // ContainersListRequest → ContainersListReply
	SubjectContainersInfo   = "sd.api.containers.info"   // ContainerRequest → Container
)

// Task log endpoint, served by each node's executor.
const ExecutorService = "stevedore-executor"

// TaskLogsSubject is the subject of a node's task log endpoint.
func TaskLogsSubject(node string) string { return "sd.node." + node + ".tasks.logs" }

// ContainerCreateRequest creates (and with Start, starts) a container.
type ContainerCreateRequest struct {
	Namespace string `json:"namespace,omitempty"`
	// ID is the container id; empty picks a random one.
	ID    string `json:"id,omitempty"`
	Image string `json:"image"`
	// Node runs the container; empty means the gateway's node.
	Node    string                  `json:"node,omitempty"`
	Options events.ContainerOptions `json:"options"`
	Rm      bool                    `json:"rm,omitempty"`
	Start   bool                    `json:"start,omitempty"`
	Stdin   bool                    `json:"stdin,omitempty"`
}

// ContainerStartRequest starts a created container's task.
type ContainerStartRequest struct {
	Namespace string `json:"namespace,omitempty"`
	ID        string `json:"id"`
	Stdin     bool   `json:"stdin,omitempty"`
}

// ContainerKillRequest signals a container's task.
type ContainerKillRequest struct {
	Namespace string `json:"namespace,omitempty"`
	ID        string `json:"id"`
	// Signal is a name ("SIGTERM", "TERM", "KILL") or a number; default SIGTERM.
	Signal string `json:"signal,omitempty"`
}

// ContainerDeleteRequest removes a container (its task must have exited,
// unless Force, which kills it first).
type ContainerDeleteRequest struct {
	Namespace string `json:"namespace,omitempty"`
	ID        string `json:"id"`
	Force     bool   `json:"force,omitempty"`
}

// ContainerLabelRequest sets labels; an empty value removes the label.
type ContainerLabelRequest struct {
	Namespace string            `json:"namespace,omitempty"`
	ID        string            `json:"id"`
	Labels    map[string]string `json:"labels"`
}

// ContainersListRequest lists containers.
type ContainersListRequest struct {
	Namespace string `json:"namespace,omitempty"`
}

// ContainerRequest names one container.
type ContainerRequest struct {
	Namespace string `json:"namespace,omitempty"`
	ID        string `json:"id"`
}

// Task states.
const (
	TaskCreated = "created" // container exists, task never started
	TaskRunning = "running"
	TaskStopped = "stopped"
)

// Task is a container's process.
type Task struct {
	Status    string    `json:"status"`
	Pid       int       `json:"pid,omitempty"`
	ExitCode  *int      `json:"exit_code,omitempty"`
	Signal    string    `json:"signal,omitempty"`
	OOMKilled bool      `json:"oom_killed,omitempty"`
	StartedAt time.Time `json:"started_at,omitzero"`
	ExitedAt  time.Time `json:"exited_at,omitzero"`
}

// Container is one container in the view.
type Container struct {
	ID          string            `json:"id"`
	Image       string            `json:"image"`
	ImageDigest digest.Digest     `json:"image_digest"`
	SnapshotKey string            `json:"snapshot_key"`
	Snapshotter string            `json:"snapshotter"`
	Node        string            `json:"node"`
	Labels      map[string]string `json:"labels,omitempty"`
	Rm          bool              `json:"rm,omitempty"`
	Created     time.Time         `json:"created"`
	Spec        json.RawMessage   `json:"spec,omitempty"`
	Task        Task              `json:"task"`
}

// ContainersListReply lists containers (without their specs).
type ContainersListReply struct {
	Containers []Container `json:"containers"`
}

// TaskLogsRequest reads a task's log: up to Length bytes (at most
// MaxReadChunk) of Stream ("stdout" or "stderr") from Offset. The reply is
// the raw bytes; empty means the end for now.
type TaskLogsRequest struct {
	Namespace string `json:"namespace,omitempty"`
	ID        string `json:"id"`
	Stream    string `json:"stream"`
	Offset    int64  `json:"offset"`
	Length    int64  `json:"length"`
}
