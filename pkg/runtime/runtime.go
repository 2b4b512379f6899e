// Package runtime is the contract between the executor and whatever runs a
// node's tasks (runc, through pkg/runtime/runc).
//
// The model is containerd's shim: every task has a small monitor process of
// its own that holds the task's stdio and records its exit status, so the
// executor may crash, be killed with SIGKILL or be upgraded while its tasks
// keep running, and a later executor process finds them again (List, State)
// and learns how they ended (Wait, Exit).
//
// Lifecycle of one task, by id:
//
//	Start ──▶ running ──(exits, or Kill)──▶ stopped ──Delete──▶ (gone from the runtime)
//
// A task's state dir (CreateOpts.StateDir) outlives Delete: it keeps the
// logs and the recorded exit until the caller removes the directory (when
// the container is removed).
//
// Errors are errdefs classes wrapped with %w: ErrNotFound for an id the
// runtime does not know, ErrAlreadyExists for Start on an id in use,
// ErrInvalidArgument for a request that cannot work (a bad id, the command
// is not in the image), ErrFailedPrecondition when the task's state forbids
// the operation (Kill of a stopped task, Delete of a running one without
// force), ErrUnavailable when runc or the monitor cannot be reached.
package runtime

import (
	"context"
	"strconv"
	"syscall"
	"time"

	"github.com/stevedore/stevedore/pkg/events"
)

// Task statuses reported in State.Status.
const (
	// StatusCreated: the container exists but its process has not been
	// started yet (only seen while Start is in progress).
	StatusCreated = "created"
	// StatusRunning: the task's process is running (or paused).
	StatusRunning = "running"
	// StatusStopped: the task's process has exited; its Exit is recorded
	// unless the monitor was killed while the task ran.
	StatusStopped = "stopped"
	// StatusUnknown: a state dir without a container or a recorded exit (a
	// Start that was interrupted, a task deleted before its exit was
	// recorded). Reconciliation should Delete it and remove the state dir.
	StatusUnknown = "unknown"
)

// Stdio streams, the last token of a task's stdio subject.
const (
	StreamStdin  = "stdin"
	StreamStdout = "stdout"
	StreamStderr = "stderr"
)

// HeaderEOF is the NATS header that, set to "1" on a message published on a
// task's stdin subject, closes the task's stdin after the message's data
// (which may be empty) is written.
const HeaderEOF = "Sd-EOF"

// IOPrefix prefixes the core NATS subjects carrying task stdio.
const IOPrefix = "sd.io"

// IOSubject is the core NATS subject of one stdio stream of a task:
// sd.io.<ns>.<id>.<stream>. Stdout and stderr chunks are published there
// live (not persisted: late subscribers read the log files); data published
// on the stdin subject is written to the task's stdin.
func IOSubject(ns, id, stream string) string {
	return IOPrefix + "." + ns + "." + id + "." + stream
}

// TaskID returns the node-unique id of the task of container id in
// namespace ns: the name of its runc container, state dir and rootfs
// snapshot. Namespaces may hold containers with the same id, and they must
// not touch each other's tasks. In the default namespace it is the
// container id itself; in another one it is "_", the namespace's length,
// "_", the namespace, "_" and the id ("_1_b_web" for b/web). Container ids
// start with a letter or digit, so the two forms never meet, and the
// length makes the second one unambiguous. The result is one subject
// token of at most 197 bytes.
func TaskID(ns, id string) string {
	if ns == events.DefaultNamespace {
		return id
	}
	return "_" + strconv.Itoa(len(ns)) + "_" + ns + "_" + id
}

// CreateOpts describes a task to start.
type CreateOpts struct {
	// ID names the task and its runc container. It must be unique on the
	// node across namespaces (see TaskID) and be one subject token: letters,
	// digits, '_' and '-', at most 255 characters.
	ID string
	// Namespace is the task's namespace, used in its stdio subjects.
	Namespace string
	// Container is the container id its stdio subjects are named by;
	// empty means ID.
	Container string
	// Bundle is an absolute path to an OCI bundle prepared by the caller: a
	// directory with config.json and the rootfs it names.
	Bundle string
	// StateDir is the task's own directory, owned by its monitor: the
	// stdout.log and stderr.log files, the recorded exit (exit.json), the
	// monitor's log and socket. Empty means a directory named ID under the
	// runtime's state root. It must not hold another task.
	StateDir string
	// Stdin keeps the task's stdin open, fed from the NATS stdin subject
	// until a message with HeaderEOF arrives. Without it stdin is
	// /dev/null.
	Stdin bool
	// NATSURL is where the monitor publishes stdout and stderr live and
	// reads stdin. Empty means log files only. A NATS server that cannot be
	// reached never stops the task: the logs are still written and the
	// monitor keeps trying to connect.
	NATSURL string
}

