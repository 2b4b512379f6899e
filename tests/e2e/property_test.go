package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/opencontainers/go-digest"

	"github.com/stevedore/stevedore/internal/testutil/registry"
	"github.com/stevedore/stevedore/internal/testutil/testimage"
	"github.com/stevedore/stevedore/pkg/events"
	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
	"github.com/stevedore/stevedore/pkg/gateway"
	"github.com/stevedore/stevedore/pkg/view"
)

// defaultPropertySteps is how many steps TestViewEqualsReplay takes unless
// SD_PROPERTY_STEPS says otherwise.
const defaultPropertySteps = 200

// propertySteps is how many steps TestViewEqualsReplay takes:
// SD_PROPERTY_STEPS, else defaultPropertySteps. It is at least the number
// of steps the schedule guarantees.
func propertySteps(t *testing.T) int {
	s := os.Getenv("SD_PROPERTY_STEPS")
	if s == "" {
		return defaultPropertySteps
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < len(requiredSteps) {
		t.Fatalf("SD_PROPERTY_STEPS=%q: want a number of at least %d (the steps every run takes)", s, len(requiredSteps))
	}
	return n
}

// propertySeed is the seed of the step sequence: SD_PROPERTY_SEED, a
// number or "random", else a fixed one so that CI runs are reproducible.
func propertySeed(t *testing.T) uint64 {
	s := os.Getenv("SD_PROPERTY_SEED")
	switch s {
	case "":
		return 20261123
	case "random":
		return uint64(time.Now().UnixNano())
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("SD_PROPERTY_SEED=%q: want a number or random", s)
	}
	return n
}

// model is what the test knows it did.
type model struct {
	images     []string          // references that can be pulled
	busybox    string            // the one with a shell
	contentRm  []digest.Digest   // blobs the test may remove (not busybox's)
	containers map[string]string // id → "running" or "stopped"
	next       int
}

// stepKind is a kind of step TestViewEqualsReplay takes.
type stepKind string

const (
	stepPull        stepKind = "pull"
	stepPullCrash   stepKind = "pull-with-crash"
	stepRunRm       stepKind = "run-rm"
	stepRunDetached stepKind = "run-d"
	stepRun         stepKind = "run"
	stepKill        stepKind = "kill"
	stepRm          stepKind = "rm"
	stepImagesRm    stepKind = "images-rm"
	stepContentRm   stepKind = "content-rm"
	stepCrash       stepKind = "crash"
)

// stepKinds are the kinds of step, each with its weight among the random
// steps.
var (
	stepKinds   = []stepKind{stepPull, stepPullCrash, stepRunRm, stepRunDetached, stepRun, stepKill, stepRm, stepImagesRm, stepContentRm, stepCrash}
	stepWeights = []int{5, 2, 6, 5, 3, 4, 4, 3, 2, 6}
)

// crashTargets are the workers a crash with no target picks from; a
// pull-with-crash with no target picks from midWorkTargets, the workers a
// pull keeps busy. The gateway crashes once per run.
var (
	crashTargets   = []string{"fetcher-1", "fetcher-2", "unpacker", "executor"}
	midWorkTargets = []string{"fetcher-1", "fetcher-2", "unpacker"}
)

// maxContainers is how many containers the test keeps at most.
const maxContainers = 4

// planStep is one step of the plan: its kind and, for crashes, which
// process to SIGKILL ("": a random one).
type planStep struct {
	kind   stepKind
	target string
}

// requiredSteps are taken in every run, whatever the seed: every kind of
// step, a worker of each kind killed while it works on a pull, and every
// kind of process — fetcher, unpacker, executor and gateway — SIGKILLed
// between two steps.
var requiredSteps = []planStep{
	{stepPull, ""},
	{stepPullCrash, "fetcher-1"},
	{stepPullCrash, "unpacker"},
	{stepRunRm, ""},
	{stepRunDetached, ""},
	{stepRun, ""},
	{stepKill, ""},
	{stepRm, ""},
	{stepImagesRm, ""},
	{stepContentRm, ""},
	{stepCrash, "fetcher-2"},
	{stepCrash, "unpacker"},
	{stepCrash, "executor"},
	{stepCrash, "gateway"},
}

// propertyPlan returns n steps: requiredSteps and random ones, weighted by
// stepWeights, shuffled together. Pulls with a crash, which are slow (the
// killed worker's work is redelivered after its ack wait), are at most one
// in 25 (at least 3).
func propertyPlan(r *rand.Rand, n int) []planStep {
	plan := slices.Clone(requiredSteps)
	total := 0
	for _, w := range stepWeights {
		total += w
	}
	midWork := 0
	for _, st := range plan {
		if st.kind == stepPullCrash {
			midWork++
		}
	}
	for len(plan) < n {
		k := r.IntN(total)
		i := 0
		for k >= stepWeights[i] {
			k -= stepWeights[i]
			i++
		}
		kind := stepKinds[i]
		if kind == stepPullCrash {
			if midWork >= max(3, n/25) {
				kind = stepPull
			} else {
				midWork++
			}
		}
		plan = append(plan, planStep{kind: kind})
	}
	r.Shuffle(len(plan), func(i, j int) { plan[i], plan[j] = plan[j], plan[i] })
	return plan
}

// TestViewEqualsReplay runs a long seeded random sequence of pulls, runs,
// kills and removals against the real binaries, SIGKILLing and restarting
// workers and the gateway on the way — every kind of step and a crash of
// every kind of process are in every run, whatever the seed (see
// requiredSteps) — and then checks design invariant 4 on the live
// system: once it is quiet, the gateway's view is byte for byte the view
// rebuilt from zero by replaying the log (compared by digest), and so is
// the view that gateway --rebuild-view builds.
func TestViewEqualsReplay(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("runc"); err != nil {
		t.Fatalf("runc is required (apt-get install runc; make test installs it): %v", err)
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Fatalf("/bin/busybox is required (apt-get install busybox-static; make test installs it): %v", err)
	}
	seed, steps := propertySeed(t), propertySteps(t)
	t.Logf("seed %d, %d steps (rerun with SD_PROPERTY_SEED=%d SD_PROPERTY_STEPS=%d)", seed, steps, seed, steps)
	r := rand.New(rand.NewPCG(seed, seed>>1|1))

	reg := registry.Start(t)
	bb, err := testimage.Busybox("/bin/busybox", testimage.Gzip, testimage.OCI)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := testimage.Push(context.Background(), reg.Host(), "prop/busybox:1", bb); err != nil {
		t.Fatal(err)
	}
	m := &model{busybox: reg.Host() + "/prop/busybox:1", containers: map[string]string{}}
	m.images = append(m.images, m.busybox)
	for i := range 2 {
		ref, blobs := pushImage(t, reg, fmt.Sprintf("prop/random-%d:1", i), int64(seed%1000)+int64(10*i), testimage.Gzip,
			int64(64<<10+r.IntN(512<<10)), int64(64<<10+r.IntN(512<<10)))
		m.images = append(m.images, ref)
		for _, b := range blobs {
			m.contentRm = append(m.contentRm, b.Digest)
		}
	}
	c := newCluster(t, 2, "--metrics", "127.0.0.1:0")

	// The test's own connection rides over gateway restarts.
	nc, err := nats.Connect(c.url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}

	restart := func(name string) {
		switch {
		case strings.HasPrefix(name, "fetcher"):
			c.startFetcher(name, "--metrics", "127.0.0.1:0")
		case name == "unpacker":
			c.startUnpacker()
		case name == "executor":
			c.startExecutor()
		case name == "gateway":
			c.startGateway()
		}
	}
	// crash SIGKILLs the named process (a random worker if it is empty)
	// and starts it again.
	crashed := map[string]int{}
	crash := func(name string) string {
		if name == "" {
			name = crashTargets[r.IntN(len(crashTargets))]
		}
		c.kill(name, syscall.SIGKILL)
		restart(name)
		crashed[name]++
		return name
	}
	pick := func(state string) string {
		var ids []string
		for id, st := range m.containers {
			if state == "" || st == state {
				ids = append(ids, id)
			}
		}
		if len(ids) == 0 {
			return ""
		}
		slices.Sort(ids)
		return ids[r.IntN(len(ids))]
	}
	runDetached := func() string {
		m.next++
		id := fmt.Sprintf("prop-%d", m.next)
		c.mustCtl("run", "-d", "--name", id, m.busybox, "sleep", "3600")
		m.containers[id] = "running"
		return id
	}

	plan := propertyPlan(r, steps)
	start := time.Now()
	done := map[stepKind]int{}
	for i, st := range plan {
		step := i + 1
		var did string
		switch st.kind {
		case stepPull:
			ref := m.images[r.IntN(len(m.images))]
			c.mustCtl("pull", "-q", ref)
			did = "pull " + ref
		case stepPullCrash: // pull, with a worker killed while it works
			ref := m.images[r.IntN(len(m.images))]
			if st.target != "" || r.IntN(2) == 0 {
				c.ctl("images", "rm", ref) // so that there is work to do
			}
			cmd := c.ctlCmd("pull", "-q", ref)
			var stderr syncBuffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Duration(r.IntN(300)) * time.Millisecond)
			target := st.target
			if target == "" {
				target = midWorkTargets[r.IntN(len(midWorkTargets))]
			}
			name := crash(target)
			waitCmd(t, cmd, 90*time.Second)
			did = fmt.Sprintf("pull %s while %s was killed: exit %d", ref, name, cmd.ProcessState.ExitCode())
			if msg := strings.TrimSpace(stderr.String()); msg != "" {
				did += ": " + msg
			}
		case stepRunRm: // run --rm, attached
			code := r.IntN(4)
			res := c.ctl("run", "--rm", m.busybox, "sh", "-c", fmt.Sprintf("echo step %d; exit %d", step, code))
			if res.code != code || res.stdout != fmt.Sprintf("step %d\n", step) {
				t.Fatalf("step %d: run --rm: exit %d stdout %q stderr %q; want %d", step, res.code, res.stdout, res.stderr, code)
			}
			did = fmt.Sprintf("run --rm: exit %d", code)
		case stepRunDetached:
			if len(m.containers) >= maxContainers {
				id := pick("")
				c.mustCtl("rm", "-f", id)
				delete(m.containers, id)
				did = "rm -f " + id + ", then "
			}
			did += "run -d " + runDetached()
		case stepRun: // run, attached, kept
			m.next++
			id := fmt.Sprintf("prop-%d", m.next)
			if res := c.ctl("run", "--name", id, m.busybox, "true"); res.code != 0 {
				t.Fatalf("step %d: run %s: exit %d stderr %q", step, id, res.code, res.stderr)
			}
			m.containers[id] = "stopped"
			did = "run " + id
		case stepKill:
			id := pick("running")
			if id == "" {
				id = runDetached()
				did = "run -d " + id + ", then "
			}
			c.mustCtl("kill", "--signal", "KILL", id)
			if res := c.ctl("wait", id); res.code != 137 {
				t.Fatalf("step %d: wait %s after SIGKILL: exit %d stdout %q stderr %q", step, id, res.code, res.stdout, res.stderr)
			}
			m.containers[id] = "stopped"
			did += "kill " + id
		case stepRm:
			id := pick("")
			if id == "" {
				id = runDetached()
				did = "run -d " + id + ", then "
			}
			if m.containers[id] == "running" {
				c.mustCtl("rm", "-f", id)
			} else {
				c.mustCtl("rm", id)
			}
			delete(m.containers, id)
			did += "rm " + id
		case stepImagesRm: // a busybox still used by a container may be refused
			ref := m.images[r.IntN(len(m.images))]
			did = fmt.Sprintf("images rm %s: exit %d", ref, c.ctl("images", "rm", ref).code)
		case stepContentRm: // a random image's blob
			d := m.contentRm[r.IntN(len(m.contentRm))]
			did = fmt.Sprintf("content rm %s: exit %d", d.Encoded()[:12], c.ctl("content", "rm", d.String()).code)
		case stepCrash: // a process crashes between two steps
			name := crash(st.target)
			if name == "gateway" {
				// Let every worker find the new gateway before the
				// next step.
				c.waitQuiet(nc, js)
			}
			did = "crash and restart " + name
		}
		done[st.kind]++
		t.Logf("step %d (%.1fs): %s", step, time.Since(start).Seconds(), did)
	}
	for id := range m.containers {
		c.mustCtl("rm", "-f", id)
	}

	// Every kind of step, and a crash of every kind of process, happened.
	var counts []string
	for _, k := range stepKinds {
		counts = append(counts, fmt.Sprintf("%s %d", k, done[k]))
	}
	var crashes []string
	for _, name := range append(slices.Clone(crashTargets), "gateway") {
		crashes = append(crashes, fmt.Sprintf("%s %d", name, crashed[name]))
	}
	t.Logf("seed %d: %d steps in %v: %s; SIGKILLed and restarted: %s", seed, steps, time.Since(start).Round(time.Millisecond),
		strings.Join(counts, ", "), strings.Join(crashes, ", "))
	for _, k := range stepKinds {
		if done[k] == 0 {
			t.Errorf("no %s step was taken", k)
		}
	}
	for _, name := range append(slices.Clone(crashTargets), "gateway") {
		if crashed[name] == 0 {
			t.Errorf("%s was never SIGKILLed and restarted", name)
		}
	}
	live := c.waitQuiet(nc, js)
	replayed := replayDigest(t, js, live.Seq)
	if replayed != live.SHA256 {
		t.Fatalf("the live view at %d (sha256 %s) differs from the view replayed from the log (%s)", live.Seq, live.SHA256, replayed)
	}
	t.Logf("live view at sequence %d equals the replayed view: sha256 %s", live.Seq, live.SHA256)

	// The gateway's own metrics agree, and the workers' count their work
	// (one more pull first, so that the gateway and a fetcher that have
	// been restarted since their last pull count one).
	c.mustCtl("pull", "-q", m.busybox)
	live = c.waitQuiet(nc, js)
	body := scrape(t, c.procs["gateway"].log)
	if want := fmt.Sprintf("stevedore_projection_applied_sequence %d\n", live.Seq); !strings.Contains(body, want) {
		t.Errorf("gateway metrics lack %q", strings.TrimSpace(want))
	}
	if !regexp.MustCompile(`(?m)^stevedore_pulls_requested_total [1-9]`).MatchString(body) {
		t.Errorf("gateway metrics count no pull requested")
	}
	fm := scrape(t, c.procs["fetcher-1"].log) + scrape(t, c.procs["fetcher-2"].log)
	for _, want := range []string{
		`stevedore_handler_duration_seconds_count{consumer="fetcher-e2e",outcome="ok",type="pull-requested"}`,
		`stevedore_consumer_pending_events{consumer="fetcher-e2e"}`,
		`stevedore_events_published_total{type="`,
	} {
		if !strings.Contains(fm, want) {
			t.Errorf("fetcher metrics lack %s", want)
		}
	}

	// Every process's micro service says what it is and where it runs.
	for _, svc := range []string{"stevedore", "stevedore-fetcher", "stevedore-snapshots", "stevedore-executor"} {
		msg, err := nc.Request("$SRV.INFO."+svc, nil, 5*time.Second)
		if err != nil {
			t.Fatalf("nats micro info %s: %v", svc, err)
		}
		var info struct {
			Name     string            `json:"name"`
			Version  string            `json:"version"`
			Metadata map[string]string `json:"metadata"`
		}
		if err := json.Unmarshal(msg.Data, &info); err != nil {
			t.Fatal(err)
		}
		if info.Name != svc || info.Version == "" || info.Metadata["node"] != "e2e" {
			t.Errorf("micro info of %s = %+v; want its name, a version and node e2e", svc, info)
		}
	}

	// gateway --rebuild-view builds the same view aside and swaps it in.
	c.kill("gateway", syscall.SIGTERM)
	c.startGateway("--rebuild-view")
	rebuilt := c.waitQuiet(nc, js)
	if rebuilt.Seq != live.Seq || rebuilt.SHA256 != live.SHA256 {
		t.Fatalf("gateway --rebuild-view built (%d, %s), want (%d, %s)", rebuilt.Seq, rebuilt.SHA256, live.Seq, live.SHA256)
	}
	if logs := tailAll(c.procs["gateway"].log); !strings.Contains(logs, `"message":"view rebuilt"`) || !strings.Contains(logs, `"message":"rebuilt view swapped in"`) {
		t.Errorf("the rebuilt gateway does not say it rebuilt its view:\n%s", tail(c.procs["gateway"].log, 20))
	}
}

