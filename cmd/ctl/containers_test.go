package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stevedore/stevedore/internal/testutil/natstest"
	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/client/clienttest"
	"github.com/stevedore/stevedore/pkg/events"
)

const alpine = "docker.io/library/alpine:3.20"

// cluster is a real NATS server with the stand-in gateway container
// endpoints and node-1's executor.
func cluster(t *testing.T) (*clienttest.Fake, string) {
	t.Helper()
	t.Setenv(envNode, "")
	s := natstest.Start(t)
	nc, js := s.Connect(t)
	f := clienttest.Start(t, nc, js, unpackerNode, alpine, "docker.io/library/broken:1")
	return f, s.URL()
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// invocation is one ctl run with stdin and interrupts.
type invocation struct {
	stdin      string
	interrupts *interrupts
}

func (in invocation) ctl(t *testing.T, url string, argv ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out, errb syncBuffer
	err = runWith(ctx, args{
		argv:  append([]string{"--nats", url}, argv...),
		stdin: strings.NewReader(in.stdin), stdout: &out, stderr: &errb, interrupts: in.interrupts,
	})
	return out.String(), errb.String(), err
}

// exitCode is the status ctl exits with for err, and what it prints.
func exitCode(err error) (int, string) {
	var buf bytes.Buffer
	code := report(&buf, err)
	return code, buf.String()
}

func TestRunFlagsMapToTheRequest(t *testing.T) {
	f, url := cluster(t)
	envFile := filepath.Join(t.TempDir(), "app.env")
	if err := os.WriteFile(envFile, []byte("# settings\nFILE_A=1\nSHARED=from-file\n\nFROM_CTL\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FROM_CTL", "ctl-value")
	if _, set := os.LookupEnv("CTL_TEST_UNSET"); set {
		t.Skip("CTL_TEST_UNSET is set")
	}

	stdout, stderr, err := invocation{}.ctl(t, url, "run", "--rm", "--name", "job",
		"--env-file", envFile, "-e", "SHARED=from-flag", "-e", "FROM_CTL", "-e", "CTL_TEST_UNSET", "-e", "EMPTY=",
		"--entrypoint", "", "-u", "1000:1000", "-w", "/work", "--hostname", "box", "--net", "host",
		"--mount", "type=bind,src=/srv/data,dst=/data,ro", "--mount", "src=/tmp,dst=/scratch",
		"--read-only", "--memory", "512m", "--cpus", "1.5", "--pids-limit", "99",
		"--label", "team=a", "--label", "bare", "--platform", "linux/amd64",
		"alpine:3.20", "out:hi", "-x", "--not-a-ctl-flag")
	if err != nil {
		t.Fatalf("run: %v (stderr %q)", err, stderr)
	}
	if stdout != "hi\n" {
		t.Fatalf("stdout %q", stdout)
	}
	cr := f.Creates()
	if len(cr) != 1 {
		t.Fatalf("creates %+v", cr)
	}
	got := cr[0]
	want := api.ContainerCreateRequest{
		Namespace: "default", ID: "job", Image: alpine, Rm: true, Start: true,
		Options: events.ContainerOptions{
			Args:          []string{"out:hi", "-x", "--not-a-ctl-flag"},
			EntrypointSet: true,
			Env:           []string{"FILE_A=1", "SHARED=from-file", "FROM_CTL=ctl-value", "SHARED=from-flag", "FROM_CTL=ctl-value", "EMPTY="},
			User:          "1000:1000", WorkingDir: "/work", Hostname: "box", Network: "host",
			Mounts: []events.BindMount{
				{Source: "/srv/data", Destination: "/data", ReadOnly: true},
				{Source: "/tmp", Destination: "/scratch"},
			},
			ReadOnly: true, MemoryLimit: 512 << 20, CPUs: 1.5, PidsLimit: 99,
			Labels: map[string]string{"team": "a", "bare": ""}, Platform: "linux/amd64",
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("request\n got %+v\nwant %+v", got, want)
	}
	if len(f.Pulls()) != 0 {
		t.Fatal("pulled an image that is unpacked")
	}

	t.Run("defaults", func(t *testing.T) {
		if _, _, err := (invocation{}).ctl(t, url, "run", "-q", "alpine:3.20"); err != nil {
			t.Fatal(err)
		}
		r := f.Creates()[1]
		if r.Options.EntrypointSet || r.Options.Entrypoint != nil || r.Options.Network != "none" || r.Rm || r.Node != "" || len(r.ID) != 24 {
			t.Fatalf("request %+v", r)
		}
	})
	t.Run("entrypoint and node", func(t *testing.T) {
		if _, _, err := (invocation{}).ctl(t, url, "--node", unpackerNode, "run", "--entrypoint", "out:from-entrypoint", "alpine:3.20"); err != nil {
			t.Fatal(err)
		}
		r := f.Creates()[2]
		if !r.Options.EntrypointSet || !reflect.DeepEqual(r.Options.Entrypoint, []string{"out:from-entrypoint"}) || r.Node != unpackerNode {
			t.Fatalf("request %+v", r)
		}
	})
	t.Run("stdin", func(t *testing.T) {
		out, _, err := invocation{stdin: "piped in\n"}.ctl(t, url, "run", "-i", "--name", "cat", "alpine:3.20", "cat")
		if err != nil || out != "piped in\n" {
			t.Fatalf("out %q, err %v", out, err)
		}
		if in, eof := f.Stdin("", "cat"); string(in) != "piped in\n" || !eof {
			t.Fatalf("task read %q, eof %v", in, eof)
		}
		if r := f.Creates()[3]; !r.Stdin {
			t.Fatal("no stdin asked for")
		}
	})
}

func TestRunExitCodes(t *testing.T) {
	_, url := cluster(t)
	tests := []struct {
		name   string
		argv   []string
		code   int
		stdout string
		stderr string // what ctl prints, after its own output
	}{
		{"the task's status", []string{"run", "alpine:3.20", "out:partial", "err:bad", "exit:3"}, 3, "partial\n", "bad\n"},
		{"success", []string{"run", "--rm", "alpine:3.20", "out:ok"}, 0, "ok\n", ""},
		{"killed by a signal", []string{"run", "--name", "k", "alpine:3.20", "exit:137"}, 137, "", ""},
		{"command not found", []string{"run", "--name", "nf", "alpine:3.20", "nope", "arg"}, 127, "",
			"ctl: start container nf: exec: \"nope\": executable file not found in $PATH\n"},
		{"command not runnable", []string{"run", "--name", "nx", "alpine:3.20", "/noexec"}, 126, "",
			"ctl: start container nx: exec: \"/noexec\": permission denied\n"},
		{"container not created", []string{"run", "--name", "br", "broken:1"}, 125, "",
			"ctl: create container br: image docker.io/library/broken:1: a layer does not match its digest\n"},
		{"image not pulled", []string{"run", "-q", "missing:1"}, 125, "",
			"ctl: pull missing:1: docker.io/library/missing:1: manifest unknown\n"},
		{"unknown flag", []string{"run", "--bogus", "alpine:3.20"}, 125, "", "ctl: run: unknown flag: --bogus (see `ctl run --help`)\n"},
		{"no image", []string{"run"}, 125, "", "ctl: run: missing IMAGE (see `ctl run --help`)\n"},
		{"bad memory", []string{"run", "--memory", "lots", "alpine:3.20"}, 125, "", `ctl: run: --memory: invalid size "lots": no number: invalid argument` + "\n"},
		{"bad mount", []string{"run", "--mount", "src=rel,dst=/x", "alpine:3.20"}, 125, "", "ctl: run: --mount: invalid mount"},
		{"bad network", []string{"run", "--net", "bridge", "alpine:3.20"}, 125, "", `ctl: run: --net "bridge": want none or host`},
		{"relative workdir", []string{"run", "-w", "rel", "alpine:3.20"}, 125, "", `ctl: run: --workdir "rel" is not an absolute path`},
		{"bad env", []string{"run", "-e", "=x", "alpine:3.20"}, 125, "", `ctl: run: -e "=x": want KEY=VAL or KEY`},
		{"missing env file", []string{"run", "--env-file", "/nonexistent/env", "alpine:3.20"}, 125, "", "ctl: run: --env-file: open /nonexistent/env"},
		{"bad name", []string{"run", "--name", "my.app", "alpine:3.20"}, 125, "", `ctl: run: --name: invalid argument: container id "my.app"`},
		{"detached and interactive", []string{"run", "-d", "-i", "alpine:3.20"}, 125, "", "ctl: run: -i needs ctl to stay attached"},
		{"create: bad flag", []string{"create", "--cpus", "-1", "alpine:3.20"}, 125, "", "ctl: create: --cpus -1: must not be negative"},
		{"create: not created", []string{"create", "--name", "cb", "broken:1"}, 125, "", "ctl: create container cb: image docker.io/library/broken:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, err := invocation{}.ctl(t, url, tt.argv...)
			code, printed := exitCode(err)
			if code != tt.code {
				t.Fatalf("exit %d (%v), want %d", code, err, tt.code)
			}
			if stdout != tt.stdout {
				t.Fatalf("stdout %q, want %q", stdout, tt.stdout)
			}
			if got := stderr + printed; !strings.HasPrefix(got, tt.stderr) || (tt.stderr == "" && got != "") {
				t.Fatalf("stderr %q, want %q", got, tt.stderr)
			}
		})
	}
	t.Run("no gateway", func(t *testing.T) {
		s := natstest.Start(t)
		_, _, err := invocation{}.ctl(t, s.URL(), "run", "alpine:3.20")
		code, printed := exitCode(err)
		if code != 125 || !strings.Contains(printed, "ctl: no gateway answered on "+s.URL()) {
			t.Fatalf("exit %d, printed %q", code, printed)
		}
	})
}

func TestRunForwardsInterrupts(t *testing.T) {
	f, url := cluster(t)
	waitRunning := func(t *testing.T, id string) {
		t.Helper()
		natstest.Eventually(t, 10*time.Second, func() bool { return f.Status("", id) == api.TaskRunning }, "%s never ran", id)
	}
	t.Run("Ctrl-C reaches the task", func(t *testing.T) {
		in := &interrupts{}
		done := make(chan error, 1)
		go func() {
			_, _, err := invocation{interrupts: in}.ctl(t, url, "run", "--name", "w1", "alpine:3.20", "wait")
			done <- err
		}()
		waitRunning(t, "w1")
		in.deliver("SIGINT")
		err := <-done
		if code, printed := exitCode(err); code != 130 || printed != "" {
			t.Fatalf("exit %d, printed %q (%v)", code, printed, err)
		}
		if k := f.Kills(); len(k) != 1 || k[0].ID != "w1" || k[0].Signal != "SIGINT" {
			t.Fatalf("kills %+v", k)
		}
	})
	t.Run("the third makes ctl stop waiting", func(t *testing.T) {
		in := &interrupts{}
		done := make(chan error, 1)
		go func() {
			_, _, err := invocation{interrupts: in}.ctl(t, url, "run", "--name", "w2", "alpine:3.20", "ignore")
			done <- err
		}()
		waitRunning(t, "w2")
		for _, sig := range []string{"SIGINT", "SIGTERM"} {
			n := len(f.Kills())
			in.deliver(sig)
			natstest.Eventually(t, 5*time.Second, func() bool { return len(f.Kills()) == n+1 }, "%s not forwarded", sig)
		}
		in.deliver("SIGINT")
		err := <-done
		code, printed := exitCode(err)
		if code != 130 || !strings.Contains(printed, "stopped waiting for container w2 after 3 interrupts; it goes on") {
			t.Fatalf("exit %d, printed %q", code, printed)
		}
		if f.Status("", "w2") != api.TaskRunning {
			t.Fatal("the task did not go on")
		}
		if k := f.Kills(); len(k) != 3 || k[1].Signal != "SIGINT" || k[2].Signal != "SIGTERM" {
			t.Fatalf("kills %+v", k)
		}
	})
	t.Run("other commands stop on Ctrl-C", func(t *testing.T) {
		if _, _, err := (invocation{}).ctl(t, url, "run", "-d", "--name", "w3", "alpine:3.20", "ignore"); err != nil {
			t.Fatal(err)
		}
		in := &interrupts{}
		done := make(chan error, 1)
		go func() {
			_, _, err := invocation{interrupts: in}.ctl(t, url, "wait", "w3")
			done <- err
		}()
		time.Sleep(100 * time.Millisecond)
		in.deliver("SIGINT")
		select {
		case err := <-done:
			if err == nil || !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("wait did not stop")
		}
	})
}

func TestRunDetachThenKillAndWait(t *testing.T) {
	f, url := cluster(t)
	out, _, err := invocation{}.ctl(t, url, "run", "-d", "--name", "bg", "alpine:3.20", "wait")
	if err != nil || out != "bg\n" {
		t.Fatalf("out %q, err %v", out, err)
	}
	if f.Status("", "bg") != api.TaskRunning {
		t.Fatal("not running")
	}
	if out, _, err := (invocation{}).ctl(t, url, "kill", "bg", "nobody"); out != "bg\n" || err == nil || !strings.Contains(err.Error(), "kill nobody: container nobody not found") {
		t.Fatalf("kill: out %q, err %v", out, err)
	}
	if k := f.Kills(); k[0].Signal != "TERM" {
		t.Fatalf("kill sent %q, want TERM by default", k[0].Signal)
	}
	out, _, err = invocation{}.ctl(t, url, "wait", "bg")
	if code, _ := exitCode(err); out != "143\n" || code != 143 {
		t.Fatalf("wait: out %q, exit %d", out, code)
	}
	if _, _, err := (invocation{}).ctl(t, url, "run", "-d", "--name", "ok", "alpine:3.20", "exit:0"); err != nil {
		t.Fatal(err)
	}
	out, _, err = invocation{}.ctl(t, url, "wait", "bg", "ok")
	if out != "143\n0\n" || err != nil {
		t.Fatalf("wait two: out %q, err %v", out, err)
	}
}

func TestCreateStartAttach(t *testing.T) {
	f, url := cluster(t)
	out, _, err := invocation{}.ctl(t, url, "create", "--name", "job", "alpine:3.20", "out:x", "err:y", "exit:4")
	if err != nil || out != "job\n" || f.Status("", "job") != api.TaskCreated {
		t.Fatalf("create: out %q, err %v", out, err)
	}
	stdout, stderr, err := invocation{}.ctl(t, url, "start", "-a", "job")
	if code, _ := exitCode(err); code != 4 || stdout != "x\n" || stderr != "y\n" {
		t.Fatalf("start -a: exit %d, %q, %q", code, stdout, stderr)
	}
	if _, _, err := (invocation{}).ctl(t, url, "create", "--name", "later", "alpine:3.20", "sleep:50"); err != nil {
		t.Fatal(err)
	}
	if out, _, err := (invocation{}).ctl(t, url, "start", "later"); err != nil || out != "later\n" {
		t.Fatalf("start: %q, %v", out, err)
	}
	if _, _, err := (invocation{}).ctl(t, url, "create", "--name", "bad", "alpine:3.20", "nope"); err != nil {
		t.Fatal(err)
	}
	_, _, err = invocation{}.ctl(t, url, "start", "bad")
	if code, printed := exitCode(err); code != 1 || !strings.Contains(printed, "ctl: start bad: exec: \"nope\": executable file not found") {
		t.Fatalf("start bad: %d %q", code, printed)
	}
	_, _, err = invocation{}.ctl(t, url, "start", "-a", "bad")
	if code, _ := exitCode(err); code != 127 {
		t.Fatalf("start -a bad: exit %d (%v)", code, err)
	}
}

func TestContainersAndTasksListings(t *testing.T) {
	f, url := cluster(t)
	now := time.Now().UTC()
	three, zero := 3, 0
	f.Put("", api.Container{ID: "fresh", Image: alpine, Node: "node-2", Created: now.Add(-2 * time.Hour), Task: api.Task{Status: api.TaskCreated}})
	f.Put("", api.Container{ID: "web", Image: "docker.io/library/nginx:1.27", Node: unpackerNode, Created: now.Add(-3 * time.Hour),
		Labels: map[string]string{"team": "a"}, Task: api.Task{Status: api.TaskRunning, Pid: 4242, StartedAt: now.Add(-5 * time.Second)}})
	f.Put("", api.Container{ID: "job", Image: alpine, Node: unpackerNode, Created: now.Add(-50 * time.Hour),
		Task: api.Task{Status: api.TaskStopped, Pid: 77, ExitCode: &three, StartedAt: now.Add(-3 * time.Minute), ExitedAt: now.Add(-2 * time.Minute)}})
	f.Put("", api.Container{ID: "oom", Image: alpine, Node: unpackerNode, Created: now.Add(-time.Minute),
		Task: api.Task{Status: api.TaskStopped, ExitCode: &zero, Signal: "SIGKILL", StartedAt: now.Add(-40 * time.Second), ExitedAt: now.Add(-30 * time.Second)}})

	table := func(t *testing.T, argv ...string) [][]string {
		t.Helper()
		out, _, err := invocation{}.ctl(t, url, argv...)
		if err != nil {
			t.Fatal(err)
		}
		var rows [][]string
		for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
			// Columns are separated by at least three spaces.
			var cols []string
			for _, c := range strings.Split(l, "   ") {
				if c = strings.TrimSpace(c); c != "" {
					cols = append(cols, c)
				}
			}
			rows = append(rows, cols)
		}
		return rows
	}
	t.Run("containers ls", func(t *testing.T) {
		want := [][]string{
			{"ID", "IMAGE", "STATUS", "CREATED", "NODE"},
			{"job", alpine, "Exited (3) 2 minutes ago", "2 days ago", unpackerNode},
			{"web", "docker.io/library/nginx:1.27", "Up 5 seconds", "3 hours ago", unpackerNode},
			{"fresh", alpine, "Created", "2 hours ago", "node-2"},
			{"oom", alpine, "Exited (0) 30 seconds ago", "About a minute ago", unpackerNode},
		}
		for _, argv := range [][]string{{"containers"}, {"container", "ls"}, {"c", "list"}} {
			if got := table(t, argv...); !reflect.DeepEqual(got, want) {
				t.Fatalf("%v:\n got %q\nwant %q", argv, got, want)
			}
		}
	})
	t.Run("containers quiet and json", func(t *testing.T) {
		out, _, err := invocation{}.ctl(t, url, "c", "ls", "-q")
		if err != nil || out != "job\nweb\nfresh\noom\n" {
			t.Fatalf("out %q, err %v", out, err)
		}
		out, _, err = invocation{}.ctl(t, url, "containers", "--format", "json")
		var ctrs []api.Container
		if err != nil || json.Unmarshal([]byte(out), &ctrs) != nil || len(ctrs) != 4 || ctrs[1].Labels["team"] != "a" || *ctrs[0].Task.ExitCode != 3 {
			t.Fatalf("json %s, %v", out, err)
		}
	})
	t.Run("ps shows running tasks", func(t *testing.T) {
		want := [][]string{
			{"ID", "PID", "STATUS", "EXIT CODE", "STARTED", "EXITED"},
			{"web", "4242", "running", "-", "5 seconds ago", "-"},
		}
		if got := table(t, "ps"); !reflect.DeepEqual(got, want) {
			t.Fatalf("got %q\nwant %q", got, want)
		}
	})
	t.Run("ps -a and tasks ls show them all", func(t *testing.T) {
		want := [][]string{
			{"ID", "PID", "STATUS", "EXIT CODE", "STARTED", "EXITED"},
			{"job", "-", "stopped", "3", "3 minutes ago", "2 minutes ago"},
			{"web", "4242", "running", "-", "5 seconds ago", "-"},
			{"fresh", "-", "created", "-", "-", "-"},
			{"oom", "-", "stopped", "0 (SIGKILL)", "40 seconds ago", "30 seconds ago"},
		}
		for _, argv := range [][]string{{"ps", "-a"}, {"tasks"}, {"tasks", "ls"}, {"task", "list"}} {
			if got := table(t, argv...); !reflect.DeepEqual(got, want) {
				t.Fatalf("%v:\n got %q\nwant %q", argv, got, want)
			}
		}
	})
	t.Run("tasks json and quiet", func(t *testing.T) {
		out, _, err := invocation{}.ctl(t, url, "ps", "--format", "json")
		var tasks []map[string]any
		if err != nil || json.Unmarshal([]byte(out), &tasks) != nil || len(tasks) != 1 || tasks[0]["id"] != "web" || tasks[0]["pid"] != 4242.0 || tasks[0]["status"] != "running" {
			t.Fatalf("json %s, %v", out, err)
		}
		out, _, err = invocation{}.ctl(t, url, "ps", "-aq")
		if err != nil || out != "job\nweb\nfresh\noom\n" {
			t.Fatalf("out %q, err %v", out, err)
		}
		if out, _, err := (invocation{}).ctl(t, url, "-n", "other", "ps", "--format", "json"); err != nil || strings.TrimSpace(out) != "[]" {
			t.Fatalf("empty: %q, %v", out, err)
		}
	})
}

func TestContainerStatus(t *testing.T) {
	now := time.Now()
	code := 137
	tests := []struct {
		task api.Task
		want string
	}{
		{api.Task{}, "Created"},
		{api.Task{Status: api.TaskCreated}, "Created"},
		{api.Task{Status: api.TaskRunning, StartedAt: now.Add(-90 * time.Second)}, "Up About a minute"},
		{api.Task{Status: api.TaskRunning, StartedAt: now}, "Up Less than a second"},
		{api.Task{Status: api.TaskStopped, ExitCode: &code, ExitedAt: now.Add(-3 * time.Hour)}, "Exited (137) 3 hours ago"},
		{api.Task{Status: api.TaskStopped, ExitCode: &code, OOMKilled: true, ExitedAt: now.Add(-time.Second)}, "Exited (137) 1 second ago (OOM killed)"},
		{api.Task{Status: api.TaskStopped}, "Exited (?)"},
	}
	for _, tt := range tests {
		if got := containerStatus(now, tt.task); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.task, got, tt.want)
		}
	}
}

