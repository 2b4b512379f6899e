package runc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stevedore/stevedore/pkg/runtime"
)

// Files in a task's state dir.
const (
	// taskFile describes the task (no secrets): written by Start before the
	// monitor runs.
	taskFile = "task.json"
	// stateFile is written by the monitor once the task runs.
	stateFile = "state.json"
	// exitFile is the recorded exit, written atomically by the monitor.
	exitFile = "exit.json"
	// runcLog is runc's JSON log for create and start.
	runcLog = "runc.log"
	// sockFile is the monitor's unix socket: Wait connects to it.
	sockFile = "monitor.sock"
	// pidFile is runc's --pid-file.
	pidFile = "init.pid"
)

// Files in a task's state dir that callers read.
const (
	// StdoutLog is the file in the state dir holding the task's stdout,
	// appended as it comes (tail it for "logs -f").
	StdoutLog = "stdout.log"
	// StderrLog is the file in the state dir holding the task's stderr.
	StderrLog = "stderr.log"
	// MonitorLog is the monitor's own log, for diagnosis.
	MonitorLog = "monitor.log"
)

// taskInfo is task.json.
type taskInfo struct {
	ID        string    `json:"id"`
	Namespace string    `json:"namespace"`
	Bundle    string    `json:"bundle"`
	Stdin     bool      `json:"stdin"`
	Created   time.Time `json:"created"`
}

// monitorState is state.json.
type monitorState struct {
	Pid        int       `json:"pid"`
	MonitorPid int       `json:"monitorPid"`
	StartedAt  time.Time `json:"startedAt"`
	// OOMFile is the cgroup file with the oom_kill counter: memory.oom_control
	// (cgroup v1) or memory.events (v2). Empty if unknown.
	OOMFile string `json:"oomFile,omitempty"`
}

// writeFileAtomic writes data to dir/name through a temp file and a
// rename: a reader sees the old file or the whole new one, never a part.
//
// There is no fsync. These files (task.json, state.json, exit.json) must
// survive the executor's or the monitor's death, which loses nothing that
// is in the page cache; they need not survive the machine's, which takes
// the tasks with it (a task found without its exit after a reboot is
// reported as exited with an unknown status). Two fsyncs on every task
// start cost milliseconds on this disk.
func writeFileAtomic(dir, name string, data []byte) error {
	tmp, err := os.CreateTemp(dir, "."+name+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	cleanup := func() { _ = os.Remove(tmp.Name()) }
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		cleanup()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		cleanup()
		return fmt.Errorf("close %s: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		cleanup()
		return fmt.Errorf("rename %s: %w", name, err)
	}
	return nil
}

func writeJSONAtomic(dir, name string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", name, err)
	}
	return writeFileAtomic(dir, name, append(data, '\n'))
}

// readJSON reads dir/name into v; ok is false if the file does not exist.
func readJSON(dir, name string, v any) (bool, error) {
	data, err := os.ReadFile(filepath.Join(dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", name, err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return false, fmt.Errorf("decode %s in %s: %w", name, dir, err)
	}
	return true, nil
}

func readExit(dir string) (runtime.Exit, bool, error) {
	var e runtime.Exit
	ok, err := readJSON(dir, exitFile, &e)
	return e, ok, err
}

func readState(dir string) (monitorState, bool, error) {
	var s monitorState
	ok, err := readJSON(dir, stateFile, &s)
	return s, ok, err
}

// dialMonitor connects to the monitor socket in dir. The path goes through
// /proc/self/fd so that state dirs deeper than the 108-byte sun_path limit
// work.
func dialMonitor(dir string) (net.Conn, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open state dir: %w", err)
	}
	defer unix.Close(fd)
	return net.Dial("unix", "/proc/self/fd/"+strconv.Itoa(fd)+"/"+sockFile)
}

// monitorAlive reports whether pid is a live monitor for the state dir dir
// (not a zombie, not a reused pid): its command line names dir, or, for a
// monitor started ahead of time (no --state-dir argument), its working
// directory is dir (a monitor moves into its state dir before it reports).
func monitorAlive(pid int, dir string) bool {
	if pid <= 0 {
		return false
	}
	proc := "/proc/" + strconv.Itoa(pid)
	cmdline, err := os.ReadFile(proc + "/cmdline")
	if err != nil || len(cmdline) == 0 {
		return false
	}
	args := bytes.Split(bytes.TrimRight(cmdline, "\x00"), []byte{0})
	monitor := false
	for i := 0; i < len(args); i++ {
		switch string(args[i]) {
		case "--state-dir":
			return i+1 < len(args) && string(args[i+1]) == dir
		case "monitor":
			monitor = true
		}
	}
	if !monitor {
		return false
	}
	cwd, err := os.Readlink(proc + "/cwd")
	if err != nil {
		return false
	}
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	return cwd == dir
}

// oomKills reads the oom_kill counter from a cgroup v1 memory.oom_control or
// v2 memory.events file.
func oomKills(file string) (int64, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return 0, fmt.Errorf("read oom counter: %w", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "oom_kill" {
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse %s: %w", file, err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("%s has no oom_kill counter (kernel older than 4.13?)", file)
}

// oomFileFromRuncState finds the task's oom counter file from runc's own
// state (<root>/<id>/state.json), which names the container's cgroups.
func oomFileFromRuncState(root, id string) (string, error) {
	var st struct {
		CgroupPaths map[string]string `json:"cgroup_paths"`
	}
	ok, err := readJSON(filepath.Join(root, id), "state.json", &st)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("no runc state for %s in %s", id, root)
	}
	if p := st.CgroupPaths["memory"]; p != "" {
		return filepath.Join(p, "memory.oom_control"), nil
	}
	if p := st.CgroupPaths[""]; p != "" {
		return filepath.Join(p, "memory.events"), nil
	}
	return "", fmt.Errorf("runc state for %s names no memory cgroup", id)
}
