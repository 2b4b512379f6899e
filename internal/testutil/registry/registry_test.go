package registry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stevedore/stevedore/internal/testutil/registry"
	"github.com/stevedore/stevedore/internal/testutil/testimage"
)

// pushed starts a registry with opts and pushes an image with one random
// layer of size bytes as "app:1".
func pushed(t *testing.T, size int64, opts ...registry.Option) (*registry.Registry, *testimage.Layer, digest.Digest) {
	t.Helper()
	reg := registry.Start(t, opts...)
	l, err := testimage.RandomLayerWith(size, 1, testimage.Uncompressed)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := testimage.Push(ctx, reg.Host(), "app:1", &testimage.Image{Layers: []*testimage.Layer{l}})
	if err != nil {
		t.Fatal(err)
	}
	reg.ResetCounters()
	return reg, l, d.Digest
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func get(t *testing.T, method, url string, hdr map[string]string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	c := &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header, b}
}

func TestHostIsLoopbackTCP(t *testing.T) {
	reg := registry.Start(t)
	if !strings.HasPrefix(reg.Host(), "127.0.0.1:") || reg.Host() == "127.0.0.1:0" {
		t.Fatalf("Host() = %q", reg.Host())
	}
	if a := get(t, http.MethodGet, "http://"+reg.Host()+"/v2/", nil); a.status != http.StatusOK {
		t.Fatalf("GET /v2/: %d", a.status)
	}
}

func TestRange(t *testing.T) {
	reg, l, _ := pushed(t, 10_000)
	url := "http://" + reg.Host() + registry.BlobPath("app", l.Digest)
	size := int64(len(l.Blob))
	cases := []struct {
		rng          string
		status       int
		first, last  int64
		contentRange string
	}{
		{"", 200, 0, size - 1, ""},
		{"bytes=100-", 206, 100, size - 1, fmt.Sprintf("bytes 100-%d/%d", size-1, size)},
		{"bytes=100-199", 206, 100, 199, fmt.Sprintf("bytes 100-199/%d", size)},
		{"bytes=0-", 206, 0, size - 1, fmt.Sprintf("bytes 0-%d/%d", size-1, size)},
		{fmt.Sprintf("bytes=%d-", size-1), 206, size - 1, size - 1, fmt.Sprintf("bytes %d-%d/%d", size-1, size-1, size)},
		{fmt.Sprintf("bytes=%d-", size), 416, 0, -1, fmt.Sprintf("bytes */%d", size)},
		{"bytes=1-2,5-6", 200, 0, size - 1, ""},
	}
	var want int64
	for _, tc := range cases {
		var hdr map[string]string
		if tc.rng != "" {
			hdr = map[string]string{"Range": tc.rng}
		}
		a := get(t, http.MethodGet, url, hdr)
		if a.status != tc.status || a.header.Get("Content-Range") != tc.contentRange {
			t.Errorf("Range %q: %d %q, want %d %q", tc.rng, a.status, a.header.Get("Content-Range"), tc.status, tc.contentRange)
			continue
		}
		if tc.status < 300 {
			if !bytes.Equal(a.body, l.Blob[tc.first:tc.last+1]) {
				t.Errorf("Range %q: wrong bytes (%d)", tc.rng, len(a.body))
			}
			want += tc.last - tc.first + 1
		}
	}
	if got := reg.BytesServed(l.Digest); got != want {
		t.Errorf("BytesServed = %d, want %d", got, want)
	}

	reg.SetIgnoreRange(true)
	a := get(t, http.MethodGet, url, map[string]string{"Range": "bytes=100-"})
	if a.status != 200 || !bytes.Equal(a.body, l.Blob) {
		t.Errorf("ignoring Range: %d with %d bytes, want 200 with the whole blob", a.status, len(a.body))
	}
	reqs := reg.Requests()
	if last := reqs[len(reqs)-1]; last.Range != "bytes=100-" || last.Status != 200 || last.Method != "GET" {
		t.Errorf("last request %+v", last)
	}
}

