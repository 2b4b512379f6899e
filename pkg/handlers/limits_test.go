package handlers_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore/stevedore/internal/testutil/natstest"
	"github.com/stevedore/stevedore/internal/testutil/registry"
	"github.com/stevedore/stevedore/internal/testutil/testimage"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
	"github.com/stevedore/stevedore/pkg/handlers"
	"github.com/stevedore/stevedore/pkg/images"
)

func withAckWait(d time.Duration) fetcherOption {
	return func(_ *handlers.Fetcher, c *sdjs.ConsumerConfig) { c.AckWait = d }
}

func withMaxAttempts(n int) fetcherOption {
	return func(_ *handlers.Fetcher, c *sdjs.ConsumerConfig) { c.MaxAttempts = n }
}

// A download that takes several times the consumer's AckWait is kept by
// in-progress acks: it is neither redelivered to another fetcher nor
// downloaded twice.
func TestSlowDownloadIsNotRedelivered(t *testing.T) {
	t.Parallel()
	const (
		ackWait = time.Second
		rate    = 128 << 10 // bytes per second
	)
	e := newEnv(t)
	layer := randomLayer(t, 448<<10, 3, testimage.Uncompressed) // 3.5 s at rate
	built := e.push(t, "slow:1", &testimage.Image{Layers: []*testimage.Layer{layer}})
	size := int64(len(layer.Blob))
	e.reg.ResetCounters()
	e.reg.SetThrottle(rate)
	a := e.startFetcher(t, "a", withAckWait(ackWait))
	b := e.startFetcher(t, "b", withAckWait(ackWait))

	r := e.pull(t, e.ref(t, "slow:1"), amd64)
	completed(t, r)
	evs := e.settled(t, r, events.TypeBlobCommitted, len(built.Blobs()))
	var took time.Duration
	for _, ev := range ofType(evs, events.TypeBlobCommitted) {
		if bc := decode[events.BlobCommitted](t, ev); bc.Descriptor.Digest == layer.Digest {
			took = bc.Duration
			if bc.Fetched != size || bc.Existing {
				t.Errorf("blob-committed of the layer: fetched %d, existing %v; want the whole %d downloaded", bc.Fetched, bc.Existing, size)
			}
		}
	}
	if took < 2*ackWait {
		t.Fatalf("the layer's download took %v, not over 2×AckWait (%v): the test proves nothing; slow the registry down", took, ackWait)
	}
	// A redelivery made during the download would be handled by now: it
	// waits for the first download's ingest and then returns at once.
	time.Sleep(ackWait)

	handled := a.handledBlobs()[layer.Digest] + b.handledBlobs()[layer.Digest]
	if handled != 1 {
		t.Errorf("the layer's descriptor-resolved was handled %d times in a %v download (AckWait %v), want once: it was redelivered", handled, took, ackWait)
	}
	path := registry.BlobPath("slow", layer.Digest)
	if n := e.reg.RequestCount(http.MethodGet, path); n != 1 {
		t.Errorf("registry answered %d GETs of the layer, want 1", n)
	}
	if served := e.reg.BytesServed(layer.Digest); served != size {
		t.Errorf("registry served %d bytes of the %d-byte layer", served, size)
	}
	for _, x := range []*fetcher{a, b} {
		for _, err := range x.resultsOf(events.TypeDescriptorResolved) {
			if err != nil {
				t.Errorf("fetcher %s: a delivery failed: %v", x.name, err)
			}
		}
	}
	assertStoreHolds(t, e.store, built.Blobs())
	assertNoIngests(t, e.store)
}

