// Package e2e runs Stevedore's real binaries as separate processes — a
// gateway with its embedded NATS, fetchers, ctl — against a real registry on
// loopback, kills them mid-work, and checks the outcome.
package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// binDir holds the binaries built once for the whole package.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "stevedore-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	_, file, _, _ := runtime.Caller(0)
	repo := filepath.Join(filepath.Dir(file), "..", "..")
	cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/gateway", "./cmd/fetcher", "./cmd/unpacker", "./cmd/executor", "./cmd/ctl")
	cmd.Dir = repo
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build binaries:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is one running worker process.
type proc struct {
	name  string
	cmd   *exec.Cmd
	log   string
	ready string
	done  chan struct{}
}

// cluster is a gateway and its workers on one state root.
type cluster struct {
	t      *testing.T
	root   string
	listen string
	url    string
	procs  map[string]*proc
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// newCluster starts a gateway and n fetchers with extra fetcher flags.
func newCluster(t *testing.T, n int, fetcherArgs ...string) *cluster {
	t.Helper()
	port := freePort(t)
	c := &cluster{
		t: t, root: t.TempDir(), procs: map[string]*proc{},
		listen: "127.0.0.1:" + strconv.Itoa(port), url: "nats://127.0.0.1:" + strconv.Itoa(port),
	}
	t.Cleanup(c.stopAll)
	t.Cleanup(func() {
		if t.Failed() {
			c.dumpLogs()
		}
	})
	c.startGateway()
	for i := 1; i <= n; i++ {
		c.startFetcher(fmt.Sprintf("fetcher-%d", i), fetcherArgs...)
	}
	c.startUnpacker()
	c.startExecutor()
	return c
}

func (c *cluster) startExecutor() {
	c.start("executor", filepath.Join(binDir, "executor"), "--nats", c.url, "--node", "e2e", "--ack-wait", "3s", "--runc-root", filepath.Join(c.root, "runc"))
}

// cleanupTasks kills and deletes every task left in the cluster's runc root
// and unmounts whatever is still mounted under its state root, so the temp
// dir can be removed.
func (c *cluster) cleanupTasks() {
	runcRoot := filepath.Join(c.root, "runc")
	out, _ := exec.Command("runc", "--root", runcRoot, "list", "-q").Output()
	for _, id := range strings.Fields(string(out)) {
		_ = exec.Command("runc", "--root", runcRoot, "delete", "-f", id).Run()
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	var targets []string
	for _, line := range strings.Split(string(mi), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], c.root+"/") {
			targets = append(targets, f[4])
		}
	}
	for i := len(targets) - 1; i >= 0; i-- {
		_ = syscall.Unmount(targets[i], syscall.MNT_DETACH)
	}
}

// startGateway starts the gateway with extra flags. Its metrics go on a
// free port (the default one may be taken by a gateway on this machine).
func (c *cluster) startGateway(extra ...string) {
	args := append([]string{"--listen", c.listen, "--node", "e2e", "--metrics", "127.0.0.1:0"}, extra...)
	c.start("gateway", filepath.Join(binDir, "gateway"), args...)
}

func (c *cluster) startFetcher(name string, extra ...string) {
	args := append([]string{"--nats", c.url, "--node", "e2e", "--ack-wait", "3s", "--concurrency", "2"}, extra...)
	c.start(name, filepath.Join(binDir, "fetcher"), args...)
}

func (c *cluster) startUnpacker() {
	c.start("unpacker", filepath.Join(binDir, "unpacker"), "--nats", c.url, "--node", "e2e", "--ack-wait", "3s")
}

