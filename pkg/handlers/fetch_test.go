package handlers_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore/stevedore/internal/testutil/natstest"
	"github.com/stevedore/stevedore/internal/testutil/registry"
	"github.com/stevedore/stevedore/internal/testutil/testimage"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
	"github.com/stevedore/stevedore/pkg/handlers"
)

// checkCausation checks that every event of an operation but the request
// was caused by an earlier event of the same operation, and was recorded by
// the fetchers' node.
func checkCausation(t *testing.T, evs []*events.Envelope) {
	t.Helper()
	seen := map[string]bool{}
	for i, ev := range evs {
		if i > 0 {
			if !seen[ev.Causation] {
				t.Errorf("%s (seq %d) names causation %q, not an earlier event of its operation", ev.Type, ev.Seq, ev.Causation)
			}
			if ev.Node != testNode {
				t.Errorf("%s (seq %d) recorded by node %q, want %q", ev.Type, ev.Seq, ev.Node, testNode)
			}
		}
		seen[ev.ID] = true
	}
}

// checkOnePerBlob checks that evs (descriptor-resolved or blob-committed)
// name every blob of want exactly once, in its role, and nothing else.
func checkOnePerBlob(t *testing.T, typ events.Type, evs []*events.Envelope, want []ocispec.Descriptor, roles map[digest.Digest]string) {
	t.Helper()
	got := map[digest.Digest]int{}
	for _, ev := range ofType(evs, typ) {
		var p struct {
			Role       string             `json:"role"`
			Descriptor ocispec.Descriptor `json:"descriptor"`
		}
		if err := ev.Decode(&p); err != nil {
			t.Fatal(err)
		}
		got[p.Descriptor.Digest]++
		if ev.Aggregate != events.BlobAggregate(p.Descriptor.Digest) {
			t.Errorf("%s of %s has aggregate %+v", typ, p.Descriptor.Digest, ev.Aggregate)
		}
		if r, ok := roles[p.Descriptor.Digest]; ok && r != p.Role {
			t.Errorf("%s of %s has role %q, want %q", typ, p.Descriptor.Digest, p.Role, r)
		}
	}
	for _, d := range want {
		if got[d.Digest] != 1 {
			t.Errorf("%d %s events for %s (%s), want 1", got[d.Digest], typ, d.Digest, d.MediaType)
		}
		delete(got, d.Digest)
	}
	for d, n := range got {
		t.Errorf("%d %s events for %s, which is not a blob of the image", n, typ, d)
	}
}

func rolesOf(b *testimage.Built) map[digest.Digest]string {
	r := map[digest.Digest]string{b.Manifest.Digest: events.RoleManifest, b.Config.Digest: events.RoleConfig}
	for _, l := range b.Layers {
		r[l.Digest] = events.RoleLayer
	}
	return r
}

// checkImageUpdated checks op's image-updated event.
func checkImageUpdated(t *testing.T, evs []*events.Envelope, ref string, target ocispec.Descriptor, size int64, created *time.Time, platform string) {
	t.Helper()
	ius := ofType(evs, events.TypeImageUpdated)
	if len(ius) != 1 {
		t.Fatalf("%d image-updated events, want 1:\n%s", len(ius), describe(evs))
	}
	iu := decode[events.ImageUpdated](t, ius[0])
	if ius[0].Aggregate != events.ImageAggregate(ref) {
		t.Errorf("image-updated aggregate %+v, want %+v", ius[0].Aggregate, events.ImageAggregate(ref))
	}
	if iu.Name != ref {
		t.Errorf("image-updated name %q, want %q", iu.Name, ref)
	}
	if iu.Target.Digest != target.Digest || iu.Target.Size != target.Size || iu.Target.MediaType != target.MediaType {
		t.Errorf("image-updated target %s %s %d, want %s %s %d",
			iu.Target.MediaType, iu.Target.Digest, iu.Target.Size, target.MediaType, target.Digest, target.Size)
	}
	if iu.Size != size {
		t.Errorf("image-updated size %d, want the sum of the blob sizes %d", iu.Size, size)
	}
	if created != nil && (iu.Created == nil || !iu.Created.Equal(*created)) {
		t.Errorf("image-updated created %v, want %v", iu.Created, *created)
	}
	if iu.Platform != platform {
		t.Errorf("image-updated platform %q, want %q", iu.Platform, platform)
	}
}

