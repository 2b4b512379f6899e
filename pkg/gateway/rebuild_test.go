package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/stevedore/stevedore/internal/testutil/natstest"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
	"github.com/stevedore/stevedore/pkg/metrics"
	"github.com/stevedore/stevedore/pkg/view"
)

// publishGen appends n generated events to the log, pipelined.
func publishGen(t testing.TB, js jetstream.JetStream, g *logGen, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for range n {
		ev := g.next()
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishMsgAsync(&nats.Msg{Subject: ev.Subject(), Data: b}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatal("appending generated events timed out")
	}
}

// digestOf asks the running gateway for its view's digest.
func digestOf(t *testing.T, nc *nats.Conn) ViewDigest {
	t.Helper()
	msg, err := nc.Request(SubjectViewDigest, nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var d ViewDigest
	if err := json.Unmarshal(msg.Data, &d); err != nil {
		t.Fatal(err)
	}
	if d.Error != "" {
		t.Fatalf("digest: %s", d.Error)
	}
	return d
}

// The live view, projected in batches while events arrive (and across a
// restart), equals a view rebuilt from zero; the hidden digest endpoint
// says so, and the projection metrics follow.
func TestRebuildEqualsLive(t *testing.T) {
	h := newHarness(t)
	g := newLogGen(3)
	publishGen(t, h.srv.JS, g, 1500) // before the gateway: catch-up
	g1 := h.start()
	publishGen(t, h.srv.JS, g, 500) // while it runs: live tail
	// A message that is not an event and one from a newer schema.
	if _, err := h.srv.JS.Publish(context.Background(), "sd.evt.default.junk.x.junk.-", []byte("not json")); err != nil {
		t.Fatal(err)
	}
	newer := g.next()
	newer.Version = events.SchemaVersion + 1
	b, _ := json.Marshal(newer)
	if _, err := h.srv.JS.Publish(context.Background(), newer.Subject(), b); err != nil {
		t.Fatal(err)
	}
	mid := h.lastSeq()
	natstest.Eventually(t, 20*time.Second, func() bool { return g1.view.AppliedSeq() == mid }, "view did not catch up")
	g1.stop(t)
	publishGen(t, h.srv.JS, g, 1000) // while it is down
	g2 := h.start()
	last := h.lastSeq()
	natstest.Eventually(t, 20*time.Second, func() bool { return g2.view.AppliedSeq() == last }, "restarted view did not catch up")

	live := digestOf(t, h.nc)
	if live.Seq != last || live.Node != "node1" || len(live.SHA256) != 64 {
		t.Fatalf("digest = %+v, want one at %d", live, last)
	}
	if got := metrics.Value(metrics.ProjectionApplied); got != float64(last) {
		t.Errorf("applied sequence metric = %v, want %d", got, last)
	}
	if got := metrics.Value(metrics.ProjectionLag); got != 0 {
		t.Errorf("lag metric = %v, want 0", got)
	}
	if batches, events := metrics.Value(metrics.ProjectionBatch), metrics.Value(metrics.ProjectionEvents); batches >= events/2 {
		t.Errorf("%v batches for %v events: catching up did not batch", batches, events)
	}

	fresh, err := view.Open("fresh", view.InMemory())
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	logs := &syncBuffer{}
	got, err := Rebuild(context.Background(), RebuildConfig{
		JS: h.srv.JS, View: fresh, BatchSize: 64, ProgressEvery: time.Nanosecond, Logger: zerolog.New(logs),
	})
	if err != nil {
		t.Fatal(err)
	}
	if got != last {
		t.Fatalf("rebuilt to %d, want %d", got, last)
	}
	seq, sum, err := fresh.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if seq != live.Seq || sum != live.SHA256 {
		t.Fatalf("rebuilt view (%d, %s) differs from the live one (%d, %s)", seq, sum, live.Seq, live.SHA256)
	}
	for _, want := range []string{`"message":"rebuilding the view"`, `"events_per_second":`, `"done":"`, `"message":"view rebuilt"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("rebuild logs lack %s:\n%s", want, logs.String())
		}
	}
	if _, err := Rebuild(context.Background(), RebuildConfig{JS: h.srv.JS, View: fresh}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("rebuilding into a view that is not empty: %v", err)
	}
}

// A log whose oldest events have aged out is not rebuilt from unless a
// partial view is asked for.
func TestRebuildRefusesTrimmedLog(t *testing.T) {
	h := newHarness(t)
	publishGen(t, h.srv.JS, newLogGen(4), 50)
	ctx := context.Background()
	s, err := h.srv.JS.Stream(ctx, events.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSequence(11)); err != nil {
		t.Fatal(err)
	}
	v, err := view.Open("v", view.InMemory())
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	_, err = Rebuild(ctx, RebuildConfig{JS: h.srv.JS, View: v})
	if !errors.Is(err, ErrLogTrimmed) || !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "events 1 to 10 have aged out") {
		t.Fatalf("rebuild from a trimmed log: %v", err)
	}
	if v.AppliedSeq() != 0 {
		t.Fatal("a refused rebuild applied events")
	}
	got, err := Rebuild(ctx, RebuildConfig{JS: h.srv.JS, View: v, AllowPartial: true})
	if err != nil || got != 50 {
		t.Fatalf("partial rebuild = %d, %v; want 50", got, err)
	}
}