func TestIgnoreRangeOption(t *testing.T) {
	reg, l, _ := pushed(t, 1000, registry.WithIgnoreRange())
	a := get(t, http.MethodGet, "http://"+reg.Host()+registry.BlobPath("app", l.Digest), map[string]string{"Range": "bytes=10-"})
	if a.status != 200 || len(a.body) != len(l.Blob) {
		t.Errorf("%d, %d bytes; want 200 and the whole blob", a.status, len(a.body))
	}
}

func TestManifestCountedUnderDigest(t *testing.T) {
	reg, _, md := pushed(t, 10)
	a := get(t, http.MethodGet, "http://"+reg.Host()+registry.ManifestPath("app", "1"), nil)
	if a.status != 200 || digest.FromBytes(a.body) != md {
		t.Fatalf("GET manifest by tag: %d, %s", a.status, digest.FromBytes(a.body))
	}
	get(t, http.MethodHead, "http://"+reg.Host()+registry.ManifestPath("app", md.String()), nil)
	if got := reg.BytesServed(md); got != int64(len(a.body)) {
		t.Errorf("BytesServed(manifest) = %d, want %d (HEAD serves no bytes)", got, len(a.body))
	}
	if reg.TotalBytesServed() != int64(len(a.body)) {
		t.Errorf("TotalBytesServed = %d", reg.TotalBytesServed())
	}
	if n := reg.RequestCount(http.MethodHead, registry.ManifestPath("app", md.String())); n != 1 {
		t.Errorf("RequestCount(HEAD) = %d", n)
	}
}

func TestCorruptBlob(t *testing.T) {
	reg, l, md := pushed(t, 1000)
	url := "http://" + reg.Host() + registry.BlobPath("app", l.Digest)
	reg.CorruptBlob(l.Digest, true)
	a := get(t, http.MethodGet, url, nil)
	if a.status != 200 || len(a.body) != len(l.Blob) || bytes.Equal(a.body, l.Blob) || digest.FromBytes(a.body) == l.Digest {
		t.Fatalf("corrupt blob: %d, %d bytes, digest %s; want wrong bytes of the right length", a.status, len(a.body), digest.FromBytes(a.body))
	}
	if a := get(t, http.MethodGet, url, map[string]string{"Range": "bytes=10-"}); bytes.Equal(a.body, l.Blob[10:]) {
		t.Errorf("ranged GET of a corrupt blob served the right bytes")
	}
	reg.CorruptBlob(l.Digest, false)
	if a := get(t, http.MethodGet, url, nil); !bytes.Equal(a.body, l.Blob) {
		t.Errorf("after CorruptBlob(false) the bytes are still wrong")
	}

	reg2 := registry.Start(t, registry.WithCorruptBlob(md))
	if _, err := testimage.Push(context.Background(), reg2.Host(), "app:1", &testimage.Image{Layers: []*testimage.Layer{l}}); err != nil {
		t.Fatal(err)
	}
	if a := get(t, http.MethodGet, "http://"+reg2.Host()+registry.ManifestPath("app", "1"), nil); digest.FromBytes(a.body) == md {
		t.Errorf("WithCorruptBlob(manifest) served the right manifest")
	}
}

func TestFailures(t *testing.T) {
	reg, l, _ := pushed(t, 100)
	path := registry.BlobPath("app", l.Digest)
	reg.FailNext(path, http.StatusServiceUnavailable, 2)
	for i, want := range []int{503, 503, 200} {
		a := get(t, http.MethodGet, "http://"+reg.Host()+path, nil)
		if a.status != want {
			t.Errorf("request %d: %d, want %d", i, a.status, want)
		}
		if want == 503 && !strings.Contains(string(a.body), "INJECTED") {
			t.Errorf("request %d: body %q, want an OCI error", i, a.body)
		}
	}
	reg2 := registry.Start(t, registry.WithFailures("/v2/", 500, 1))
	if a := get(t, http.MethodGet, "http://"+reg2.Host()+"/v2/", nil); a.status != 500 {
		t.Errorf("WithFailures: %d, want 500", a.status)
	}
	if a := get(t, http.MethodGet, "http://"+reg2.Host()+"/v2/", nil); a.status != 200 {
		t.Errorf("after the failure: %d, want 200", a.status)
	}
}