func TestPullImage(t *testing.T) {
	t.Parallel()
	created := time.Date(2023, 5, 6, 7, 8, 9, 0, time.UTC)
	gz, zst, raw := testimage.Gzip, testimage.Zstd, testimage.Uncompressed
	tests := []struct {
		name    string
		format  testimage.Format
		layers  []testimage.Compression
		regOpts []registry.Option
	}{
		{name: "single layer", format: testimage.OCI, layers: []testimage.Compression{gz}},
		{name: "five layers", format: testimage.OCI, layers: []testimage.Compression{gz, gz, gz, gz, gz}},
		{name: "docker media types", format: testimage.Docker, layers: []testimage.Compression{gz, gz, raw}},
		{name: "zstd layers", format: testimage.OCI, layers: []testimage.Compression{zst, zst}},
		{name: "uncompressed layers", format: testimage.OCI, layers: []testimage.Compression{raw, raw}},
		{name: "blobs redirected to storage", format: testimage.OCI, layers: []testimage.Compression{gz, gz}, regOpts: []registry.Option{registry.WithBlobRedirect()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, tt.regOpts...)
			img := &testimage.Image{Format: tt.format, Config: ocispec.Image{Created: &created}}
			for i, c := range tt.layers {
				img.Layers = append(img.Layers, randomLayer(t, int64(48<<10+i*8<<10), int64(i+1), c))
			}
			built := e.push(t, "app:1", img)
			blobs := built.Blobs()
			e.reg.ResetCounters()
			e.startFetcher(t, "a")
			ref := e.ref(t, "app:1")

			op := newOp()
			ticks := e.progressTicks(t, op)
			res := e.wait(t, op, e.requestPull(t, op, ref, amd64))
			pc := completed(t, res)
			if pc.Ref != ref || pc.Target != built.Manifest.Digest || pc.Size != sizeOf(blobs) || pc.Blobs != len(blobs) {
				t.Errorf("pull-completed %+v, want ref %s, target %s, size %d, %d blobs", pc, ref, built.Manifest.Digest, sizeOf(blobs), len(blobs))
			}
			evs := e.settled(t, res, events.TypeBlobCommitted, len(blobs))
			checkCausation(t, evs)
			checkImageUpdated(t, evs, ref, ocispec.Descriptor{MediaType: built.Manifest.MediaType, Digest: built.Manifest.Digest, Size: built.Manifest.Size},
				sizeOf(blobs), &created, amd64)
			roles := rolesOf(built)
			checkOnePerBlob(t, events.TypeDescriptorResolved, evs, blobs, roles)
			checkOnePerBlob(t, events.TypeBlobCommitted, evs, blobs, roles)
			for _, ev := range ofType(evs, events.TypeBlobCommitted) {
				bc := decode[events.BlobCommitted](t, ev)
				if bc.Existing || bc.Fetched != bc.Descriptor.Size {
					t.Errorf("blob-committed %s: existing %v, fetched %d, want a fresh download of %d bytes", bc.Descriptor.Digest, bc.Existing, bc.Fetched, bc.Descriptor.Size)
				}
			}

			assertStoreHolds(t, e.store, blobs)
			assertNoIngests(t, e.store)
			for _, d := range blobs {
				if got := e.reg.BytesServed(d.Digest); got != d.Size {
					t.Errorf("registry served %d bytes of %s, want %d (each blob downloaded once)", got, d.Digest, d.Size)
				}
			}
			// Every download ends with a progress tick at its total.
			natstest.Eventually(t, 5*time.Second, func() bool {
				got := ticks()
				for _, d := range blobs {
					if p := got[d.Digest]; p.Offset != d.Size || p.Total != d.Size {
						return false
					}
				}
				return true
			}, "no final progress tick for every blob: %v", ticks)
		})
	}
}

