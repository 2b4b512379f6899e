package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore/stevedore/internal/testutil/gatewaytest"
	"github.com/stevedore/stevedore/internal/testutil/natstest"
	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/events"
	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
)

// logBase is the time of the first event of the log these tests read.
var logBase = time.Date(2025, 11, 2, 10, 0, 0, 0, time.UTC)

var (
	logLayer = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromString("log-layer"), Size: 4404019}
	logIndex = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromString("log-index"), Size: 1024}
)

// eventLog is a real NATS server and a real gateway, and a publisher that
// appends events with chosen times.
type eventLog struct {
	t   *testing.T
	s   *natstest.Server
	pub *sdjs.Publisher
}

func newEventLog(t *testing.T, withGateway bool) *eventLog {
	t.Helper()
	t.Setenv(envNode, "node-1")
	s := natstest.Start(t)
	_, js := s.Connect(t)
	l := &eventLog{t: t, s: s, pub: sdjs.NewPublisher(js)}
	if withGateway {
		gatewaytest.Start(t, s)
	}
	return l
}

func (l *eventLog) at(after time.Duration, ns, op, actor, node string, typ events.Type, agg events.Aggregate, payload any) uint64 {
	l.t.Helper()
	ev, err := events.New(events.Meta{Namespace: ns, Operation: op, Actor: actor, Node: node}, typ, agg, payload)
	if err != nil {
		l.t.Fatal(err)
	}
	ev.Time = logBase.Add(after)
	seq, err := l.pub.Publish(context.Background(), ev)
	if err != nil {
		l.t.Fatal(err)
	}
	return seq
}

// story appends:
//
//	1 pull-requested       opP1 alice gw-1    alpine
//	2 blob-committed       opP1       node-1  layer, +1.5s
//	3 image-updated        opP1       node-1  alpine, +2.5s
//	4 pull-completed       opP1       node-1  +3s
//	5 container-create-req opC1 bob   gw-1    web (start), +4s
//	6 container-created    opC1       node-1  +4.5s
//	7 task-started         opC1       node-1  +5s
//	8 pull-requested       opP2 carol gw-1    team-a other:1, +6s
//	9 pull-failed          opP2       node-2  team-a, +6.5s
//	10 task-kill-requested opK1 bob   gw-1    web SIGKILL, +7s
//	11 task-exited         opK1       node-1  137 SIGKILL oom, +7.25s
func (l *eventLog) story() {
	ms := time.Millisecond
	web := events.ContainerAggregate("web")
	l.at(0, "default", "opP1", "alice", "gw-1", events.TypePullRequested, events.PullAggregate("opP1"),
		events.PullRequested{Ref: alpine, Platform: "linux/amd64"})
	l.at(1500*ms, "default", "opP1", "alice", "node-1", events.TypeBlobCommitted, events.BlobAggregate(logLayer.Digest),
		events.BlobCommitted{Ref: alpine, Role: events.RoleLayer, Descriptor: logLayer, Fetched: logLayer.Size, Duration: 1400 * ms})
	l.at(2500*ms, "default", "opP1", "alice", "node-1", events.TypeImageUpdated, events.ImageAggregate(alpine),
		events.ImageUpdated{Name: alpine, Target: logIndex, Size: 5 << 20, Platform: "linux/amd64"})
	l.at(3000*ms, "default", "opP1", "alice", "node-1", events.TypePullCompleted, events.PullAggregate("opP1"),
		events.PullCompleted{Ref: alpine, Target: logIndex.Digest, Size: 5 << 20, Blobs: 3})
	l.at(4000*ms, "default", "opC1", "bob", "gw-1", events.TypeContainerCreateRequested, web,
		events.ContainerCreateRequested{ID: "web", Image: alpine, Node: "node-1", Start: true})
	l.at(4500*ms, "default", "opC1", "bob", "node-1", events.TypeContainerCreated, web,
		events.ContainerCreated{ID: "web", Image: alpine, ImageDigest: logIndex.Digest, Node: "node-1"})
	l.at(5000*ms, "default", "opC1", "bob", "node-1", events.TypeTaskStarted, web,
		events.TaskStarted{ID: "web", Pid: 4242, StartedAt: logBase.Add(5 * time.Second)})
	l.at(6000*ms, "team-a", "opP2", "carol", "gw-1", events.TypePullRequested, events.PullAggregate("opP2"),
		events.PullRequested{Ref: "registry.example/other:1"})
	l.at(6500*ms, "team-a", "opP2", "carol", "node-2", events.TypePullFailed, events.PullAggregate("opP2"),
		events.PullFailed{Ref: "registry.example/other:1", Code: "not_found", Message: "registry.example/other:1: manifest unknown"})
	l.at(7000*ms, "default", "opK1", "bob", "gw-1", events.TypeTaskKillRequested, web,
		events.TaskKillRequested{ID: "web", Node: "node-1", Signal: "SIGKILL"})
	l.at(7250*ms, "default", "opK1", "bob", "node-1", events.TypeTaskExited, web,
		events.TaskExited{ID: "web", Code: 137, Signal: "SIGKILL", OOMKilled: true, ExitedAt: logBase.Add(7250 * ms)})
}