func TestBasicAuth(t *testing.T) {
	reg := registry.Start(t, registry.WithBasicAuth("u", "p"))
	url := "http://" + reg.Host() + "/v2/"
	a := get(t, http.MethodGet, url, nil)
	if a.status != 401 || !strings.HasPrefix(a.header.Get("WWW-Authenticate"), "Basic ") {
		t.Fatalf("no credentials: %d %q", a.status, a.header.Get("WWW-Authenticate"))
	}
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.SetBasicAuth("u", "wrong")
	if resp, err := http.DefaultTransport.RoundTrip(req); err != nil || resp.StatusCode != 401 {
		t.Fatalf("wrong password: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	req.SetBasicAuth("u", "p")
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("right password: %v %v", resp, err)
	}
	resp.Body.Close()
	reqs := reg.Requests()
	if !reqs[len(reqs)-1].Authorization || reqs[0].Authorization {
		t.Errorf("request log %+v should record whether Authorization was sent", reqs)
	}
	// Pushing needs the credentials.
	l, _ := testimage.NewLayer(testimage.Gzip, testimage.File("f", []byte("1"), 0o644))
	img := &testimage.Image{Layers: []*testimage.Layer{l}}
	if _, err := testimage.Push(context.Background(), reg.Host(), "a:1", img); err == nil {
		t.Errorf("anonymous push to a basic-auth registry succeeded")
	}
	if _, err := testimage.Push(context.Background(), reg.Host(), "a:1", img, testimage.WithAuth("u", "p")); err != nil {
		t.Errorf("push with credentials: %v", err)
	}
}

func TestBearerAuth(t *testing.T) {
	for _, user := range []string{"", "tok-user"} {
		reg := registry.Start(t, registry.WithBearerAuth(user, "tok-pass"))
		base := "http://" + reg.Host()
		a := get(t, http.MethodGet, base+registry.ManifestPath("app", "1"), nil)
		challenge := a.header.Get("WWW-Authenticate")
		wantRealm := fmt.Sprintf(`realm="%s/token"`, base)
		if a.status != 401 || !strings.HasPrefix(challenge, "Bearer ") || !strings.Contains(challenge, wantRealm) ||
			!strings.Contains(challenge, `scope="repository:app:pull"`) {
			t.Fatalf("user %q: %d %q", user, a.status, challenge)
		}
		tokReq, _ := http.NewRequest(http.MethodGet, base+"/token?scope=repository:app:pull", nil)
		if user != "" {
			resp, err := http.DefaultClient.Do(tokReq)
			if err != nil || resp.StatusCode != 401 {
				t.Fatalf("token without credentials: %v %v", resp, err)
			}
			resp.Body.Close()
			tokReq.SetBasicAuth(user, "tok-pass")
		}
		resp, err := http.DefaultClient.Do(tokReq)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("token: %v %v", resp, err)
		}
		var tok struct {
			Token string `json:"token"`
		}
		err = json.NewDecoder(resp.Body).Decode(&tok)
		resp.Body.Close()
		if err != nil || tok.Token == "" {
			t.Fatalf("token body: %v", err)
		}
		if a := get(t, http.MethodGet, base+"/v2/", map[string]string{"Authorization": "Bearer " + tok.Token}); a.status != 200 {
			t.Errorf("with token: %d", a.status)
		}
		if a := get(t, http.MethodGet, base+"/v2/", map[string]string{"Authorization": "Bearer forged"}); a.status != 401 {
			t.Errorf("with a forged token: %d", a.status)
		}
	}
}