func TestPullMultiPlatform(t *testing.T) {
	t.Parallel()
	for _, format := range []testimage.Format{testimage.OCI, testimage.Docker} {
		name := map[testimage.Format]string{testimage.OCI: "oci index", testimage.Docker: "docker manifest list"}[format]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			idx, err := testimage.MultiPlatform(format, testimage.Gzip)
			if err != nil {
				t.Fatal(err)
			}
			bi, err := idx.Build()
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := testimage.PushIndex(ctx, e.reg.Host(), "multi:1", idx); err != nil {
				t.Fatal(err)
			}
			e.reg.ResetCounters()
			e.startFetcher(t, "a")
			ref := e.ref(t, "multi:1")
			index := []ocispec.Descriptor{bi.Index}

			// A platform the index lacks, with nothing in the store: the
			// index is fetched and read, and the pull fails listing what
			// there is.
			checkUnavailable := func(t *testing.T, r pullResult) {
				t.Helper()
				pf := failed(t, r)
				if pf.Code != "not_found" {
					t.Errorf("code %q, want not_found: %s", pf.Code, pf.Message)
				}
				for _, s := range []string{"linux/s390x", "linux/amd64", "linux/arm64", "linux/arm/v7"} {
					if !strings.Contains(pf.Message, s) {
						t.Errorf("message %q does not name %s", pf.Message, s)
					}
				}
				if pf.Ref != ref {
					t.Errorf("pull-failed ref %q, want %q", pf.Ref, ref)
				}
			}
			r := e.pull(t, ref, "linux/s390x")
			checkUnavailable(t, r)
			if pf := failed(t, r); pf.Digest != bi.Index.Digest {
				t.Errorf("pull-failed digest %s, want the index %s", pf.Digest, bi.Index.Digest)
			}
			assertStoreHolds(t, e.store, index)

			arm := bi.Images[1]
			if p := arm.Manifest.Platform; p.Architecture != "arm64" {
				t.Fatalf("image 1 is %+v, want arm64", p)
			}
			want := append(index, arm.Blobs()...)
			r = e.pull(t, ref, "linux/arm64")
			pc := completed(t, r)
			if pc.Target != bi.Index.Digest || pc.Size != sizeOf(want) || pc.Blobs != len(want) {
				t.Errorf("pull-completed %+v, want target %s, size %d, %d blobs", pc, bi.Index.Digest, sizeOf(want), len(want))
			}
			evs := e.settled(t, r, events.TypeBlobCommitted, len(want))
			checkCausation(t, evs)
			checkImageUpdated(t, evs, ref, bi.Index, sizeOf(want), &testimage.Epoch, "linux/arm64")
			roles := rolesOf(arm)
			roles[bi.Index.Digest] = events.RoleIndex
			checkOnePerBlob(t, events.TypeDescriptorResolved, evs, want, roles)
			checkOnePerBlob(t, events.TypeBlobCommitted, evs, want, roles)
			assertStoreHolds(t, e.store, want)
			for _, other := range []*testimage.Built{bi.Images[0], bi.Images[2]} {
				for _, d := range []ocispec.Descriptor{other.Manifest, other.Config, other.Layers[1]} {
					if n := e.reg.BytesServed(d.Digest); n != 0 {
						t.Errorf("registry served %d bytes of %s of platform %v, which was not asked for", n, d.Digest, other.Manifest.Platform)
					}
				}
			}

			// Again, now with the index in the store: the resolve step finds
			// the platform missing.
			checkUnavailable(t, e.pull(t, ref, "linux/s390x"))
			assertStoreHolds(t, e.store, want)
			assertNoIngests(t, e.store)
		})
	}
}

// A single-platform image is checked against the requested platform: its
// config says what it is built for. A mismatch fails the pull, naming both;
// a match records the image under the config's platform.
func TestPullSingleManifestChecksPlatform(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := &testimage.Image{Format: testimage.OCI, Config: ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "arm64"}}}
	img.Layers = append(img.Layers, randomLayer(t, 32<<10, 1, testimage.Gzip))
	built := e.push(t, "arm:1", img)
	e.startFetcher(t, "a")
	ref := e.ref(t, "arm:1")

	pf := failed(t, e.pull(t, ref, amd64))
	if pf.Code != "not_found" || !strings.Contains(pf.Message, "built for linux/arm64, not for linux/amd64") {
		t.Errorf("pull for amd64 failed with %s %q, want not_found naming both platforms", pf.Code, pf.Message)
	}

	// The failed pull's verified blobs stay; this one finds them all and
	// completes at once, checking the platform again on the way.
	r := e.pull(t, ref, "linux/arm64")
	completed(t, r)
	checkImageUpdated(t, r.events, ref, ocispec.Descriptor{MediaType: built.Manifest.MediaType, Digest: built.Manifest.Digest, Size: built.Manifest.Size},
		sizeOf(built.Blobs()), &testimage.Epoch, "linux/arm64")
	if pf := failed(t, e.pull(t, ref, "linux/s390x")); !strings.Contains(pf.Message, "built for linux/arm64, not for linux/s390x") {
		t.Errorf("pull of a present image for s390x failed with %q, want the platform named", pf.Message)
	}
}

