package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/runtime"
	"github.com/stevedore/stevedore/pkg/snapshots"
)

// snapshotsByKey returns the node's snapshots by key.
func (c *cluster) snapshotsByKey() map[string]api.Snapshot {
	c.t.Helper()
	var ss []api.Snapshot
	out := c.mustCtl("snapshots", "ls", "--format", "json")
	if err := json.Unmarshal([]byte(out), &ss); err != nil {
		c.t.Fatalf("snapshots ls --format json: %v\n%s", err, out)
	}
	m := map[string]api.Snapshot{}
	for _, s := range ss {
		m[s.Key] = s
	}
	return m
}

// TestSnapshotsRmRefusesContainerRootfs runs a container and tries to
// remove its rootfs snapshot, and the image layer under it, with ctl
// snapshots rm: both are refused and the container keeps running on an
// intact rootfs; removing the container (ctl rm -f) then removes the
// snapshot.
func TestSnapshotsRmRefusesContainerRootfs(t *testing.T) {
	c, img := busyboxCluster(t)
	c.mustCtl("run", "-d", "--name", "c1", img, "sh", "-c", "echo alive > /marker; exec sleep 300")

	key := runtime.TaskID("default", "c1")
	rootfs, ok := c.snapshotsByKey()[key]
	if !ok || rootfs.Kind != "active" || rootfs.Labels[snapshots.ContainerLabel] != "default/c1" || rootfs.Parent == "" {
		t.Fatalf("rootfs snapshot %s of c1: %+v (found %v)", key, rootfs, ok)
	}

	r := c.ctl("snapshots", "rm", key)
	want := "snapshot " + key + " is the rootfs of container default/c1: remove the container first (ctl rm)"
	if r.code == 0 || !strings.Contains(r.stderr, want) || strings.Contains(r.stdout, key) {
		t.Fatalf("ctl snapshots rm %s: exit %d, want non-zero and %q\nstdout: %q\nstderr: %q", key, r.code, want, r.stdout, r.stderr)
	}
	r = c.ctl("snapshots", "rm", rootfs.Parent)
	if r.code == 0 || !strings.Contains(r.stderr, "parent") {
		t.Fatalf("ctl snapshots rm %s (the image's top layer, c1's rootfs parent): exit %d, want non-zero\nstdout: %q\nstderr: %q", rootfs.Parent, r.code, r.stdout, r.stderr)
	}

	ss := c.snapshotsByKey()
	if _, ok := ss[key]; !ok {
		t.Fatalf("rootfs snapshot %s is gone after a refused removal", key)
	}
	if _, ok := ss[rootfs.Parent]; !ok {
		t.Fatalf("layer snapshot %s is gone after a refused removal", rootfs.Parent)
	}
	var ct api.Container
	if err := json.Unmarshal([]byte(c.mustCtl("containers", "info", "c1")), &ct); err != nil {
		t.Fatal(err)
	}
	if ct.Task.Status != api.TaskRunning {
		t.Fatalf("c1 after the refused removals: %+v", ct.Task)
	}
	if err := syscall.Kill(ct.Task.Pid, 0); err != nil {
		t.Fatalf("c1's task process: %v", err)
	}
	// The rootfs's writable layer still holds what the task wrote.
	marker := filepath.Join("/proc", strconv.Itoa(ct.Task.Pid), "root", "marker")
	eventually(t, 5*time.Second, func() bool {
		b, err := os.ReadFile(marker)
		return err == nil && string(b) == "alive\n"
	}, "c1's /marker reads alive")

	c.mustCtl("rm", "-f", "c1")
	if _, ok := c.snapshotsByKey()[key]; ok {
		t.Fatalf("rootfs snapshot %s left after ctl rm -f c1", key)
	}
	c.assertNothingLeft("c1")
	// With the container gone, the layer has no child and can go.
	c.mustCtl("snapshots", "rm", rootfs.Parent)
}