func TestCommandNotFound(t *testing.T) {
	for msg, want := range map[string]bool{
		`exec: "nope": executable file not found in $PATH`:                               true,
		`runc create failed: exec: "/bin/app": stat /bin/app: no such file or directory`: true,
		`sh: foo: command not found`:                                                     true,
		`exec: "/noexec": permission denied`:                                             false,
		`mount /srv: no such file or directory`:                                          false,
	} {
		if got := commandNotFound(msg); got != want {
			t.Errorf("%q: %v, want %v", msg, got, want)
		}
	}
}

func TestLogs(t *testing.T) {
	_, url := cluster(t)
	if _, _, err := (invocation{}).ctl(t, url, "run", "--name", "done", "alpine:3.20", "out:one", "err:two", "out:three"); err != nil {
		t.Fatal(err)
	}
	t.Run("both streams", func(t *testing.T) {
		out, errOut, err := invocation{}.ctl(t, url, "logs", "done")
		if err != nil || out != "one\nthree\n" || errOut != "two\n" {
			t.Fatalf("out %q, stderr %q, err %v", out, errOut, err)
		}
	})
	t.Run("one stream", func(t *testing.T) {
		out, errOut, err := invocation{}.ctl(t, url, "logs", "--stream", "stderr", "done")
		if err != nil || out != "" || errOut != "two\n" {
			t.Fatalf("out %q, stderr %q, err %v", out, errOut, err)
		}
		if _, _, err := (invocation{}).ctl(t, url, "logs", "--stream", "all", "done"); err == nil || !strings.Contains(err.Error(), `--stream "all"`) {
			t.Fatalf("bad stream: %v", err)
		}
	})
	t.Run("follow stops when the task stops", func(t *testing.T) {
		if _, _, err := (invocation{}).ctl(t, url, "run", "-d", "--name", "chatty", "alpine:3.20", "lines:3", "sleep:600", "out:end", "lines:2"); err != nil {
			t.Fatal(err)
		}
		// Without -f: what is there now, at once.
		out, _, err := invocation{}.ctl(t, url, "logs", "chatty")
		if err != nil || !strings.HasPrefix(lines(3), out) {
			t.Fatalf("logs now: %q, %v", out, err)
		}
		start := time.Now()
		out, _, err = invocation{}.ctl(t, url, "logs", "-f", "chatty")
		if want := lines(3) + "end\n" + lines(2); err != nil || out != want {
			t.Fatalf("logs -f: %q, %v; want %q", out, err, want)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("logs -f went on after the task stopped")
		}
	})
	t.Run("unknown container", func(t *testing.T) {
		_, _, err := invocation{}.ctl(t, url, "logs", "nobody")
		if err == nil || err.Error() != "logs nobody: container nobody not found in namespace default" {
			t.Fatalf("err = %v", err)
		}
	})
}