func TestPullSpreadsAcrossFetchers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := &testimage.Image{}
	for i := range 6 {
		img.Layers = append(img.Layers, randomLayer(t, 192<<10, int64(10+i), testimage.Uncompressed))
	}
	built := e.push(t, "wide:1", img)
	blobs := built.Blobs()
	e.reg.ResetCounters()
	// Slow enough that a fetcher busy with one layer leaves the next to the other.
	e.reg.SetThrottle(2 << 20)
	a := e.startFetcher(t, "a", withConcurrency(2))
	b := e.startFetcher(t, "b", withConcurrency(2))

	r := e.pull(t, e.ref(t, "wide:1"), amd64)
	completed(t, r)
	evs := e.settled(t, r, events.TypeBlobCommitted, len(blobs))
	checkOnePerBlob(t, events.TypeBlobCommitted, evs, blobs, rolesOf(built))

	// A handler records its blob before it returns; wait for them all.
	natstest.Eventually(t, 5*time.Second, func() bool {
		return len(a.handledBlobs())+len(b.handledBlobs()) >= len(blobs)
	}, "fetchers did not finish handling the blobs")
	for _, x := range []*fetcher{a, b} {
		if n := x.handledRole(events.RoleLayer); n == 0 {
			t.Errorf("fetcher %s handled no layer: the work did not spread (a: %v, b: %v)", x.name, a.handledBlobs(), b.handledBlobs())
		}
	}
	ha, hb := a.handledBlobs(), b.handledBlobs()
	for _, d := range blobs {
		if n := ha[d.Digest] + hb[d.Digest]; n != 1 {
			t.Errorf("%s handled %d times (a %d, b %d), want once", d.Digest, n, ha[d.Digest], hb[d.Digest])
		}
		if got := e.reg.BytesServed(d.Digest); got != d.Size {
			t.Errorf("registry served %d bytes of %s, want %d: downloaded more than once", got, d.Digest, d.Size)
		}
	}
	assertStoreHolds(t, a.store, blobs)
	assertStoreHolds(t, b.store, blobs)
	assertNoIngests(t, e.store)
}

func TestConcurrentPullsShareBlob(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	shared := randomLayer(t, 1<<20, 100, testimage.Uncompressed)
	imgA := &testimage.Image{Layers: []*testimage.Layer{shared, randomLayer(t, 8<<10, 101, testimage.Gzip)}}
	imgB := &testimage.Image{Layers: []*testimage.Layer{shared, randomLayer(t, 8<<10, 102, testimage.Gzip)}}
	builtA := e.push(t, "a:1", imgA)
	builtB := e.push(t, "b:1", imgB)
	e.reg.ResetCounters()
	e.reg.SetThrottle(2 << 20) // the shared layer takes about half a second
	e.startFetcher(t, "x")
	e.startFetcher(t, "y")

	opA, opB := newOp(), newOp()
	seqA := e.requestPull(t, opA, e.ref(t, "a:1"), amd64)
	seqB := e.requestPull(t, opB, e.ref(t, "b:1"), amd64)
	rA, rB := e.wait(t, opA, seqA), e.wait(t, opB, seqB)
	completed(t, rA)
	completed(t, rB)

	if got := e.reg.BytesServed(shared.Digest); got != int64(len(shared.Blob)) {
		t.Errorf("registry served %d bytes of the shared layer, want %d (once)", got, len(shared.Blob))
	}
	gets := e.reg.RequestCount(http.MethodGet, registry.BlobPath("a", shared.Digest)) + e.reg.RequestCount(http.MethodGet, registry.BlobPath("b", shared.Digest))
	if gets != 1 {
		t.Errorf("%d GETs of the shared layer, want 1", gets)
	}
	var fetched, existing int
	for _, r := range []pullResult{rA, rB} {
		evs := e.settled(t, r, events.TypeBlobCommitted, 4)
		for _, ev := range ofType(evs, events.TypeBlobCommitted) {
			bc := decode[events.BlobCommitted](t, ev)
			if bc.Descriptor.Digest != shared.Digest {
				continue
			}
			switch {
			case !bc.Existing && bc.Fetched == int64(len(shared.Blob)):
				fetched++
			case bc.Existing && bc.Fetched == 0:
				existing++
			default:
				t.Errorf("blob-committed of the shared layer: existing %v, fetched %d", bc.Existing, bc.Fetched)
			}
		}
	}
	if fetched != 1 || existing != 1 {
		t.Errorf("shared layer: %d pulls downloaded it and %d found it, want 1 and 1", fetched, existing)
	}
	want := append(builtA.Blobs(), builtB.Blobs()...)
	var dedup []ocispec.Descriptor
	seen := map[digest.Digest]bool{}
	for _, d := range want {
		if !seen[d.Digest] {
			seen[d.Digest] = true
			dedup = append(dedup, d)
		}
	}
	assertStoreHolds(t, e.store, dedup)
	assertNoIngests(t, e.store)
}