func (c *cluster) start(name, bin string, args ...string) *proc {
	c.t.Helper()
	p := &proc{name: name, log: filepath.Join(c.root, name+".log"), ready: filepath.Join(c.root, name+".ready"), done: make(chan struct{})}
	args = append(args, "--root", c.root, "--ready-file", p.ready, "--log-level", "debug")
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		c.t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	c.procs[name] = p
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(p.ready); err == nil {
			return p
		}
		select {
		case <-p.done:
			c.t.Fatalf("%s exited while starting:\n%s", name, tail(p.log, 30))
		default:
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s not ready in 30s:\n%s", name, tail(p.log, 30))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill sends sig to the named process and waits for it to exit.
func (c *cluster) kill(name string, sig syscall.Signal) {
	c.t.Helper()
	p := c.procs[name]
	if p == nil {
		c.t.Fatalf("no process %s", name)
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		c.t.Fatalf("%s did not exit after %v", name, sig)
	}
	os.Remove(p.ready)
	delete(c.procs, name)
}

func (c *cluster) stopAll() {
	for name, p := range c.procs {
		if name == "gateway" {
			continue
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	if p := c.procs["gateway"]; p != nil {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	c.procs = map[string]*proc{}
	c.cleanupTasks()
}

func (c *cluster) dumpLogs() {
	for name, p := range c.procs {
		c.t.Logf("=== %s log (tail)\n%s", name, tail(p.log, 40))
	}
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// result is a finished ctl command.
type result struct {
	stdout, stderr string
	code           int
}

// ctl runs the ctl binary against the cluster.
func (c *cluster) ctl(args ...string) result {
	c.t.Helper()
	cmd := c.ctlCmd(args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("run ctl: %v", err)
	}
	return result{out.String(), errb.String(), code}
}

func (c *cluster) ctlCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(binDir, "ctl"), append([]string{"--nats", c.url}, args...)...)
	cmd.Env = append(os.Environ(), "STEVEDORE_NAMESPACE=default", "STEVEDORE_NODE=e2e")
	return cmd
}

func (c *cluster) mustCtl(args ...string) string {
	c.t.Helper()
	r := c.ctl(args...)
	if r.code != 0 {
		c.t.Fatalf("ctl %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// storeBlobs returns every committed blob in the node's content store,
// verifying each one's bytes against its name.
func (c *cluster) storeBlobs() map[digest.Digest]int64 {
	c.t.Helper()
	dir := filepath.Join(c.root, "content", "blobs", "sha256")
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		c.t.Fatal(err)
	}
	got := map[digest.Digest]int64{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			c.t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		if hex.EncodeToString(sum[:]) != e.Name() {
			c.t.Errorf("committed blob %s holds bytes hashing to %x: unverified content was committed", e.Name(), sum)
		}
		got[digest.NewDigestFromEncoded(digest.SHA256, e.Name())] = int64(len(b))
	}
	return got
}

// lockHolder returns the pid holding the flock on an ingest in the store,
// read from /proc/locks, or 0.
func (c *cluster) lockHolder() int {
	c.t.Helper()
	locks, err := filepath.Glob(filepath.Join(c.root, "content", "ingest", "*", "lock"))
	if err != nil || len(locks) == 0 {
		return 0
	}
	inodes := map[uint64]bool{}
	for _, l := range locks {
		var st syscall.Stat_t
		if syscall.Stat(l, &st) == nil {
			inodes[st.Ino] = true
		}
	}
	f, err := os.Open("/proc/locks")
	if err != nil {
		c.t.Fatalf("read /proc/locks: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "1: FLOCK  ADVISORY  WRITE 12345 fd:01:123456 0 EOF"
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[1] != "FLOCK" {
			continue
		}
		parts := strings.Split(fields[5], ":")
		ino, err := strconv.ParseUint(parts[len(parts)-1], 10, 64)
		if err != nil || !inodes[ino] {
			continue
		}
		pid, _ := strconv.Atoi(fields[4])
		return pid
	}
	return 0
}

// procByPid names the cluster process with pid.
func (c *cluster) procByPid(pid int) string {
	for name, p := range c.procs {
		if p.cmd.Process.Pid == pid {
			return name
		}
	}
	return ""
}

func eventually(t *testing.T, timeout time.Duration, cond func() bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("timed out after %v: %s", timeout, msg)
}

// syncBuffer is a bytes.Buffer safe to read while a process writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