// seqsOf returns the "#N" sequences of human event lines.
func seqsOf(t *testing.T, out string) []uint64 {
	t.Helper()
	var seqs []uint64
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var seq uint64
		f := strings.Fields(line)
		if len(f) < 2 {
			t.Fatalf("line %q", line)
		}
		if _, err := fmt.Sscanf(f[1], "#%d", &seq); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		seqs = append(seqs, seq)
	}
	return seqs
}

func TestEventsCommand(t *testing.T) {
	l := newEventLog(t, false)
	l.story()
	url := l.s.URL()
	run := func(args ...string) string {
		t.Helper()
		out, _, err := invocation{}.ctl(t, url, append([]string{"events", "--no-follow"}, args...)...)
		if err != nil {
			t.Fatalf("events %v: %v", args, err)
		}
		return out
	}

	out := run()
	if got := seqsOf(t, out); !slices.Equal(got, []uint64{1, 2, 3, 4, 5, 6, 7, 10, 11}) {
		t.Fatalf("default namespace: %v\n%s", got, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	short := "sha256:" + logLayer.Digest.Encoded()[:12] + "…"
	for i, want := range map[int][]string{
		0: {"#1 ", "pull-requested", "pull opP1", "node=gw-1", "actor=alice", "op=opP1", alpine + " linux/amd64"},
		1: {"#2 ", "blob-committed", "blob " + short, "node=node-1", "layer " + short + " 4.2 MiB (fetched 4.2 MiB in 1.4s)"},
		2: {"#3 ", "image-updated", "image " + alpine},
		8: {"#11 ", "task-exited", "container web", "node=node-1", "actor=bob", "op=opK1", "exit 137 (SIGKILL, oom)"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i], w) {
				t.Errorf("line %d %q lacks %q", i, lines[i], w)
			}
		}
	}
	if !strings.HasPrefix(lines[0], logBase.Local().Format(eventTimeFormat)) {
		t.Errorf("line 0 does not start with its time: %q", lines[0])
	}

	tests := []struct {
		args []string
		want []uint64
	}{
		{[]string{"-A"}, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}},
		{[]string{"-n", "team-a"}, []uint64{8, 9}},
		{[]string{"--type", "pull-failed", "--all-namespaces"}, []uint64{9}},
		{[]string{"--type", "pull-requested", "--type", "task-exited"}, []uint64{1, 11}},
		{[]string{"--image", "alpine:3.20"}, []uint64{3}},
		{[]string{"--container", "web"}, []uint64{5, 6, 7, 10, 11}},
		{[]string{"--blob", logLayer.Digest.Encoded()}, []uint64{2}},
		{[]string{"--blob", logLayer.Digest.String()}, []uint64{2}},
		{[]string{"--pull", "opP1"}, []uint64{1, 4}},
		{[]string{"--op", "opP1"}, []uint64{1, 2, 3, 4}},
		{[]string{"--actor", "bob"}, []uint64{5, 6, 7, 10, 11}},
		{[]string{"--actor", "carol", "-A"}, []uint64{8, 9}},
		{[]string{"--container", "web", "--type", "task-started", "--actor", "bob"}, []uint64{7}},
		{[]string{"--from-seq", "7"}, []uint64{7, 10, 11}},
		{[]string{"--since", "1h"}, []uint64{1, 2, 3, 4, 5, 6, 7, 10, 11}},
		{[]string{"--since", time.Now().Add(time.Hour).Format(time.RFC3339)}, nil},
	}
	for _, tc := range tests {
		if got := seqsOf(t, run(tc.args...)); !slices.Equal(got, tc.want) {
			t.Errorf("events %v: %v, want %v", tc.args, got, tc.want)
		}
	}
}