// waitCmd waits for a started command, killing it after timeout.
func waitCmd(t *testing.T, cmd *exec.Cmd, timeout time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%v did not finish in %v", cmd.Args, timeout)
	}
}

// waitQuiet waits until the system is quiet — nothing pending or
// unacknowledged on any consumer, the log's end unchanged for a while, the
// gateway's view at it — and returns the gateway's view digest then.
func (c *cluster) waitQuiet(nc *nats.Conn, js jetstream.JetStream) gateway.ViewDigest {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var last uint64
	var since time.Time
	for {
		if ctx.Err() != nil {
			c.t.Fatalf("the system did not become quiet in 90s (log at %d)", last)
		}
		time.Sleep(100 * time.Millisecond)
		seq, err := sdjs.LastSeq(ctx, js)
		if err != nil {
			continue
		}
		if seq != last || !consumersIdle(ctx, js) {
			last, since = seq, time.Now()
			continue
		}
		msg, err := nc.Request(gateway.SubjectViewDigest, nil, 5*time.Second)
		if err != nil {
			continue
		}
		var d gateway.ViewDigest
		if err := json.Unmarshal(msg.Data, &d); err != nil {
			c.t.Fatal(err)
		}
		if d.Error != "" || d.Seq != seq || time.Since(since) < 1500*time.Millisecond {
			continue
		}
		return d
	}
}

