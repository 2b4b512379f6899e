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

// propertySteps is how many random steps TestViewEqualsReplay takes.
const propertySteps = 40

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

// TestViewEqualsReplay runs a seeded random sequence of pulls, runs, kills
// and removals against the real binaries, SIGKILLing and restarting
// workers on the way, and then checks design invariant 4 on the live
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
	seed := propertySeed(t)
	t.Logf("seed %d (rerun with SD_PROPERTY_SEED=%d)", seed, seed)
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

	workers := []string{"fetcher-1", "fetcher-2", "unpacker", "executor"}
	restart := func(name string) {
		switch {
		case strings.HasPrefix(name, "fetcher"):
			c.startFetcher(name, "--metrics", "127.0.0.1:0")
		case name == "unpacker":
			c.startUnpacker()
		case name == "executor":
			c.startExecutor()
		}
	}
	crash := func(step int) string {
		name := workers[r.IntN(len(workers))]
		c.kill(name, syscall.SIGKILL)
		restart(name)
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

	start := time.Now()
	crashes, midWork := 0, 0
	for step := 1; step <= propertySteps; step++ {
		var did string
		switch k := r.IntN(40); {
		case k < 5: // pull
			ref := m.images[r.IntN(len(m.images))]
			c.mustCtl("pull", "-q", ref)
			did = "pull " + ref
		case k < 7 && midWork < 3: // pull, with a worker killed while it works
			ref := m.images[r.IntN(len(m.images))]
			if r.IntN(2) == 0 {
				c.ctl("images", "rm", ref) // so that there is work to do
			}
			cmd := c.ctlCmd("pull", "-q", ref)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Duration(r.IntN(300)) * time.Millisecond)
			name := crash(step)
			waitCmd(t, cmd, 90*time.Second)
			midWork++
			crashes++
			did = fmt.Sprintf("pull %s while %s was killed: exit %d", ref, name, cmd.ProcessState.ExitCode())
		case k < 13: // run --rm, attached
			code := r.IntN(4)
			res := c.ctl("run", "--rm", m.busybox, "sh", "-c", fmt.Sprintf("echo step %d; exit %d", step, code))
			if res.code != code || res.stdout != fmt.Sprintf("step %d\n", step) {
				t.Fatalf("step %d: run --rm: exit %d stdout %q stderr %q; want %d", step, res.code, res.stdout, res.stderr, code)
			}
			did = fmt.Sprintf("run --rm: exit %d", code)
		case k < 18 && len(m.containers) < 4: // run -d
			m.next++
			id := fmt.Sprintf("prop-%d", m.next)
			c.mustCtl("run", "-d", "--name", id, m.busybox, "sleep", "60")
			m.containers[id] = "running"
			did = "run -d " + id
		case k < 21: // run, attached, kept
			m.next++
			id := fmt.Sprintf("prop-%d", m.next)
			if res := c.ctl("run", "--name", id, m.busybox, "true"); res.code != 0 {
				t.Fatalf("step %d: run %s: exit %d stderr %q", step, id, res.code, res.stderr)
			}
			m.containers[id] = "stopped"
			did = "run " + id
		case k < 25: // kill
			id := pick("running")
			if id == "" {
				continue
			}
			c.mustCtl("kill", "--signal", "KILL", id)
			if res := c.ctl("wait", id); res.code != 137 {
				t.Fatalf("step %d: wait %s after SIGKILL: exit %d stdout %q stderr %q", step, id, res.code, res.stdout, res.stderr)
			}
			m.containers[id] = "stopped"
			did = "kill " + id
		case k < 29: // rm
			id := pick("")
			if id == "" {
				continue
			}
			if m.containers[id] == "running" {
				c.mustCtl("rm", "-f", id)
			} else {
				c.mustCtl("rm", id)
			}
			delete(m.containers, id)
			did = "rm " + id
		case k < 32: // images rm (a busybox still used by a container may be refused)
			ref := m.images[r.IntN(len(m.images))]
			did = fmt.Sprintf("images rm %s: exit %d", ref, c.ctl("images", "rm", ref).code)
		case k < 34: // content rm of a random image's blob
			d := m.contentRm[r.IntN(len(m.contentRm))]
			did = fmt.Sprintf("content rm %s: exit %d", d.Encoded()[:12], c.ctl("content", "rm", d.String()).code)
		default: // a worker crashes between two steps
			did = "crash and restart " + crash(step)
			crashes++
		}
		t.Logf("step %d (%.1fs): %s", step, time.Since(start).Seconds(), did)
	}
	for id := range m.containers {
		c.mustCtl("rm", "-f", id)
	}
	t.Logf("%d steps, %d crashes, in %v", propertySteps, crashes, time.Since(start).Round(time.Millisecond))

	nc, err := nats.Connect(c.url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	live := c.waitQuiet(nc, js)
	replayed := replayDigest(t, js, live.Seq)
	if replayed != live.SHA256 {
		t.Fatalf("the live view at %d (sha256 %s) differs from the view replayed from the log (%s)", live.Seq, live.SHA256, replayed)
	}
	t.Logf("live view at sequence %d equals the replayed view: sha256 %s", live.Seq, live.SHA256)

	// The gateway's own metrics agree, and the workers' count their work
	// (one more pull, so that a fetcher that has not been restarted since
	// handles one).
	body := scrape(t, c.procs["gateway"].log)
	if want := fmt.Sprintf("stevedore_projection_applied_sequence %d\n", live.Seq); !strings.Contains(body, want) {
		t.Errorf("gateway metrics lack %q", strings.TrimSpace(want))
	}
	if !regexp.MustCompile(`(?m)^stevedore_pulls_requested_total [1-9]`).MatchString(body) {
		t.Errorf("gateway metrics count no pull requested")
	}
	c.mustCtl("pull", "-q", m.busybox)
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
	live = c.waitQuiet(nc, js)

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
