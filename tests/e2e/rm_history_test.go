package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stevedore/stevedore/pkg/events"
	"github.com/stevedore/stevedore/pkg/runtime"
)

// logEvents returns every event of type typ in the log, as ctl events
// --format json prints them.
func (c *cluster) logEvents(typ events.Type) []events.Envelope {
	c.t.Helper()
	out := c.mustCtl("events", "-A", "--from-seq", "1", "--no-follow", "--type", string(typ), "--format", "json")
	var evs []events.Envelope
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var ev events.Envelope
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			c.t.Fatalf("ctl events --format json: %v\n%s", err, line)
		}
		evs = append(evs, ev)
	}
	return evs
}

// removedSnapshot returns the snapshot-removed event of key.
func (c *cluster) removedSnapshot(key string) events.Envelope {
	c.t.Helper()
	for _, ev := range c.logEvents(events.TypeSnapshotRemoved) {
		var p events.SnapshotRemoved
		if ev.Decode(&p) == nil && p.Key == key {
			return ev
		}
	}
	c.t.Fatalf("no snapshot-removed of %s in the log", key)
	return events.Envelope{}
}

// TestContainerRemovalRecordsItsSnapshotInItsOperation removes a container
// with ctl rm and another with run --rm: the removal of each one's rootfs
// snapshot is recorded in the operation that removed it, by the actor who
// asked, caused by the request, so the operation's history shows it.
func TestContainerRemovalRecordsItsSnapshotInItsOperation(t *testing.T) {
	c, img := busyboxCluster(t)

	c.mustCtl("run", "-d", "--name", "c1", img, "sleep", "300")
	c.mustCtl("rm", "-f", "c1")
	var asked events.Envelope
	for _, ev := range c.logEvents(events.TypeContainerDeleteRequested) {
		if ev.Aggregate.ID == "c1" {
			asked = ev
		}
	}
	if asked.Operation == "" {
		t.Fatal("no container-delete-requested of c1 in the log")
	}
	removed := c.removedSnapshot(runtime.TaskID("default", "c1"))
	if removed.Operation != asked.Operation || removed.Actor != asked.Actor || removed.Causation != asked.ID {
		t.Fatalf("snapshot-removed of c1's rootfs: op %q actor %q causation %q; want the rm's op %q, actor %q, causation %q",
			removed.Operation, removed.Actor, removed.Causation, asked.Operation, asked.Actor, asked.ID)
	}
	if out := c.mustCtl("history", "op", asked.Operation); !strings.Contains(out, "snapshot-removed") {
		t.Fatalf("ctl history op %s lacks snapshot-removed:\n%s", asked.Operation, out)
	}

	c.mustCtl("run", "--rm", "--name", "c2", img, "true")
	var run events.Envelope
	for _, ev := range c.logEvents(events.TypeContainerCreateRequested) {
		if ev.Aggregate.ID == "c2" {
			run = ev
		}
	}
	eventually(t, 10*time.Second, func() bool {
		for _, ev := range c.logEvents(events.TypeSnapshotRemoved) {
			var p events.SnapshotRemoved
			if ev.Decode(&p) == nil && p.Key == "c2" {
				return true
			}
		}
		return false
	}, "the --rm container's rootfs is removed")
	removed = c.removedSnapshot("c2")
	if removed.Operation != run.Operation || removed.Actor != run.Actor || removed.Causation == "" {
		t.Fatalf("snapshot-removed of c2's rootfs: op %q actor %q causation %q; want the run's op %q and actor %q",
			removed.Operation, removed.Actor, removed.Causation, run.Operation, run.Actor)
	}
}