// Exit is how a task ended.
type Exit struct {
	// Code is the exit status, or 128+n when signal n killed the task, like
	// a shell. -1 means the exit status is unknown: the task's monitor was
	// killed before the task ended, so nobody could collect it.
	Code int `json:"code"`
	// Signal is the name of the signal that killed the task ("SIGTERM"),
	// "unknown" with Code -1, and empty for a normal exit.
	Signal string `json:"signal,omitempty"`
	// OOMKilled is true when the kernel OOM killer killed a process of the
	// task (not necessarily its init) because of the task's memory limit.
	OOMKilled bool `json:"oomKilled,omitempty"`
	// StartedAt is when the task's process was started.
	StartedAt time.Time `json:"startedAt"`
	// ExitedAt is when the task's exit was observed.
	ExitedAt time.Time `json:"exitedAt"`
}

// State is what the runtime knows about a task now.
type State struct {
	// ID is the task's id.
	ID string
	// Status is one of StatusCreated, StatusRunning, StatusStopped,
	// StatusUnknown.
	Status string
	// Pid is the task's init process id on the host (0 if never known).
	Pid int
	// MonitorPid is the task's monitor process id, 0 when no monitor is
	// running (it exits right after recording the task's exit).
	MonitorPid int
}

// Runtime runs tasks. Every method works on tasks started by an earlier
// process too: nothing is kept only in memory. Implementations are safe for
// concurrent use.
type Runtime interface {
	// Start creates and starts the task and returns its init pid once the
	// process runs (its stdio is being recorded and stdin, if asked for,
	// is subscribed). On error nothing is left running and the state dir is
	// removed; the error carries runc's message (a command missing from the
	// image is ErrInvalidArgument and names the command).
	Start(ctx context.Context, opts CreateOpts) (pid int, err error)
	// Kill sends sig to the task's init process. ErrNotFound if the task is
	// unknown, ErrFailedPrecondition if it is not running.
	//
	// Note: the kernel drops signals that have no handler when they are
	// sent to the init of a pid namespace, so SIGTERM does not stop a
	// process like sleep running as the task's init; escalate to SIGKILL.
	Kill(ctx context.Context, id string, sig syscall.Signal) error
	// Wait blocks until the task exits, or ctx ends, and returns its Exit;
	// when it returns, the task's output is in its logs and was published.
	// It returns at once for a task that already exited. If the task's
	// monitor was killed while the task ran, Wait falls back to polling and
	// returns an Exit with Code -1 and Signal "unknown" once the task is
	// gone (a task that writes to stdout after its monitor died gets
	// SIGPIPE). ErrNotFound if the runtime does not know the task.
	Wait(ctx context.Context, id string) (Exit, error)
	// State reports the task's status. ErrNotFound if neither a state dir
	// nor a container exists for id.
	State(ctx context.Context, id string) (State, error)
	// Delete removes the task's container and its cgroup. force kills a
	// running task first (and waits, bounded, for its exit to be recorded);
	// without force a running task is ErrFailedPrecondition. Deleting a
	// task whose container is already gone but whose state dir exists is a
	// success. The state dir (logs, exit.json) is kept: the caller removes
	// it when the container is removed.
	Delete(ctx context.Context, id string, force bool) error
	// List returns every task with a state dir, and every container the
	// runtime's runc knows without one (orphans of an interrupted Start:
	// MonitorPid 0, to delete), so a restarted executor can reconcile:
	// running tasks to watch again with Wait, exits that happened while it
	// was down (stopped, Exit recorded), leftovers to delete (unknown).
	List(ctx context.Context) ([]State, error)
	// Exit returns the task's recorded exit and true if it has exited,
	// false (and no error) while it runs. ErrNotFound if the runtime does
	// not know the task.
	Exit(ctx context.Context, id string) (Exit, bool, error)
}
