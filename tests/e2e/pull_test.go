package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore/stevedore/internal/testutil/natstest"
	"github.com/stevedore/stevedore/internal/testutil/registry"
	"github.com/stevedore/stevedore/internal/testutil/testimage"
	"github.com/stevedore/stevedore/pkg/api"
	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
)

// pushImage builds an image of the given random layer sizes (plus a small
// file layer) and pushes it; it returns the reference and every blob.
func pushImage(t *testing.T, reg *registry.Registry, repoTag string, seed int64, c testimage.Compression, sizes ...int64) (string, []ocispec.Descriptor) {
	t.Helper()
	files, err := testimage.NewLayer(c,
		testimage.Dir("etc", 0o755),
		testimage.File("etc/os-release", []byte("NAME=stevedore-e2e\n"), 0o644),
		testimage.Symlink("etc/alias", "os-release"),
	)
	if err != nil {
		t.Fatal(err)
	}
	layers := []*testimage.Layer{files}
	for i, s := range sizes {
		l, err := testimage.RandomLayerWith(s, seed+int64(i), c)
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, l)
	}
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	img := &testimage.Image{Format: testimage.OCI, Layers: layers, Config: ocispec.Image{
		Created: &created, Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
	}}
	if _, err := testimage.Push(context.Background(), reg.Host(), repoTag, img); err != nil {
		t.Fatal(err)
	}
	blobs, err := img.Blobs()
	if err != nil {
		t.Fatal(err)
	}
	return reg.Host() + "/" + repoTag, blobs
}

func images(t *testing.T, c *cluster) []api.Image {
	t.Helper()
	var imgs []api.Image
	out := c.mustCtl("images", "--format", "json")
	if err := json.Unmarshal([]byte(out), &imgs); err != nil {
		t.Fatalf("images --format json: %v\n%s", err, out)
	}
	return imgs
}

// handledBy counts, per fetcher log, the descriptor-resolved events it handled.
func handledBy(t *testing.T, c *cluster) map[string]int {
	t.Helper()
	n := map[string]int{}
	for name, p := range c.procs {
		if !strings.HasPrefix(name, "fetcher") {
			continue
		}
		b, err := os.ReadFile(p.log)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, `"message":"handled"`) && strings.Contains(line, `"type":"descriptor-resolved"`) {
				n[name]++
			}
		}
	}
	return n
}

func TestPullMultiLayerAcrossTwoFetchers(t *testing.T) {
	// Throttled so that downloads overlap and both fetchers take work.
	reg := registry.Start(t, registry.WithThrottle(8<<20))
	ref, blobs := pushImage(t, reg, "e2e/multi:1", 100, testimage.Gzip, 2<<20, 2<<20, 2<<20, 2<<20, 1<<20)
	c := newCluster(t, 2)

	r := c.ctl("pull", ref)
	if r.code != 0 {
		t.Fatalf("pull: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, ref+": resolved") || !strings.Contains(r.stdout, "layer-sha256:") || !strings.Contains(r.stdout, "done") {
		t.Errorf("pull progress lacks resolved/layer/done lines:\n%s", r.stdout)
	}

	// The store holds exactly the image's blobs, each verified.
	want := map[digest.Digest]int64{}
	var total int64
	for _, b := range blobs {
		want[b.Digest] = b.Size
		total += b.Size
	}
	got := c.storeBlobs()
	if len(got) != len(want) {
		t.Errorf("store holds %d blobs, the image has %d", len(got), len(want))
	}
	for d, size := range want {
		if got[d] != size {
			t.Errorf("blob %s: store has %d bytes, want %d", d, got[d], size)
		}
	}
	// Each blob was downloaded once, across both fetchers.
	for _, b := range blobs {
		if n := reg.BytesServed(b.Digest); n != b.Size {
			t.Errorf("registry served %d bytes of %s (size %d)", n, b.Digest, b.Size)
		}
	}
	by := handledBy(t, c)
	if by["fetcher-1"] == 0 || by["fetcher-2"] == 0 {
		t.Errorf("the pull's blobs were not spread across fetchers: %v", by)
	}

	imgs := images(t, c)
	if len(imgs) != 1 || imgs[0].Name != ref || imgs[0].Size != total || imgs[0].Created == nil || !imgs[0].Created.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Fatalf("images = %+v; want %s with size %d", imgs, ref, total)
	}

	// Pulling it again downloads nothing and is quick.
	reg.ResetCounters()
	c.mustCtl("pull", "-q", ref)
	if n := reg.TotalBytesServed(); n > 4096 {
		t.Errorf("second pull of a present image downloaded %d bytes", n)
	}
}