// consumersIdle reports whether every durable consumer of the log has
// nothing pending and nothing unacknowledged.
func consumersIdle(ctx context.Context, js jetstream.JetStream) bool {
	s, err := js.Stream(ctx, events.EventsStream)
	if err != nil {
		return false
	}
	l := s.ListConsumers(ctx)
	for info := range l.Info() {
		if info.Config.Durable == "" {
			continue
		}
		if info.NumPending != 0 || info.NumAckPending != 0 {
			return false
		}
	}
	return l.Err() == nil
}

// replayDigest builds a fresh in-memory view by following the log from its
// start, one event at a time, up to seq, and returns its digest.
func replayDigest(t *testing.T, js jetstream.JetStream, seq uint64) string {
	t.Helper()
	v, err := view.Open("replay", view.InMemory())
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	errDone := errors.New("done")
	apply := func(ev *events.Envelope) error {
		if err := v.Apply(ev); err != nil {
			return err
		}
		if ev.Seq >= seq {
			return errDone
		}
		return nil
	}
	err = sdjs.Follow(ctx, js, sdjs.FollowConfig{
		Undecodable: func(s uint64, _ string, _ error) error { return apply(&events.Envelope{Seq: s}) },
	}, apply)
	if !errors.Is(err, errDone) {
		t.Fatalf("replaying the log to %d: %v (applied %d)", seq, err, v.AppliedSeq())
	}
	got, sum, err := v.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if got != seq {
		t.Fatalf("replayed view at %d, want %d", got, seq)
	}
	return sum
}

var metricsAddrRe = regexp.MustCompile(`"addr":"([0-9.:]+)"[^\n]*"message":"serving metrics at /metrics"`)

// scrape reads the /metrics of the process whose log is at path (the
// address it logged last).
func scrape(t *testing.T, logPath string) string {
	t.Helper()
	all := metricsAddrRe.FindAllStringSubmatch(tailAll(logPath), -1)
	if len(all) == 0 {
		t.Fatalf("%s: no metrics address logged", filepath.Base(logPath))
	}
	resp, err := http.Get("http://" + all[len(all)-1][1] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func tailAll(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