func TestEventsJSONIsOneEnvelopePerLine(t *testing.T) {
	l := newEventLog(t, false)
	l.story()
	out, _, err := invocation{}.ctl(t, l.s.URL(), "events", "--no-follow", "-A", "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 11 {
		t.Fatalf("%d lines:\n%s", len(lines), out)
	}
	for i, line := range lines {
		var rec struct {
			Seq uint64 `json:"seq"`
			events.Envelope
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("line %d is not JSON: %v\n%s", i, err, line)
		}
		if rec.Seq != uint64(i+1) || rec.ID == "" || rec.Type == "" || rec.Actor == "" || rec.Node == "" || rec.Operation == "" || len(rec.Payload) == 0 {
			t.Errorf("line %d: %s", i, line)
		}
	}
	if !strings.Contains(lines[10], `"seq":11`) || !strings.Contains(lines[10], `"type":"task-exited"`) || !strings.Contains(lines[10], `"oom_killed":true`) {
		t.Errorf("last line: %s", lines[10])
	}
}

// TestEventsFollowsAfterReplay runs `ctl events --from-seq 1` while events
// are appended: it prints the log, then what is appended, each event once
// and in order, until interrupted (which is not an error).
func TestEventsFollowsAfterReplay(t *testing.T) {
	l := newEventLog(t, false)
	for i := range 200 {
		l.at(time.Duration(i), "default", "op", "tester", "node-1", events.TypeContainerDeleted,
			events.ContainerAggregate(fmt.Sprintf("c%d", i)), events.ContainerDeleted{ID: fmt.Sprintf("c%d", i)})
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- runWith(ctx, args{argv: []string{"--nats", l.s.URL(), "events", "--from-seq", "1", "--format", "json"}, stdout: &out, stderr: &errb})
	}()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // appended while ctl replays, and after
		defer wg.Done()
		for i := 200; i < 500; i++ {
			l.at(time.Duration(i), "default", "op", "tester", "node-1", events.TypeContainerDeleted,
				events.ContainerAggregate(fmt.Sprintf("c%d", i)), events.ContainerDeleted{ID: fmt.Sprintf("c%d", i)})
		}
	}()
	wg.Wait()
	natstest.Eventually(t, 10*time.Second, func() bool { return strings.Count(out.String(), "\n") >= 500 }, "ctl printed %d of 500 events", strings.Count(out.String(), "\n"))
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("ctl events: %v (%s)", err, errb.String())
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 500 {
		t.Fatalf("%d lines", len(lines))
	}
	for i, line := range lines {
		var rec struct {
			Seq uint64 `json:"seq"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil || rec.Seq != uint64(i+1) {
			t.Fatalf("line %d: seq %d (%v), want %d", i, rec.Seq, err, i+1)
		}
	}
}

func TestEventsBadInputs(t *testing.T) {
	l := newEventLog(t, false)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--since", "yesterday"}, `--since "yesterday": invalid argument: want a time (RFC 3339`},
		{[]string{"--since", "-5m"}, "must be positive"},
		{[]string{"--from-seq", "0"}, "--from-seq 0: invalid argument: log sequences start at 1"},
		{[]string{"--from-seq", "x"}, `invalid argument "x" for "--from-seq"`},
		{[]string{"--from-seq", "3", "--since", "1h"}, "give --since or --from-seq, not both"},
		{[]string{"-A", "-n", "team-a"}, "give --namespace or --all-namespaces, not both"},
		{[]string{"--blob", "nope"}, `--blob: "nope" is not a digest`},
		{[]string{"--type", "pull.failed"}, `event type "pull.failed"`},
		{[]string{"--container", "a/b"}, `container id "a/b"`},
		{[]string{"--format", "yaml"}, `--format "yaml"`},
		{[]string{"extra"}, `unknown command "extra"`},
	}
	for _, tc := range tests {
		_, _, err := invocation{}.ctl(t, l.s.URL(), append([]string{"events", "--no-follow"}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("events %v: %v, want %q", tc.args, err, tc.want)
		}
	}
}

func TestHistoryCommand(t *testing.T) {
	l := newEventLog(t, true)
	l.story()
	url := l.s.URL()

	out, _, err := invocation{}.ctl(t, url, "history", "image", "alpine:3.20")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{
		"SEQ", "STEP", "ELAPSED", "NODE", "ACTOR",
		"pull-requested", "+1.5s", "blob-committed", "+2.5s", "image-updated", "+3s", "pull-completed", "[completed]",
		"OPERATION", "opP1", "alice", "completed", "3s", "gw-1,node-1",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("image history lacks %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "container-create-requested") {
		t.Errorf("image history has the container:\n%s", out)
	}

	out, _, err = invocation{}.ctl(t, url, "history", "container", "web")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"container-create-requested", "task-started", "exit 137 (SIGKILL, oom)", "+250ms", "+3.25s", "opC1", "opK1", "bob"} {
		if !strings.Contains(out, w) {
			t.Errorf("container history lacks %q:\n%s", w, out)
		}
	}

	// Another namespace's failed pull, by operation, through the gateway's
	// record of it.
	natstest.Eventually(t, 5*time.Second, func() bool {
		out, _, err := invocation{}.ctl(t, url, "ops", "get", "opP2")
		return err == nil && strings.Contains(out, "failed")
	}, "the gateway did not record opP2")
	out, _, err = invocation{}.ctl(t, url, "history", "op", "opP2", "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	var h struct {
		Kind   string `json:"kind"`
		ID     string `json:"id"`
		Events []struct {
			Seq     uint64          `json:"seq"`
			Event   events.Envelope `json:"event"`
			Step    time.Duration   `json:"step_ns"`
			Elapsed time.Duration   `json:"elapsed_ns"`
			Outcome string          `json:"outcome"`
			Message string          `json:"message"`
		} `json:"events"`
		Operations []struct {
			Op       string        `json:"op"`
			Actor    string        `json:"actor"`
			State    string        `json:"state"`
			Message  string        `json:"message"`
			Duration time.Duration `json:"duration_ns"`
			Nodes    []string      `json:"nodes"`
		} `json:"operations"`
	}
	if err := json.Unmarshal([]byte(out), &h); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if h.Kind != "op" || h.ID != "opP2" || len(h.Events) != 2 || h.Events[0].Seq != 8 || h.Events[1].Seq != 9 ||
		h.Events[1].Step != 500*time.Millisecond || h.Events[1].Outcome != "failed" || h.Events[1].Message != "registry.example/other:1: manifest unknown" ||
		h.Events[0].Event.Actor != "carol" || h.Events[1].Event.Node != "node-2" {
		t.Fatalf("op history: %s", out)
	}
	if len(h.Operations) != 1 || h.Operations[0].State != "failed" || h.Operations[0].Duration != 500*time.Millisecond ||
		!slices.Equal(h.Operations[0].Nodes, []string{"gw-1", "node-2"}) || h.Operations[0].Actor != "carol" {
		t.Fatalf("op outcome: %s", out)
	}

	out, _, err = invocation{}.ctl(t, url, "history", "op", "opP2")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "failed") || !strings.Contains(out, "registry.example/other:1: manifest unknown (not_found)") {
		t.Errorf("op history:\n%s", out)
	}
}

func TestHistoryBadInputs(t *testing.T) {
	l := newEventLog(t, false)
	l.story()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"history", "volume", "x"}, `history: unknown kind "volume": want image, container or op`},
		{[]string{"history", "image"}, "history: missing KIND and ID"},
		{[]string{"history", "image", "a", "b"}, "history: too many arguments"},
		{[]string{"history", "container", "nope"}, "no events in the log"},
		{[]string{"history", "container", "a.b"}, `container id "a.b"`},
		{[]string{"history", "op", "a", "--format", "yaml"}, `--format "yaml"`},
	}
	for _, tc := range tests {
		_, _, err := invocation{}.ctl(t, l.s.URL(), tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
}

func TestListingsAt(t *testing.T) {
	l := newEventLog(t, true)
	l.story()
	url := l.s.URL()
	run := func(args ...string) (string, string) {
		t.Helper()
		out, errOut, err := invocation{}.ctl(t, url, args...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return out, errOut
	}

	// Before the image was recorded, and after.
	out, note := run("images", "--at", "2")
	if strings.Contains(out, alpine) || !strings.Contains(note, "as of event #2") {
		t.Errorf("images at 2:\n%s%s", out, note)
	}
	out, _ = run("images", "ls", "--at", "3")
	if !strings.Contains(out, alpine) || !strings.Contains(out, "5.0 MiB") {
		t.Errorf("images at 3:\n%s", out)
	}
	out, _ = run("images", "--at", logBase.Add(2*time.Second).Format(time.RFC3339Nano), "-q")
	if out != "" {
		t.Errorf("images at +2s: %q", out)
	}
	out, _ = run("images", "--at", logBase.Add(2600*time.Millisecond).Format(time.RFC3339Nano), "--format", "json")
	var imgs []api.Image
	if err := json.Unmarshal([]byte(out), &imgs); err != nil || len(imgs) != 1 || imgs[0].Name != alpine {
		t.Errorf("images at +2.6s: %v %s", err, out)
	}

	// The task runs at 7 (and at +6s), has exited at 11.
	out, _ = run("ps", "--at", "7")
	if !strings.Contains(out, "web") || !strings.Contains(out, "4242") || !strings.Contains(out, "running") {
		t.Errorf("ps at 7:\n%s", out)
	}
	out, _ = run("ps", "--at", logBase.Add(6*time.Second).Format(time.RFC3339))
	if !strings.Contains(out, "web") {
		t.Errorf("ps at +6s:\n%s", out)
	}
	out, _ = run("ps", "--at", "11")
	if strings.Contains(out, "web") {
		t.Errorf("ps at 11 lists a stopped task:\n%s", out)
	}
	out, _ = run("ps", "-a", "--at", "11", "--format", "json")
	var tasks []taskJSON
	if err := json.Unmarshal([]byte(out), &tasks); err != nil || len(tasks) != 1 || tasks[0].Status != api.TaskStopped ||
		tasks[0].ExitCode == nil || *tasks[0].ExitCode != 137 {
		t.Errorf("ps -a at 11: %v %s", err, out)
	}
	// Without --at: the present, from the gateway's view.
	out, _ = run("ps", "-a")
	if !strings.Contains(out, "stopped") {
		t.Errorf("ps -a now:\n%s", out)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"ps", "--at", "yesterday"}, `--at "yesterday": invalid argument: want a time (RFC 3339`},
		{[]string{"ps", "--at", "0"}, "--at 0: invalid argument: log sequences start at 1"},
		{[]string{"images", "--at", "99"}, "sequence 99 is beyond the end of the log (its last event is 11)"},
		{[]string{"images", "--at", "3", "--format", "yaml"}, `--format "yaml"`},
	} {
		_, _, err := invocation{}.ctl(t, url, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
}

func TestEventsHelp(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"events", "history"}},
		{[]string{"events", "--help"}, []string{"--since", "--from-seq", "--no-follow", "--all-namespaces", "--type", "--image", "--container", "--blob", "--pull", "--op", "--actor", "--format", "Examples:"}},
		{[]string{"history", "--help"}, []string{"image REF", "container ID", "op ID", "STEP", "ELAPSED", "--format", "Examples:"}},
		{[]string{"ps", "--help"}, []string{"--at", "ctl ps --at 1h"}},
		{[]string{"images", "--help"}, []string{"--at", "ctl images --at 1234"}},
		{[]string{"images", "ls", "--help"}, []string{"--at"}},
	} {
		out, _, err := ctl(t, tc.args...)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v lacks %q:\n%s", tc.args, w, out)
			}
		}
	}
}