// pushNestedIndexes pushes img under repo wrapped in n indexes (n >= 1):
// the innermost lists img's manifest with its platform, each outer one lists
// the index inside it without a platform. The outermost is tagged
// "repo:nested<n>". It returns the reference to pull and every blob of the
// image, outermost index first.
func pushNestedIndexes(t *testing.T, e *env, repo string, img *testimage.Image, n int) (string, []ocispec.Descriptor) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tag := func(i int) string { return fmt.Sprintf("%s:nested%d", repo, i) }
	idx := &testimage.Index{Format: testimage.OCI, Images: []*testimage.Image{img}}
	bi, err := idx.Build()
	if err != nil {
		t.Fatal(err)
	}
	inner, err := testimage.PushIndex(ctx, e.reg.Host(), tag(1), idx)
	if err != nil {
		t.Fatalf("push %s: %v", tag(1), err)
	}
	blobs := bi.Blobs()
	for i := 2; i <= n; i++ {
		data, err := json.Marshal(ocispec.Index{
			Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: images.MediaTypeOCIIndex,
			Manifests: []ocispec.Descriptor{inner},
		})
		if err != nil {
			t.Fatal(err)
		}
		if inner, err = testimage.PushManifest(ctx, e.reg.Host(), tag(i), images.MediaTypeOCIIndex, data); err != nil {
			t.Fatalf("push %s: %v", tag(i), err)
		}
		blobs = append([]ocispec.Descriptor{inner}, blobs...)
	}
	return e.ref(t, tag(n)), blobs
}

// Depth counts levels below the root: n nested indexes put the manifest at
// depth n and its config and layers at n+1, and every blob must lie within
// the fetcher's MaxDepth.
func TestPullIndexDepthLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		maxDepth int // 0: the default, 4
		ok, deep int // nested indexes that are within the limit and one too many
	}{
		{"default limit", 0, 3, 4},
		{"limit 2", 2, 1, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			img := &testimage.Image{Layers: []*testimage.Layer{randomLayer(t, 8<<10, 1, testimage.Gzip)}}
			okRef, okBlobs := pushNestedIndexes(t, e, "within", img, tt.ok)
			deepRef, deepBlobs := pushNestedIndexes(t, e, "deep", img, tt.deep)
			x := e.startFetcher(t, "a", withLimits(handlers.Limits{MaxDepth: tt.maxDepth}))
			limit := tt.maxDepth
			if limit == 0 {
				limit = 4
			}

			pf := failed(t, e.pull(t, deepRef, amd64))
			if pf.Code != "resource_exhausted" {
				t.Errorf("code %q, want resource_exhausted: %s", pf.Code, pf.Message)
			}
			if want := fmt.Sprintf("index nesting deeper than %d", limit); !strings.Contains(pf.Message, want) {
				t.Errorf("message %q does not say %q", pf.Message, want)
			}
			// The failure names a blob of the image: the config or layer past
			// the limit, or the manifest whose handler found its children
			// too deep while checking whether the image is complete.
			deepSet := map[string]bool{}
			for _, d := range deepBlobs {
				deepSet[d.Digest.String()] = true
			}
			if !deepSet[pf.Digest.String()] {
				t.Errorf("pull-failed names %q, not a blob of the image", pf.Digest)
			}
			// Nothing past the limit was downloaded: the manifest's children
			// (its config and layer), one level below the deepest allowed.
			// Wait for their handlers, which may finish after the failure.
			past := deepBlobs[len(deepBlobs)-2:]
			natstest.Eventually(t, 10*time.Second, func() bool {
				h := x.handledBlobs()
				return h[past[0].Digest] > 0 && h[past[1].Digest] > 0
			}, "the config and layer past the limit were never handled")
			for _, d := range past {
				if _, err := e.store.Info(context.Background(), d.Digest); !errors.Is(err, errdefs.ErrNotFound) {
					t.Errorf("%s %s at depth %d, past the limit, is in the store (Info err %v)", d.MediaType, d.Digest, tt.deep+1, err)
				}
			}
			// Permanent: given up on the first delivery, not retried.
			if n := x.handledBlobs()[pf.Digest]; n != 1 {
				t.Errorf("%s was handled %d times, want once (a permanent failure is not retried)", pf.Digest, n)
			}
			assertNoIngests(t, e.store)

			completed(t, e.pull(t, okRef, amd64))
			got := verifyStore(t, e.store)
			for _, d := range okBlobs {
				if _, ok := got[d.Digest]; !ok {
					t.Errorf("the pull within the limit did not store %s (%s)", d.Digest, d.MediaType)
				}
			}
		})
	}
}

