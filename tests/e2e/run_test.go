package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stevedore/stevedore/internal/testutil/registry"
	"github.com/stevedore/stevedore/internal/testutil/testimage"
	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/events"
)

// busyboxCluster starts a cluster and pushes a busybox image built from
// Debian's busybox-static; it returns the cluster and the image reference.
func busyboxCluster(t *testing.T) (*cluster, string) {
	t.Helper()
	requireRoot(t)
	if _, err := exec.LookPath("runc"); err != nil {
		t.Fatalf("runc is required (apt-get install runc; make test installs it): %v", err)
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Fatalf("/bin/busybox is required (apt-get install busybox-static; make test installs it): %v", err)
	}
	reg := registry.Start(t)
	img, err := testimage.Busybox("/bin/busybox", testimage.Gzip, testimage.OCI)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := testimage.Push(context.Background(), reg.Host(), "e2e/busybox:1", img); err != nil {
		t.Fatal(err)
	}
	return newCluster(t, 1), reg.Host() + "/e2e/busybox:1"
}

func (c *cluster) containers() []api.Container {
	c.t.Helper()
	var cs []api.Container
	out := c.mustCtl("containers", "ls", "--format", "json")
	if err := json.Unmarshal([]byte(out), &cs); err != nil {
		c.t.Fatalf("containers ls --format json: %v\n%s", err, out)
	}
	return cs
}

// assertNothingLeft checks that no container, task, rootfs snapshot,
// bundle, mount or cgroup (of the containers named) is left on the node.
func (c *cluster) assertNothingLeft(ids ...string) {
	c.t.Helper()
	if cs := c.containers(); len(cs) != 0 {
		c.t.Errorf("containers left: %+v", cs)
	}
	if ls := c.mustCtl("snapshots", "ls"); strings.Contains(ls, "active") {
		c.t.Errorf("active snapshots left:\n%s", ls)
	}
	if ents, _ := os.ReadDir(filepath.Join(c.root, "bundles", "default")); len(ents) != 0 {
		c.t.Errorf("bundles left: %v", ents)
	}
	out, _ := exec.Command("runc", "--root", filepath.Join(c.root, "runc"), "list", "-q").Output()
	if s := strings.TrimSpace(string(out)); s != "" {
		c.t.Errorf("runc containers left: %s", s)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), filepath.Join(c.root, "bundles")) {
		c.t.Errorf("rootfs mounts left under %s", c.root)
	}
	for _, id := range ids {
		for _, ctrl := range []string{"memory", "pids", "cpu"} {
			if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", ctrl, "stevedore", "default", id)); err == nil {
				c.t.Errorf("cgroup %s of container %s left", ctrl, id)
			}
		}
	}
}

func TestRunBusybox(t *testing.T) {
	c, img := busyboxCluster(t)
	host := t.TempDir()
	if err := os.WriteFile(filepath.Join(host, "hello"), []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		flags  []string
		cmd    []string
		code   int
		stdout string // exact, unless has is set
		stderr string
		has    []string // substrings of stdout
	}{
		{name: "exit code", cmd: []string{"sh", "-c", "exit 3"}, code: 3},
		{name: "stdout and stderr apart", cmd: []string{"sh", "-c", "echo out; echo err >&2"}, stdout: "out\n", stderr: "err\n"},
		{name: "env", flags: []string{"-e", "FOO=bar", "-e", "PATH=/bin"}, cmd: []string{"env"}, has: []string{"FOO=bar\n", "PATH=/bin\n", "HOME=/root\n"}},
		{name: "user by name", flags: []string{"-u", "app"}, cmd: []string{"id"}, has: []string{"uid=1000(app) gid=1000(app)", "50(staff)"}},
		{name: "user by uid:gid", flags: []string{"-u", "1000:50"}, cmd: []string{"sh", "-c", "id -u; id -g"}, stdout: "1000\n50\n"},
		{name: "workdir created", flags: []string{"-w", "/data/work"}, cmd: []string{"pwd"}, stdout: "/data/work\n"},
		{name: "entrypoint override", flags: []string{"--entrypoint", "echo"}, cmd: []string{"a", "b"}, stdout: "a b\n"},
		{name: "bind mount read-only", flags: []string{"--mount", "type=bind,src=" + host + ",dst=/mnt,ro"}, cmd: []string{"sh", "-c", "cat /mnt/hello; touch /mnt/x 2>/dev/null || echo ro"}, stdout: "from the host\nro\n"},
		{name: "read-only rootfs", flags: []string{"--read-only"}, cmd: []string{"sh", "-c", "touch /x 2>/dev/null || echo denied"}, stdout: "denied\n"},
		{name: "hostname", flags: []string{"--hostname", "box"}, cmd: []string{"hostname"}, stdout: "box\n"},
		{name: "no network but loopback", cmd: []string{"ls", "/sys/class/net"}, stdout: "lo\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append(append(append([]string{"run", "--rm"}, tc.flags...), img), tc.cmd...)
			r := c.ctl(args...)
			if r.code != tc.code {
				t.Fatalf("ctl %s: exit %d, want %d\nstdout: %q\nstderr: %q", strings.Join(args, " "), r.code, tc.code, r.stdout, r.stderr)
			}
			if tc.has == nil && r.stdout != tc.stdout {
				t.Errorf("stdout %q, want %q", r.stdout, tc.stdout)
			}
			for _, h := range tc.has {
				if !strings.Contains(r.stdout, h) {
					t.Errorf("stdout %q lacks %q", r.stdout, h)
				}
			}
			if tc.stderr != "" && !strings.Contains(r.stderr, tc.stderr) {
				t.Errorf("stderr %q lacks %q", r.stderr, tc.stderr)
			}
		})
	}
	c.assertNothingLeft()
}