func TestPullFailuresAreClearAndLeaveNothingUnverified(t *testing.T) {
	reg := registry.Start(t)
	ref, blobs := pushImage(t, reg, "e2e/bad:1", 200, testimage.Zstd, 256<<10)
	c := newCluster(t, 1)

	tests := []struct {
		name string
		ref  string
		want string
	}{
		{"malformed reference", "UPPER//case", "invalid"},
		{"missing tag", reg.Host() + "/e2e/bad:nope", "not found"},
		{"unknown host", "registry.invalid/app:1", "registry.invalid"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := c.ctl("pull", "-q", tc.ref)
			if r.code == 0 || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("pull %s: exit %d, stderr %q; want non-zero and %q", tc.ref, r.code, r.stderr, tc.want)
			}
		})
	}

	// A registry that lies about a layer's bytes: the pull fails naming the
	// digest, nothing unverified is committed, and a retry after the fault
	// is gone succeeds.
	layer := blobs[len(blobs)-1]
	reg.CorruptBlob(layer.Digest, true)
	r := c.ctl("pull", "-q", ref)
	if r.code == 0 || !strings.Contains(r.stderr, layer.Digest.Encoded()[:12]) {
		t.Fatalf("pull of a corrupt layer: exit %d, stderr %q; want failure naming %s", r.code, r.stderr, layer.Digest)
	}
	if _, ok := c.storeBlobs()[layer.Digest]; ok {
		t.Fatal("corrupt layer was committed")
	}
	reg.CorruptBlob(layer.Digest, false)
	c.mustCtl("pull", "-q", ref)
	if got := c.storeBlobs(); got[layer.Digest] != layer.Size {
		t.Fatalf("retried pull did not commit the layer: %v", got)
	}
}

func TestFetcherKilledMidDownloadResumes(t *testing.T) {
	const size = 24 << 20
	reg := registry.Start(t, registry.WithThrottle(6<<20))
	ref, blobs := pushImage(t, reg, "e2e/big:1", 300, testimage.Uncompressed, size)
	var big ocispec.Descriptor
	for _, b := range blobs {
		if b.Size > big.Size {
			big = b
		}
	}
	c := newCluster(t, 2)

	pull := c.ctlCmd("pull", "-q", ref)
	var out syncBuffer
	pull.Stdout, pull.Stderr = &out, &out
	if err := pull.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- pull.Wait() }()

	// Wait until the big layer is well under way, then SIGKILL the fetcher
	// holding its ingest.
	eventually(t, 30*time.Second, func() bool { return reg.BytesServed(big.Digest) > 6<<20 }, "big layer download to start")
	var victim string
	eventually(t, 5*time.Second, func() bool { victim = c.procByPid(c.lockHolder()); return victim != "" }, "a fetcher holding the ingest")
	c.kill(victim, syscall.SIGKILL)
	servedBeforeKill := reg.BytesServed(big.Digest)
	t.Logf("killed %s after %d of %d bytes served", victim, servedBeforeKill, big.Size)

	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("pull after killing %s: %v\n%s", victim, err, out.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("pull did not finish after killing %s", victim)
	}

	// It resumed: the registry served the part fetched before the kill once
	// more at most in part, not the whole layer again.
	served := reg.BytesServed(big.Digest)
	t.Logf("registry served %d bytes in all for the %d-byte layer", served, big.Size)
	if served >= big.Size+servedBeforeKill/2 {
		t.Errorf("registry served %d bytes of a %d-byte layer after a kill at %d: the download restarted from zero", served, big.Size, servedBeforeKill)
	}
	ranged := false
	for _, rq := range reg.Requests() {
		if strings.HasSuffix(rq.Path, big.Digest.String()) && strings.HasPrefix(rq.Range, "bytes=") && rq.Status == 206 {
			ranged = true
		}
	}
	if !ranged {
		t.Error("no Range request for the big layer after the kill")
	}
	got := c.storeBlobs() // verifies every committed blob's bytes
	if got[big.Digest] != big.Size {
		t.Errorf("big layer in store: %d bytes, want %d", got[big.Digest], big.Size)
	}
	if ingests, _ := filepath.Glob(filepath.Join(c.root, "content", "ingest", "*", "data")); len(ingests) != 0 {
		t.Errorf("ingests left behind after the pull completed: %v", ingests)
	}
}