// A registry that keeps dropping the connection partway through a blob's
// body: the pull fails after MaxAttempts saying the connection was lost,
// commits nothing, keeps the partial ingest, and a later pull resumes it
// with a Range request once the registry behaves.
func TestPullBlobCutShort(t *testing.T) {
	t.Parallel()
	const (
		attempts = 3
		cut      = 32 << 10
	)
	ctx := context.Background()
	e := newEnv(t)
	layer := randomLayer(t, 256<<10, 5, testimage.Uncompressed)
	built := e.push(t, "cut:1", &testimage.Image{Layers: []*testimage.Layer{layer}})
	size := int64(len(layer.Blob))
	path := registry.BlobPath("cut", layer.Digest)
	e.reg.ResetCounters()
	e.reg.CutBlob(layer.Digest, cut)
	e.startFetcher(t, "a", withMaxAttempts(attempts))
	ref := e.ref(t, "cut:1")

	pf := failed(t, e.pull(t, ref, amd64))
	if pf.Code != "unavailable" || pf.Digest != layer.Digest {
		t.Errorf("pull-failed code %q digest %s, want unavailable naming %s: %s", pf.Code, pf.Digest, layer.Digest, pf.Message)
	}
	for _, s := range []string{layer.Digest.String(), "download interrupted at byte", "connection lost"} {
		if !strings.Contains(pf.Message, s) {
			t.Errorf("message %q does not contain %q", pf.Message, s)
		}
	}
	// Each attempt resumed where the previous one was cut.
	var gets []registry.Request
	for _, q := range e.reg.Requests() {
		if q.Method == http.MethodGet && q.Path == path {
			gets = append(gets, q)
		}
	}
	if len(gets) != attempts {
		t.Fatalf("%d GETs of the layer, want one per attempt (%d): %+v", len(gets), attempts, gets)
	}
	for i, q := range gets {
		want := ""
		if i > 0 {
			want = fmt.Sprintf("bytes=%d-", i*cut)
		}
		if q.Range != want {
			t.Errorf("GET %d of the layer asked for Range %q, want %q", i+1, q.Range, want)
		}
	}

	// Nothing partial is committed; the ingest is kept for a resume.
	if _, err := e.store.Info(ctx, layer.Digest); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("the cut layer is in the store (Info err %v)", err)
	}
	verifyStore(t, e.store)
	st, err := e.store.Status(ctx, layer.Digest.String())
	if err != nil {
		t.Fatalf("no resumable ingest of the cut layer: %v", err)
	}
	if st.Offset != attempts*cut || st.Expected != layer.Digest || st.Total != size {
		t.Fatalf("ingest %+v: want offset %d of %d, expecting %s", st, attempts*cut, size, layer.Digest)
	}

	e.reg.CutBlob(layer.Digest, -1)
	e.reg.ResetCounters()
	r := e.pull(t, ref, amd64)
	completed(t, r)
	assertStoreHolds(t, e.store, built.Blobs())
	assertNoIngests(t, e.store)
	reqs := e.reg.Requests()
	if n := e.reg.RequestCount(http.MethodGet, path); n != 1 {
		t.Errorf("%d GETs of the layer on the retry, want 1: %+v", n, reqs)
	}
	resumed := false
	for _, q := range reqs {
		if q.Path == path && q.Range == fmt.Sprintf("bytes=%d-", st.Offset) && q.Status == http.StatusPartialContent {
			resumed = true
		}
	}
	if !resumed {
		t.Errorf("the retry did not resume with Range bytes=%d- answered 206: %+v", st.Offset, reqs)
	}
	if served := e.reg.BytesServed(layer.Digest); served != size-st.Offset {
		t.Errorf("the retry downloaded %d bytes of the layer, want the %d after offset %d", served, size-st.Offset, st.Offset)
	}
	evs := e.settled(t, r, events.TypeBlobCommitted, len(built.Blobs()))
	for _, ev := range ofType(evs, events.TypeBlobCommitted) {
		if bc := decode[events.BlobCommitted](t, ev); bc.Descriptor.Digest == layer.Digest && bc.Fetched != size-st.Offset {
			t.Errorf("blob-committed fetched %d, want %d", bc.Fetched, size-st.Offset)
		}
	}
}