func TestBlobRedirect(t *testing.T) {
	reg, l, _ := pushed(t, 2000, registry.WithBlobRedirect())
	a := get(t, http.MethodGet, "http://"+reg.Host()+registry.BlobPath("app", l.Digest), nil)
	loc := a.header.Get("Location")
	if a.status != http.StatusTemporaryRedirect || !strings.HasPrefix(loc, "http://"+reg.StorageHost()+"/blobs/") {
		t.Fatalf("%d Location %q", a.status, loc)
	}
	b := get(t, http.MethodGet, loc, map[string]string{"Range": "bytes=1000-"})
	if b.status != 206 || !bytes.Equal(b.body, l.Blob[1000:]) {
		t.Fatalf("storage: %d, %d bytes", b.status, len(b.body))
	}
	if got := reg.BytesServed(l.Digest); got != int64(len(l.Blob)-1000) {
		t.Errorf("BytesServed = %d", got)
	}
	reqs := reg.Requests()
	if reqs[len(reqs)-1].Server != "storage" || reqs[len(reqs)-2].Server != "registry" {
		t.Errorf("requests %+v", reqs)
	}
	missing := get(t, http.MethodGet, "http://"+reg.Host()+registry.BlobPath("app", digest.FromString("x")), nil)
	if missing.status != 404 {
		t.Errorf("missing blob with redirects: %d", missing.status)
	}
}

func TestThrottle(t *testing.T) {
	reg, l, _ := pushed(t, 64<<10, registry.WithThrottle(256<<10))
	start := time.Now()
	a := get(t, http.MethodGet, "http://"+reg.Host()+registry.BlobPath("app", l.Digest), nil)
	elapsed := time.Since(start)
	if a.status != 200 || len(a.body) != len(l.Blob) {
		t.Fatalf("%d, %d bytes", a.status, len(a.body))
	}
	if elapsed < 200*time.Millisecond {
		t.Errorf("64 KiB at 256 KiB/s took %v, want about 250ms", elapsed)
	}
	reg.SetThrottle(0)
	start = time.Now()
	get(t, http.MethodGet, "http://"+reg.Host()+registry.BlobPath("app", l.Digest), nil)
	if d := time.Since(start); d > 150*time.Millisecond {
		t.Errorf("unthrottled fetch took %v", d)
	}
}

// cutGet GETs url with hdr and returns the status and what of the body
// arrived before the read failed, and the read error.
func cutGet(t *testing.T, url string, hdr map[string]string) (int, []byte, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func TestCutBlob(t *testing.T) {
	reg, l, _ := pushed(t, 200_000)
	url := "http://" + reg.Host() + registry.BlobPath("app", l.Digest)
	reg.CutBlob(l.Digest, 1000)
	status, b, err := cutGet(t, url, nil)
	if status != 200 || err == nil || !bytes.Equal(b, l.Blob[:1000]) {
		t.Errorf("cut GET: %d, %d bytes, err %v; want 200, the first 1000 bytes, then an error", status, len(b), err)
	}
	status, b, err = cutGet(t, url, map[string]string{"Range": "bytes=5000-"})
	if status != 206 || err == nil || !bytes.Equal(b, l.Blob[5000:6000]) {
		t.Errorf("cut ranged GET: %d, %d bytes, err %v; want 206, bytes 5000-5999, then an error", status, len(b), err)
	}
	if got := reg.BytesServed(l.Digest); got != 2000 {
		t.Errorf("BytesServed = %d, want 2000", got)
	}
	if reqs := reg.Requests(); len(reqs) != 2 || reqs[1].Range != "bytes=5000-" || reqs[1].Status != 206 {
		t.Errorf("request log %+v, want both cut GETs", reqs)
	}
	reg.CutBlob(l.Digest, -1)
	if status, b, err := cutGet(t, url, nil); status != 200 || err != nil || !bytes.Equal(b, l.Blob) {
		t.Errorf("after CutBlob(-1): %d, %d bytes, err %v; want the whole blob", status, len(b), err)
	}

	reg2 := registry.Start(t, registry.WithCutBlob(l.Digest, 0))
	if _, err := testimage.Push(context.Background(), reg2.Host(), "app:1", &testimage.Image{Layers: []*testimage.Layer{l}}); err != nil {
		t.Fatal(err)
	}
	if _, b, err := cutGet(t, "http://"+reg2.Host()+registry.BlobPath("app", l.Digest), nil); err == nil || len(b) != 0 {
		t.Errorf("WithCutBlob(0): %d bytes, err %v; want no body and an error", len(b), err)
	}
}
