package gateway

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/stevedore/stevedore/internal/testutil/natstest"
	"github.com/stevedore/stevedore/pkg/events"
	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
	"github.com/stevedore/stevedore/pkg/view"
)

// envInt reads a positive int from the environment, or def.
func envInt(b *testing.B, key string, def int) int {
	s := os.Getenv(key)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive number", key, s)
	}
	return n
}

// genLogInto appends n generated events to a fresh embedded server's log
// and returns how fast they were appended (pipelined, acknowledged), in
// events per second.
func genLogInto(b *testing.B, n int) (*natstest.Server, float64) {
	b.Helper()
	srv := natstest.Start(b)
	start := time.Now()
	publishGen(b, srv.JS, newLogGen(1), n)
	return srv, float64(n) / time.Since(start).Seconds()
}

var errBenchDone = errors.New("done")

// BenchmarkProject measures how fast a fresh on-disk view applies a log of
// realistic events, in batches (as the gateway does) against one event per
// commit (as it did before: the peer).
func BenchmarkProject(b *testing.B) {
	n := envInt(b, "SD_BENCH_PROJECT_EVENTS", 50_000)
	srv, _ := genLogInto(b, n)
	ctx := context.Background()
	for _, mode := range []string{"batched", "one-by-one"} {
		b.Run(mode, func(b *testing.B) {
			var elapsed time.Duration
			for b.Loop() {
				b.StopTimer()
				v, err := view.Open(filepath.Join(b.TempDir(), "view"))
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				start := time.Now()
				if mode == "batched" {
					err = sdjs.FollowBatches(ctx, srv.JS, sdjs.FollowConfig{}, func(batch []*events.Envelope, _ uint64) error {
						if err := v.ApplyBatch(batch); err != nil {
							return err
						}
						if v.AppliedSeq() >= uint64(n) {
							return errBenchDone
						}
						return nil
					})
				} else {
					err = sdjs.Follow(ctx, srv.JS, sdjs.FollowConfig{}, func(ev *events.Envelope) error {
						if err := v.Apply(ev); err != nil {
							return err
						}
						if ev.Seq >= uint64(n) {
							return errBenchDone
						}
						return nil
					})
				}
				elapsed += time.Since(start)
				b.StopTimer()
				if !errors.Is(err, errBenchDone) {
					b.Fatal(err)
				}
				if err := v.Close(); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(n*b.N)/elapsed.Seconds(), "events/s")
		})
	}
}

// BenchmarkRebuild measures gateway --rebuild-view: the time to rebuild an
// on-disk view from a log of SD_BENCH_REBUILD_EVENTS (default 1,000,000)
// realistic events.
func BenchmarkRebuild(b *testing.B) {
	n := envInt(b, "SD_BENCH_REBUILD_EVENTS", 1_000_000)
	srv, appendRate := genLogInto(b, n)
	ctx := context.Background()
	var elapsed time.Duration
	for b.Loop() {
		b.StopTimer()
		v, err := view.Open(filepath.Join(b.TempDir(), "view"))
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		got, err := Rebuild(ctx, RebuildConfig{JS: srv.JS, View: v, Logger: zerolog.Nop()})
		elapsed += time.Since(start)
		if err != nil || got != uint64(n) {
			b.Fatalf("rebuilt to %d, %v; want %d", got, err, n)
		}
		b.StopTimer()
		if err := v.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(appendRate, "appended-events/s")
	b.ReportMetric(elapsed.Seconds()/float64(b.N), "s/rebuild")
	b.ReportMetric(float64(n*b.N)/elapsed.Seconds(), "events/s")
}