func TestPullFailures(t *testing.T) {
	t.Parallel()
	img := func(t *testing.T) *testimage.Image {
		return &testimage.Image{Layers: []*testimage.Layer{
			randomLayer(t, 16<<10, 1, testimage.Gzip), randomLayer(t, 16<<10, 2, testimage.Gzip),
		}}
	}
	tests := []struct {
		name   string
		limits handlers.Limits
		// setup pushes what it needs and returns the reference to pull and
		// the digest the failure should name ("" for none).
		setup    func(t *testing.T, e *env, b *testimage.Built) (ref string, dgst digest.Digest)
		platform string
		code     string
		message  []string // substrings; "$digest" stands for the digest setup returned
		// ingestsOK allows an empty ingest to stay (retries ran out; it may be
		// resumed by a later pull).
		ingestsOK bool
	}{
		{
			name: "tag not found",
			setup: func(t *testing.T, e *env, _ *testimage.Built) (string, digest.Digest) {
				return e.ref(t, "app:nope"), ""
			},
			code: "not_found", message: []string{"app:nope", "not found", "404"},
		},
		{
			name: "unknown registry host",
			setup: func(t *testing.T, _ *env, _ *testimage.Built) (string, digest.Digest) {
				return normalize(t, "registry.invalid/app:1"), ""
			},
			code: "not_found", message: []string{"registry.invalid", "not found"},
		},
		{
			name: "manifest over the size limit", limits: handlers.Limits{MaxManifestSize: 64},
			setup: func(t *testing.T, e *env, b *testimage.Built) (string, digest.Digest) {
				return e.ref(t, "app:1"), b.Manifest.Digest
			},
			code: "resource_exhausted", message: []string{"$digest", "64 byte limit"},
		},
		{
			name: "config over the size limit", limits: handlers.Limits{MaxConfigSize: 16},
			setup: func(t *testing.T, e *env, b *testimage.Built) (string, digest.Digest) {
				return e.ref(t, "app:1"), b.Config.Digest
			},
			code: "resource_exhausted", message: []string{"$digest", "16 byte limit"},
		},
		{
			name: "layer missing from the registry",
			setup: func(t *testing.T, e *env, b *testimage.Built) (string, digest.Digest) {
				e.reg.FailNext(registry.BlobPath("app", b.Layers[1].Digest), http.StatusNotFound, 100)
				return e.ref(t, "app:1"), b.Layers[1].Digest
			},
			code: "not_found", message: []string{"$digest", "not found", "404"},
		},
		{
			name: "access denied",
			setup: func(t *testing.T, e *env, _ *testimage.Built) (string, digest.Digest) {
				e.reg.FailNext(registry.ManifestPath("app", "1"), http.StatusForbidden, 100)
				return e.ref(t, "app:1"), ""
			},
			code: "permission_denied", message: []string{"app:1", "denied", "403"},
		},
		{
			name: "registry unavailable until the retries run out",
			setup: func(t *testing.T, e *env, b *testimage.Built) (string, digest.Digest) {
				e.reg.FailNext(registry.BlobPath("app", b.Layers[0].Digest), http.StatusServiceUnavailable, 1000)
				return e.ref(t, "app:1"), b.Layers[0].Digest
			},
			code: "unavailable", message: []string{"$digest", "503"}, ingestsOK: true,
		},
		{
			name: "invalid platform", platform: "linux//amd64",
			setup: func(t *testing.T, e *env, _ *testimage.Built) (string, digest.Digest) {
				return e.ref(t, "app:1"), ""
			},
			code: "invalid_argument", message: []string{"invalid platform", "linux//amd64"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			b := e.push(t, "app:1", img(t))
			e.reg.ResetCounters()
			ref, dgst := tt.setup(t, e, b)
			x := e.startFetcher(t, "a", withLimits(tt.limits))
			platform := tt.platform
			if platform == "" {
				platform = amd64
			}
			r := e.pull(t, ref, platform)
			pf := failed(t, r)
			if pf.Code != tt.code {
				t.Errorf("code %q, want %q: %s", pf.Code, tt.code, pf.Message)
			}
			for _, s := range tt.message {
				s = strings.ReplaceAll(s, "$digest", dgst.String())
				if !strings.Contains(pf.Message, s) {
					t.Errorf("message %q does not contain %q", pf.Message, s)
				}
			}
			if pf.Ref != ref {
				t.Errorf("pull-failed ref %q, want %q", pf.Ref, ref)
			}
			if dgst != "" && pf.Digest != dgst {
				t.Errorf("pull-failed digest %s, want %s", pf.Digest, dgst)
			}
			if n := len(ofType(r.events, events.TypePullCompleted)); n != 0 {
				t.Errorf("a failed pull also recorded %d pull-completed", n)
			}
			verifyStore(t, e.store)
			if _, err := e.store.Info(context.Background(), dgst); dgst != "" && !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("the blob that failed is in the store (Info err %v)", err)
			}
			if tt.code == "unavailable" {
				// Every delivery was tried before giving up.
				errs := 0
				for _, err := range x.resultsOf(events.TypeDescriptorResolved) {
					if err != nil {
						errs++
					}
				}
				if errs != 5 {
					t.Errorf("%d failed deliveries before giving up, want MaxAttempts (5)", errs)
				}
			}
			if !tt.ingestsOK {
				assertNoIngests(t, e.store)
			}
		})
	}
}