func lines(n int) string {
	var sb strings.Builder
	for i := 1; i <= n; i++ {
		sb.WriteString("line " + string(rune('0'+i)) + "\n")
	}
	return sb.String()
}

func TestRemoveAndLabel(t *testing.T) {
	f, url := cluster(t)
	if _, _, err := (invocation{}).ctl(t, url, "create", "--name", "made", "--label", "tier=web", "alpine:3.20"); err != nil {
		t.Fatal(err)
	}
	if out, _, err := (invocation{}).ctl(t, url, "c", "label", "made", "team=a", "tier="); err != nil || out != "made\n" {
		t.Fatalf("label: %q, %v", out, err)
	}
	out, _, err := invocation{}.ctl(t, url, "container", "info", "made")
	var ctr api.Container
	if err != nil || json.Unmarshal([]byte(out), &ctr) != nil || !reflect.DeepEqual(ctr.Labels, map[string]string{"team": "a"}) || len(ctr.Spec) == 0 || !strings.Contains(out, `"spec": {`) {
		t.Fatalf("info %s, %v", out, err)
	}
	if _, _, err := (invocation{}).ctl(t, url, "c", "label", "made", "novalue"); err == nil || !strings.Contains(err.Error(), `"novalue": want KEY=VALUE`) {
		t.Fatalf("bad label: %v", err)
	}
	if _, _, err := (invocation{}).ctl(t, url, "run", "-d", "--name", "busy", "alpine:3.20", "wait"); err != nil {
		t.Fatal(err)
	}
	out, _, err = invocation{}.ctl(t, url, "rm", "made", "busy", "nobody")
	if out != "made\n" || err == nil {
		t.Fatalf("rm: %q, %v", out, err)
	}
	for _, want := range []string{"rm busy: container busy is running: stop it first, or force the removal", "rm nobody: container nobody not found"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err %q lacks %q", err, want)
		}
	}
	if out, _, err := (invocation{}).ctl(t, url, "containers", "rm", "-f", "busy"); err != nil || out != "busy\n" {
		t.Fatalf("rm -f: %q, %v", out, err)
	}
	if f.Exists("", "made") || f.Exists("", "busy") {
		t.Fatal("not removed")
	}
	if d := f.Deletes(); len(d) != 4 || d[3].Force != true || d[0].Force {
		t.Fatalf("deletes %+v", d)
	}
}

