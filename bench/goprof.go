package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// goProfileSeconds is how long each daemon's CPU profile runs: it starts
// half a second before the profiled pull, which takes one or two seconds.
const goProfileSeconds = 4

// goProfiler fetches CPU profiles from Stevedore's daemons (their
// /debug/pprof/profile, served with --pprof) while a pull runs.
type goProfiler struct {
	wg    sync.WaitGroup
	mu    sync.Mutex
	files map[string]string // daemon → profile file
	errs  []string
}

// startGoProfiles asks every daemon of c for a CPU profile of the next
// seconds, in the background.
func (b *bench) startGoProfiles(c *sdCluster, seconds int) *goProfiler {
	g := &goProfiler{files: map[string]string{}}
	client := &http.Client{Timeout: time.Duration(seconds+30) * time.Second}
	for name, addr := range c.debug {
		g.wg.Go(func() {
			path := filepath.Join(b.cfg.out, "pprof-"+name+".pb.gz")
			err := fetchTo(client, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, seconds), path)
			g.mu.Lock()
			defer g.mu.Unlock()
			if err != nil {
				g.errs = append(g.errs, fmt.Sprintf("%s: %v", name, err))
				return
			}
			g.files[name] = path
		})
	}
	return g
}

func (g *goProfiler) wait() { g.wg.Wait() }

func fetchTo(client *http.Client, url, path string) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// reportGoProfiles adds each daemon's top functions (go tool pprof -top) to
// the report, and writes the full listings next to the profiles.
func (b *bench) reportGoProfiles(g *goProfiler) {
	for _, e := range g.errs {
		b.notes = append(b.notes, "A Go CPU profile could not be taken: "+e)
	}
	names := make([]string, 0, len(g.files))
	for n := range g.files {
		names = append(names, n)
	}
	sort.Strings(names)
	bin := map[string]string{}
	for _, n := range names {
		bin[n] = filepath.Join(b.cfg.bin, strings.SplitN(n, "-", 2)[0])
	}
	for _, name := range names {
		// Flat: where the CPU is spent; cumulative, our own functions only:
		// which of our steps it is spent under.
		var top []string
		for _, v := range []struct {
			kind, match string
			args        []string
		}{
			{"flat", "", []string{"-top", "-nodecount=40"}},
			{"cum", "stevedore/", []string{"-top", "-cum", "-nodecount=200"}},
		} {
			out, err := exec.Command("go", append(append([]string{"tool", "pprof"}, v.args...), bin[name], g.files[name])...).Output()
			if err != nil {
				b.notes = append(b.notes, fmt.Sprintf("go tool pprof on %s's profile: %v", name, err))
				break
			}
			txt := filepath.Join(b.cfg.out, "pprof-"+name+"-"+v.kind+".txt")
			if err := os.WriteFile(txt, out, 0o644); err != nil {
				b.notes = append(b.notes, fmt.Sprintf("write %s: %v", txt, err))
				break
			}
			rows, total := pprofTop(string(out), v.match, map[string]int{"flat": 8, "cum": 16}[v.kind])
			if total == "" {
				break // no samples: the daemon had nothing to do
			}
			if len(top) == 0 {
				top = append(top, total)
			}
			top = append(top, "-- "+v.kind+":")
			top = append(top, rows...)
		}
		if len(top) > 0 {
			b.profiles = append(b.profiles, profileSummary{tool: toolSD + " " + name, kind: "Go function (pprof)", path: filepath.Join(b.cfg.out, "pprof-"+name+".pb.gz"), top: top})
		}
	}
}

// pprofTop returns the first n rows of a go tool pprof -top listing whose
// function contains match, and its total-samples line ("" if it has no
// samples).
func pprofTop(listing, match string, n int) (rows []string, total string) {
	started := false
	for _, l := range strings.Split(listing, "\n") {
		t := strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(t, "Duration:"):
			if !strings.Contains(t, "Total samples = 0") {
				total = t
			}
		case strings.HasPrefix(t, "flat"):
			started = true
			rows = append(rows, t)
		case started && t != "" && n > 0 && strings.Contains(t, match):
			rows = append(rows, strings.Join(strings.Fields(t), " "))
			n--
		}
	}
	return rows, total
}