func TestKillSignals(t *testing.T) {
	c, img := busyboxCluster(t)
	c.mustCtl("run", "-d", "--name", "victim", img, "sleep", "30")
	c.mustCtl("kill", "--signal", "KILL", "victim")
	if r := c.ctl("wait", "victim"); strings.TrimSpace(r.stdout) != "137" || r.code != 137 {
		t.Fatalf("SIGKILLed task: wait printed %q, exit %d; want 137", r.stdout, r.code)
	}
	var ct api.Container
	if err := json.Unmarshal([]byte(c.mustCtl("containers", "info", "victim")), &ct); err != nil {
		t.Fatal(err)
	}
	if ct.Task.Status != api.TaskStopped || ct.Task.Signal != "SIGKILL" {
		t.Fatalf("task after SIGKILL: %+v", ct.Task)
	}
	if ct.Snapshotter != "overlay" || ct.SnapshotKey != "victim" {
		t.Errorf("container's rootfs: snapshotter %q key %q, want overlay's snapshot victim", ct.Snapshotter, ct.SnapshotKey)
	}
	c.mustCtl("rm", "victim")

	// Ctrl-C on an attached run goes to the task, whose trap decides the exit.
	run := c.ctlCmd("run", "--rm", "--name", "attached", img, "sh", "-c", "trap 'echo caught; exit 9' INT; echo ready; while true; do sleep 0.1; done")
	var out syncBuffer
	run.Stdout = &out
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() bool { return strings.Contains(out.String(), "ready") }, "the attached task to start")
	_ = run.Process.Signal(syscall.SIGINT)
	err := run.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 9 || !strings.Contains(out.String(), "caught") {
		t.Fatalf("Ctrl-C on ctl run: %v, output %q; want the task's trap to exit 9", err, out.String())
	}
	c.assertNothingLeft("victim", "attached")
}

func TestRunMemoryLimitOOM(t *testing.T) {
	c, img := busyboxCluster(t)
	r := c.ctl("run", "--name", "hog", "--memory", "16m", img, "dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1")
	if r.code != 137 {
		t.Fatalf("memory hog: exit %d, want 137 (OOM kill)\n%s", r.code, r.stderr)
	}
	var ct api.Container
	if err := json.Unmarshal([]byte(c.mustCtl("containers", "info", "hog")), &ct); err != nil {
		t.Fatal(err)
	}
	if !ct.Task.OOMKilled || ct.Task.ExitCode == nil || *ct.Task.ExitCode != 137 {
		t.Fatalf("task after OOM: %+v", ct.Task)
	}
	c.mustCtl("rm", "hog")
	c.assertNothingLeft("hog")
}