func TestContainerHelp(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"run", "create", "start", "containers", "tasks", "ps", "kill", "wait", "logs", "rm", "125", "126", "127"}},
		{[]string{"run", "--help"}, []string{"IMAGE [CMD [ARG...]]", "--rm", "--detach", "--interactive", "--env", "--env-file", "--user", "--workdir",
			"--entrypoint", "--hostname", "--net", "--mount", "--read-only", "--memory", "--cpus", "--pids-limit", "--label", "--platform", "--name", "--id",
			"--pull", "--quiet", "Ctrl-C", "125", "126", "127", "Examples:"}},
		{[]string{"create", "--help"}, []string{"--rm", "--env", "ctl start", "Examples:"}},
		{[]string{"start", "--help"}, []string{"--attach", "Examples:"}},
		{[]string{"containers", "--help"}, []string{"STATUS", "Up 5 seconds", "Exited (3) 2 minutes ago", "NODE", "--format", "--quiet", "Examples:"}},
		{[]string{"c", "info", "--help"}, []string{"spec", "Examples:"}},
		{[]string{"container", "rm", "--help"}, []string{"--force", "Examples:"}},
		{[]string{"c", "label", "--help"}, []string{"KEY=", "Examples:"}},
		{[]string{"tasks", "ls", "--help"}, []string{"PID", "EXIT CODE", "STARTED", "EXITED", "Examples:"}},
		{[]string{"ps", "--help"}, []string{"--all", "Examples:"}},
		{[]string{"kill", "--help"}, []string{"--signal", "TERM", "KILL", "Examples:"}},
		{[]string{"wait", "--help"}, []string{"exit code", "Examples:"}},
		{[]string{"logs", "--help"}, []string{"--follow", "--stream", "200 ms", "Examples:"}},
		{[]string{"rm", "--help"}, []string{"--force", "Examples:"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			out, _, err := ctl(t, tt.args...)
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("help lacks %q:\n%s", w, out)
				}
			}
		})
	}
}