func TestPullCorruptBlob(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	built := e.push(t, "app:1", &testimage.Image{Layers: []*testimage.Layer{
		randomLayer(t, 64<<10, 1, testimage.Gzip), randomLayer(t, 64<<10, 2, testimage.Gzip),
	}})
	bad := built.Layers[1].Digest
	e.reg.CorruptBlob(bad, true)
	e.startFetcher(t, "a")
	ref := e.ref(t, "app:1")

	pf := failed(t, e.pull(t, ref, amd64))
	if pf.Code != "data_loss" || pf.Digest != bad || !strings.Contains(pf.Message, bad.String()) {
		t.Errorf("pull-failed %+v, want data_loss naming %s", pf, bad)
	}
	got := verifyStore(t, e.store)
	if _, ok := got[bad]; ok {
		t.Errorf("the corrupt blob %s was committed", bad)
	}
	assertNoIngests(t, e.store)

	e.reg.CorruptBlob(bad, false)
	completed(t, e.pull(t, ref, amd64))
	assertStoreHolds(t, e.store, built.Blobs())
}

func TestPullRetriesTransientFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		path   func(b *testimage.Built) string
		status int
		n      int
	}{
		{"blob 503 twice", func(b *testimage.Built) string { return registry.BlobPath("app", b.Layers[0].Digest) }, http.StatusServiceUnavailable, 2},
		{"manifest tag 503 twice", func(*testimage.Built) string { return registry.ManifestPath("app", "1") }, http.StatusServiceUnavailable, 2},
		{"config 429 once", func(b *testimage.Built) string { return registry.BlobPath("app", b.Config.Digest) }, http.StatusTooManyRequests, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			built := e.push(t, "app:1", &testimage.Image{Layers: []*testimage.Layer{randomLayer(t, 32<<10, 1, testimage.Gzip)}})
			e.reg.ResetCounters()
			path := tt.path(built)
			e.reg.FailNext(path, tt.status, tt.n)
			e.startFetcher(t, "a")
			completed(t, e.pull(t, e.ref(t, "app:1"), amd64))
			failures := 0
			for _, q := range e.reg.Requests() {
				if q.Path == path && q.Status == tt.status {
					failures++
				}
			}
			if failures != tt.n {
				t.Errorf("registry answered %d %d times for %s, want %d", tt.status, failures, path, tt.n)
			}
			assertStoreHolds(t, e.store, built.Blobs())
			assertNoIngests(t, e.store)
		})
	}
}