func TestRunErrorsLeaveNothingBehind(t *testing.T) {
	c, img := busyboxCluster(t)
	c.mustCtl("run", "--name", "taken", "-d", img, "sleep", "30")
	tests := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"missing image", []string{"run", "--rm", "127.0.0.1:1/nope:1", "true"}, 125, "nope"},
		{"unknown user", []string{"run", "--rm", "-u", "ghost", img, "true"}, 125, "ghost"},
		{"command not found", []string{"run", "--rm", img, "/bin/nosuch"}, 127, "nosuch"},
		{"workdir is a file", []string{"run", "--rm", "-w", "/etc/passwd", img, "true"}, 125, "not a directory"},
		{"bind source missing", []string{"run", "--rm", "--mount", "type=bind,src=/nonexistent-stevedore,dst=/mnt", img, "true"}, 125, "does not exist"},
		{"id in use", []string{"run", "--rm", "--name", "taken", img, "true"}, 125, "in use"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := c.ctl(tc.args...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.msg) {
				t.Fatalf("ctl %s: exit %d stderr %q; want %d and %q", strings.Join(tc.args, " "), r.code, r.stderr, tc.code, tc.msg)
			}
		})
	}
	// Each ended in a failure fact in the log, whoever caught it.
	failures := map[events.Type]int{}
	for _, line := range strings.Split(strings.TrimSpace(c.mustCtl("events", "--no-follow", "--format", "json",
		"--type", "pull-failed", "--type", "container-create-failed", "--type", "task-start-failed", "--type", "container-create-refused")), "\n") {
		var ev events.Envelope
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("events: %q: %v", line, err)
		}
		failures[ev.Type]++
	}
	want := map[events.Type]int{events.TypePullFailed: 1, events.TypeContainerCreateFailed: 3, events.TypeTaskStartFailed: 1, events.TypeContainerCreateRefused: 1}
	for typ, n := range want {
		if failures[typ] < n {
			t.Errorf("%d %s events recorded, want at least %d (all: %v)", failures[typ], typ, n, failures)
		}
	}
	c.mustCtl("rm", "-f", "taken")
	c.assertNothingLeft("taken")

	// With no executor on the node, run fails at once saying so.
	c.kill("executor", syscall.SIGTERM)
	if r := c.ctl("run", "--rm", img, "true"); r.code != 125 || !strings.Contains(r.stderr, "no executor is running") {
		t.Fatalf("run without an executor: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestExecutorKilledWhileTaskRuns(t *testing.T) {
	c, img := busyboxCluster(t)
	c.mustCtl("run", "-d", "--name", "survivor", img, "sh", "-c", "trap 'exit 42' TERM; while true; do sleep 0.1; done")
	var before api.Container
	if err := json.Unmarshal([]byte(c.mustCtl("containers", "info", "survivor")), &before); err != nil {
		t.Fatal(err)
	}
	if before.Task.Status != api.TaskRunning || before.Task.Pid == 0 {
		t.Fatalf("task not running: %+v", before.Task)
	}
	c.kill("executor", syscall.SIGKILL)
	if err := syscall.Kill(before.Task.Pid, 0); err != nil {
		t.Fatalf("task died with the executor: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	c.startExecutor()

	var ts []api.Container
	if err := json.Unmarshal([]byte(c.mustCtl("containers", "ls", "--format", "json")), &ts); err != nil || len(ts) != 1 || ts[0].Task.Status != api.TaskRunning {
		t.Fatalf("after the executor restart: %+v (%v)", ts, err)
	}
	c.mustCtl("kill", "survivor")
	if r := c.ctl("wait", "survivor"); strings.TrimSpace(r.stdout) != "42" || r.code != 42 {
		t.Fatalf("wait after restart: %q, exit %d; want 42", r.stdout, r.code)
	}
	c.mustCtl("rm", "survivor")

	// An exit while the executor is down is recorded when it comes back.
	c.mustCtl("run", "-d", "--name", "brief", img, "sh", "-c", "sleep 1; exit 5")
	c.kill("executor", syscall.SIGKILL)
	time.Sleep(1500 * time.Millisecond)
	c.startExecutor()
	if r := c.ctl("wait", "brief"); strings.TrimSpace(r.stdout) != "5" {
		t.Fatalf("exit recorded after restart: %q, want 5", r.stdout)
	}
	c.mustCtl("rm", "brief")
	c.assertNothingLeft("survivor", "brief")
}

// TestNamespacesShareContainerIDs runs a container with the same id in two
// namespaces on one node: each keeps its own task, logs, signals and
// removal (their runc containers, state dirs and rootfs snapshots are
// named by runtime.TaskID).
func TestNamespacesShareContainerIDs(t *testing.T) {
	c, img := busyboxCluster(t)
	code := map[string]string{"a": "7", "b": "9"}
	for _, ns := range []string{"a", "b"} {
		c.mustCtl("-n", ns, "run", "-d", "--name", "same", img, "sh", "-c",
			"echo from-"+ns+"; trap 'exit "+code[ns]+"' TERM; while true; do sleep 0.1; done")
	}
	info := func(ns string) api.Container {
		t.Helper()
		var ct api.Container
		if err := json.Unmarshal([]byte(c.mustCtl("-n", ns, "containers", "info", "same")), &ct); err != nil {
			t.Fatal(err)
		}
		return ct
	}
	a, b := info("a"), info("b")
	if a.Task.Status != api.TaskRunning || b.Task.Status != api.TaskRunning || a.Task.Pid == b.Task.Pid {
		t.Fatalf("both tasks should run apart: a %+v, b %+v", a.Task, b.Task)
	}
	for _, ns := range []string{"a", "b"} {
		var out string
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if out = c.mustCtl("-n", ns, "logs", "same"); out != "" {
				break
			}
		}
		if out != "from-"+ns+"\n" {
			t.Errorf("-n %s logs same = %q, want %q", ns, out, "from-"+ns+"\n")
		}
	}

	// Stopping and removing a's container leaves b's running.
	c.mustCtl("-n", "a", "kill", "same")
	if r := c.ctl("-n", "a", "wait", "same"); strings.TrimSpace(r.stdout) != "7" {
		t.Fatalf("-n a wait same = %q, want 7", r.stdout)
	}
	c.mustCtl("-n", "a", "rm", "same")
	if b := info("b"); b.Task.Status != api.TaskRunning {
		t.Fatalf("b's task after a's was stopped and removed: %+v", b.Task)
	}
	if err := syscall.Kill(b.Task.Pid, 0); err != nil {
		t.Fatalf("b's task process: %v", err)
	}
	c.mustCtl("-n", "b", "kill", "same")
	if r := c.ctl("-n", "b", "wait", "same"); strings.TrimSpace(r.stdout) != "9" {
		t.Fatalf("-n b wait same = %q, want 9", r.stdout)
	}
	c.mustCtl("-n", "b", "rm", "same")
	c.assertNothingLeft()
}