func TestViewRebuiltFromLogMatches(t *testing.T) {
	reg := registry.Start(t)
	c := newCluster(t, 1)
	var refs []string
	for i := 0; i < 3; i++ {
		ref, _ := pushImage(t, reg, fmt.Sprintf("e2e/replay%d:1", i), int64(400+i), testimage.Gzip, 64<<10)
		c.mustCtl("pull", "-q", ref)
		refs = append(refs, ref)
	}
	c.mustCtl("images", "rm", refs[1])
	before := c.mustCtl("images", "--format", "json")
	if strings.Contains(before, refs[1]) || !strings.Contains(before, refs[0]) {
		t.Fatalf("images after rm:\n%s", before)
	}

	// Stop the gateway, throw its view away, start it again: the view is
	// rebuilt by replaying the log.
	c.kill("gateway", syscall.SIGTERM)
	if err := os.RemoveAll(filepath.Join(c.root, "view")); err != nil {
		t.Fatal(err)
	}
	c.startGateway()
	var after string
	eventually(t, 10*time.Second, func() bool {
		r := c.ctl("images", "--format", "json")
		after = r.stdout
		return r.code == 0 && after == before
	}, "rebuilt view to list the same images")
}

func TestContentCommands(t *testing.T) {
	reg := registry.Start(t)
	ref, blobs := pushImage(t, reg, "e2e/content:1", 500, testimage.Gzip, 128<<10)
	c := newCluster(t, 1)
	c.mustCtl("pull", "-q", ref)

	ls := c.mustCtl("content", "ls")
	for _, b := range blobs {
		if !strings.Contains(ls, b.Digest.String()) {
			t.Errorf("content ls lacks %s:\n%s", b.Digest, ls)
		}
	}
	layer := blobs[len(blobs)-1]
	raw := c.mustCtl("content", "get", layer.Digest.String())
	if sum := sha256.Sum256([]byte(raw)); digest.NewDigestFromBytes(digest.SHA256, sum[:]) != layer.Digest {
		t.Fatalf("content get returned bytes that do not hash to %s", layer.Digest)
	}
	var info map[string]any
	if err := json.Unmarshal([]byte(c.mustCtl("content", "info", layer.Digest.String())), &info); err != nil || info["digest"] != layer.Digest.String() {
		t.Fatalf("content info: %v %v", info, err)
	}
	if act := c.mustCtl("content", "active"); strings.Contains(act, "sha256:") {
		t.Errorf("active ingests after a finished pull:\n%s", act)
	}
	c.mustCtl("content", "rm", layer.Digest.String())
	if _, ok := c.storeBlobs()[layer.Digest]; ok {
		t.Fatal("content rm left the blob in the store")
	}
	if r := c.ctl("content", "info", layer.Digest.String()); r.code == 0 || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("content info of a removed blob: exit %d %q", r.code, r.stderr)
	}
}

func TestExternalNATS(t *testing.T) {
	srv := natstest.Start(t)
	reg := registry.Start(t)
	ref, _ := pushImage(t, reg, "e2e/ext:1", 600, testimage.Gzip, 64<<10)
	c := &cluster{t: t, root: t.TempDir(), procs: map[string]*proc{}, url: srv.URL()}
	t.Cleanup(c.stopAll)
	t.Cleanup(func() {
		if t.Failed() {
			c.dumpLogs()
		}
	})
	c.start("gateway", filepath.Join(binDir, "gateway"), "--nats", srv.URL(), "--node", "e2e")
	c.startFetcher("fetcher-1")
	c.startUnpacker()
	c.mustCtl("pull", "-q", ref)
	// The log is on the external server.
	last, err := sdjs.LastSeq(context.Background(), srv.JS)
	if err != nil || last < 5 {
		t.Fatalf("external server's log: last seq %d, %v", last, err)
	}
	if _, err := os.Stat(filepath.Join(c.root, "nats")); err == nil {
		t.Error("the gateway started an embedded server despite --nats")
	}
}