// TestPullWithDockerConfigCredentials sets DOCKER_CONFIG, so it cannot run
// in parallel.
func TestPullWithDockerConfigCredentials(t *testing.T) {
	const user, pass = "puller", "s3cret-pass-7Qx"
	home := t.TempDir()
	cfgDir := filepath.Join(home, "docker")
	if err := os.MkdirAll(cfgDir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOME", home)
	t.Setenv("DOCKER_CONFIG", cfgDir)
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("REGISTRY_AUTH_FILE", "")

	e := newEnv(t, registry.WithBasicAuth(user, pass))
	built := e.push(t, "private:1", &testimage.Image{Layers: []*testimage.Layer{randomLayer(t, 32<<10, 1, testimage.Gzip)}},
		testimage.WithAuth(user, pass))
	e.reg.ResetCounters()
	e.startFetcher(t, "a")
	ref := e.ref(t, "private:1")

	pf := failed(t, e.pull(t, ref, amd64))
	if pf.Code != "unauthenticated" || !strings.Contains(pf.Message, "401") || !strings.Contains(pf.Message, "no credentials") {
		t.Errorf("pull-failed %+v, want unauthenticated saying no credentials are configured", pf)
	}
	assertStoreHolds(t, e.store, nil)
	assertNoIngests(t, e.store)

	// docker login, then pull again with the same running fetcher.
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	cfg, err := json.Marshal(map[string]any{"auths": map[string]any{e.reg.Host(): map[string]string{"auth": auth}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfgDir, "config.json"), cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	completed(t, e.pull(t, ref, amd64))
	assertStoreHolds(t, e.store, built.Blobs())
	for _, q := range e.reg.Requests() {
		if q.Method == http.MethodGet && strings.Contains(q.Path, "/blobs/") && (!q.Authorization || q.Status != http.StatusOK) {
			t.Errorf("blob request %+v: want it authorized and answered 200", q)
		}
	}

	// Nothing secret reaches the log.
	for _, ev := range e.logSince(t, 1) {
		b, _ := json.Marshal(ev)
		if strings.Contains(string(b), pass) || strings.Contains(string(b), auth) {
			t.Errorf("event %s (seq %d) holds the registry password: %s", ev.Type, ev.Seq, b)
		}
	}
}

func TestResumeInterruptedDownload(t *testing.T) {
	t.Parallel()
	for _, ignoreRange := range []bool{false, true} {
		name := "registry honours range"
		if ignoreRange {
			name = "registry ignores range"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			e := newEnv(t)
			big := randomLayer(t, 8<<20, 7, testimage.Uncompressed)
			built := e.push(t, "big:1", &testimage.Image{Layers: []*testimage.Layer{big}})
			size := int64(len(big.Blob))
			e.reg.ResetCounters()
			e.reg.SetThrottle(4 << 20)
			first := e.startFetcher(t, "first")
			ref := e.ref(t, "big:1")
			op := newOp()
			seq := e.requestPull(t, op, ref, amd64)

			// Crash the fetcher once more than 2 MiB are in the ingest (the
			// registry counts bytes as it sends them, so watch the store).
			ingest := big.Digest.String()
			natstest.Eventually(t, 20*time.Second, func() bool {
				st, err := e.store.Status(ctx, ingest)
				return err == nil && st.Offset > 2<<20
			}, "the layer's ingest never passed 2 MiB")
			first.stop()

			st, err := e.store.Status(ctx, ingest)
			if err != nil {
				t.Fatalf("the interrupted ingest is gone: %v", err)
			}
			if st.Offset <= 2<<20 || st.Offset >= size || st.Expected != big.Digest || st.Total != size {
				t.Fatalf("interrupted ingest %+v: want 2 MiB < offset < %d, expecting %s", st, size, big.Digest)
			}
			if _, err := e.store.Info(ctx, big.Digest); !errors.Is(err, errdefs.ErrNotFound) {
				t.Fatalf("the half-downloaded layer is committed (Info err %v)", err)
			}
			// The registry takes back what it could not send once it sees
			// the connection gone.
			natstest.Eventually(t, 10*time.Second, func() bool { return e.reg.BytesServed(big.Digest) < size },
				"the registry still counts the whole layer as served")
			before := e.reg.BytesServed(big.Digest)
			if before < st.Offset {
				t.Fatalf("registry served %d bytes, less than the %d in the ingest", before, st.Offset)
			}

			e.reg.SetThrottle(0)
			e.reg.SetIgnoreRange(ignoreRange)
			e.startFetcher(t, "second")
			r := e.wait(t, op, seq)
			completed(t, r)
			assertStoreHolds(t, e.store, built.Blobs())
			assertNoIngests(t, e.store)

			served := e.reg.BytesServed(big.Digest)
			rangeAsked := false
			for _, q := range e.reg.Requests() {
				if q.Path == registry.BlobPath("big", big.Digest) && q.Range == fmt.Sprintf("bytes=%d-", st.Offset) {
					rangeAsked = true
				}
			}
			if !rangeAsked {
				t.Errorf("no request for the layer asked for Range bytes=%d-: %+v", st.Offset, e.reg.Requests())
			}
			var fetched int64 = -1
			evs := e.settled(t, r, events.TypeBlobCommitted, len(built.Blobs()))
			for _, ev := range ofType(evs, events.TypeBlobCommitted) {
				if bc := decode[events.BlobCommitted](t, ev); bc.Descriptor.Digest == big.Digest {
					fetched = bc.Fetched
				}
			}
			if ignoreRange {
				// Truncated and started over.
				if served < before+size {
					t.Errorf("registry served %d bytes of the layer in all, want at least %d + %d (a full restart)", served, before, size)
				}
				if fetched != size {
					t.Errorf("blob-committed fetched %d, want the whole %d after the restart", fetched, size)
				}
				return
			}
			if served >= size+before/2 {
				t.Errorf("registry served %d bytes of the %d-byte layer in all (%d before the crash): the download did not resume", served, size, before)
			}
			if fetched != size-st.Offset {
				t.Errorf("blob-committed fetched %d, want %d (the rest after offset %d)", fetched, size-st.Offset, st.Offset)
			}
		})
	}
}

func TestPullAlreadyPresent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	built := e.push(t, "app:1", &testimage.Image{Layers: []*testimage.Layer{
		randomLayer(t, 32<<10, 1, testimage.Gzip), randomLayer(t, 32<<10, 2, testimage.Zstd),
	}})
	blobs := built.Blobs()
	e.startFetcher(t, "a")
	ref := e.ref(t, "app:1")
	completed(t, e.pull(t, ref, amd64))
	served := map[digest.Digest]int64{}
	for _, d := range blobs {
		served[d.Digest] = e.reg.BytesServed(d.Digest)
	}

	r := e.pull(t, ref, amd64)
	pc := completed(t, r)
	if pc.Target != built.Manifest.Digest || pc.Size != sizeOf(blobs) || pc.Blobs != len(blobs) {
		t.Errorf("pull-completed %+v, want target %s, size %d, %d blobs", pc, built.Manifest.Digest, sizeOf(blobs), len(blobs))
	}
	checkImageUpdated(t, r.events, ref, ocispec.Descriptor{MediaType: built.Manifest.MediaType, Digest: built.Manifest.Digest, Size: built.Manifest.Size},
		sizeOf(blobs), &testimage.Epoch, amd64)
	for _, typ := range []events.Type{events.TypeDescriptorResolved, events.TypeBlobCommitted} {
		if n := len(ofType(r.events, typ)); n != 0 {
			t.Errorf("the second pull recorded %d %s events, want none", n, typ)
		}
	}
	for _, d := range blobs {
		if got := e.reg.BytesServed(d.Digest); got != served[d.Digest] {
			t.Errorf("the second pull downloaded %d bytes of %s", got-served[d.Digest], d.Digest)
		}
	}
	assertStoreHolds(t, e.store, blobs)
}

func TestContentDelete(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	built := e.push(t, "app:1", &testimage.Image{Layers: []*testimage.Layer{randomLayer(t, 16<<10, 1, testimage.Gzip)}})
	x := e.startFetcher(t, "a")
	completed(t, e.pull(t, e.ref(t, "app:1"), amd64))
	victim := built.Layers[0].Digest

	request := func(op string) *events.Envelope {
		ev, err := events.New(events.Meta{Namespace: events.DefaultNamespace, Operation: op, Actor: "test", Node: testNode},
			events.TypeContentDeleteRequested, events.BlobAggregate(victim), events.ContentDeleteRequested{Digest: victim})
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	deleted := func(evs []*events.Envelope) bool {
		return count(evs, events.TypeBlobDeleted) > 0 || count(evs, events.TypeContentDeleteFailed) > 0
	}
	check := func(evs []*events.Envelope, req *events.Envelope) {
		t.Helper()
		if n := count(evs, events.TypeContentDeleteFailed); n != 0 {
			t.Fatalf("content-delete-failed recorded:\n%s", describe(evs))
		}
		bds := ofType(evs, events.TypeBlobDeleted)
		if len(bds) != 1 {
			t.Fatalf("%d blob-deleted events, want 1:\n%s", len(bds), describe(evs))
		}
		bd := decode[events.BlobDeleted](t, bds[0])
		if bd.Digest != victim || bds[0].Aggregate != events.BlobAggregate(victim) || bds[0].Causation != req.ID {
			t.Errorf("blob-deleted %+v (aggregate %+v, causation %s), want %s caused by %s", bd, bds[0].Aggregate, bds[0].Causation, victim, req.ID)
		}
	}

	op := newOp()
	req := request(op)
	seq := e.publish(t, req, "")
	check(e.follow(t, op, seq, pullTimeout, deleted), req)
	if _, err := e.store.Info(ctx, victim); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("deleted blob still in the store (Info err %v)", err)
	}
	var rest []ocispec.Descriptor
	for _, d := range built.Blobs() {
		if d.Digest != victim {
			rest = append(rest, d)
		}
	}
	assertStoreHolds(t, e.store, rest)

	// The same request delivered again (a redelivery after a crash between
	// the delete and its record): handled without error, still one fact.
	e.publish(t, req, "")
	natstest.Eventually(t, 10*time.Second, func() bool { return len(x.resultsOf(events.TypeContentDeleteRequested)) == 2 },
		"the repeated request was not handled")
	for i, err := range x.resultsOf(events.TypeContentDeleteRequested) {
		if err != nil {
			t.Errorf("delivery %d of the delete request: %v", i+1, err)
		}
	}
	check(ofOp(e.logSince(t, seq), op), req)

	// A new request for a blob that is already gone is recorded as deleted.
	op2 := newOp()
	req2 := request(op2)
	seq2 := e.publish(t, req2, "")
	check(e.follow(t, op2, seq2, pullTimeout, deleted), req2)
	assertStoreHolds(t, e.store, rest)
}

// count counts the events of type typ.
func count(evs []*events.Envelope, typ events.Type) int { return len(ofType(evs, typ)) }

func ofOp(evs []*events.Envelope, op string) []*events.Envelope {
	var out []*events.Envelope
	for _, ev := range evs {
		if ev.Operation == op {
			out = append(out, ev)
		}
	}
	return out
}
