// Package registry runs a real OCI registry for tests: go-containerregistry's
// in-memory registry handler on a loopback TCP port (127.0.0.1:<random>), so
// that other processes (the fetcher in end-to-end tests) can reach it too.
//
// Around the handler it adds what tests of a fetcher need: blob GETs that
// honour "Range: bytes=N-" with 206 Partial Content (ggcr's handler only
// understands closed ranges), counters of bytes served per digest, a request
// log, bandwidth throttling per connection, and faults to inject: ignore
// Range, corrupt a blob, cut a blob's body short, fail a path N times,
// require basic auth or a bearer token (from a token endpoint on the same
// server), redirect blob GETs to a second "storage" server on another port.
//
// Every knob is an Option for Start and also a method, so a test can push its
// images first and then turn faults on.
package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
)

// Request is one request the registry (or its storage server) answered.
type Request struct {
	// Server is "registry" or "storage" (the redirect target, see
	// WithBlobRedirect).
	Server string
	Method string
	// Path is the URL path, without the query.
	Path string
	// Range is the request's Range header, if any.
	Range string
	// Authorization is true when the request carried an Authorization
	// header. Its value is never recorded.
	Authorization bool
	// Status is the HTTP status of the answer.
	Status int
}

// Registry is a running test registry. Its methods are safe for concurrent
// use.
type Registry struct {
	host        string
	storageHost string
	realm       string

	srv        *http.Server
	storageSrv *http.Server
	inner      http.Handler
	blobs      *blobStore

	throttle atomic.Int64

	mu          sync.Mutex
	served      map[digest.Digest]int64
	total       int64
	reqs        []Request
	ignoreRange bool
	corrupt     map[digest.Digest]bool
	cut         map[digest.Digest]int64
	failures    map[string]*failure
	redirect    bool
	authMode    string // "", "basic" or "bearer"
	user, pass  string
	tokens      map[string]bool
}

type failure struct {
	status    int
	remaining int
}

type config struct {
	throttle    int64
	ignoreRange bool
	corrupt     []digest.Digest
	cut         map[digest.Digest]int64
	failures    map[string]*failure
	redirect    bool
	authMode    string
	user, pass  string
	err         error
}

// Option configures a registry at Start.
type Option func(*config)

// WithThrottle limits every connection to bytesPerSecond (0: unlimited).
func WithThrottle(bytesPerSecond int64) Option {
	return func(c *config) {
		if bytesPerSecond < 0 {
			c.err = fmt.Errorf("throttle must not be negative, got %d", bytesPerSecond)
		}
		c.throttle = bytesPerSecond
	}
}

// WithIgnoreRange makes blob GETs ignore Range and answer 200 with the
// whole blob, as some registries and proxies do.
func WithIgnoreRange() Option { return func(c *config) { c.ignoreRange = true } }

// WithCorruptBlob makes GETs of the blob or manifest with digest d serve
// wrong bytes (every byte inverted; the length is right).
func WithCorruptBlob(d digest.Digest) Option {
	return func(c *config) { c.corrupt = append(c.corrupt, d) }
}

// WithCutBlob makes every GET of the blob with digest d send at most n
// bytes of the body it promises (its Content-Length is the whole answer's)
// and then drop the connection, as a flaky network or proxy does. A ranged
// GET is cut n bytes after the start of its range, so a client that resumes
// gets n bytes further on each attempt.
func WithCutBlob(d digest.Digest, n int64) Option {
	return func(c *config) {
		if n < 0 {
			c.err = fmt.Errorf("cut blob %s: n must not be negative, got %d", d, n)
		}
		if c.cut == nil {
			c.cut = map[digest.Digest]int64{}
		}
		c.cut[d] = n
	}
}

// WithFailures makes the next n requests (any method) for the URL path
// answer status, e.g. WithFailures(ManifestPath("app", "1.0"), 500, 1).
func WithFailures(path string, status, n int) Option {
	return func(c *config) {
		if status < 100 || status > 599 || n < 0 {
			c.err = fmt.Errorf("invalid failure: status %d, count %d", status, n)
		}
		if c.failures == nil {
			c.failures = map[string]*failure{}
		}
		c.failures[path] = &failure{status: status, remaining: n}
	}
}

// WithBasicAuth requires HTTP basic auth with user and password on every
// /v2/ request (401 with a Basic challenge otherwise).
func WithBasicAuth(user, password string) Option {
	return func(c *config) {
		if user == "" || password == "" {
			c.err = errors.New("basic auth needs a user and a password")
		}
		c.authMode, c.user, c.pass = "basic", user, password
	}
}

// WithBearerAuth requires a bearer token on every /v2/ request, answering
// 401 with a Bearer challenge whose realm is the registry's own /token
// endpoint, the flow Docker Hub uses. With user == "" the token endpoint
// hands out tokens to anyone (Docker Hub's anonymous pulls); otherwise it
// requires basic auth with user and password.
func WithBearerAuth(user, password string) Option {
	return func(c *config) { c.authMode, c.user, c.pass = "bearer", user, password }
}

// WithBlobRedirect makes blob GETs answer 307 Temporary Redirect to a second
// server on another loopback port ("storage", like S3 behind a registry),
// with a signature in the query. The storage server honours Range too and
// its requests are logged with Server "storage".
func WithBlobRedirect() Option { return func(c *config) { c.redirect = true } }

// BlobPath returns the URL path of a blob, for WithFailures and Requests.
func BlobPath(repo string, d digest.Digest) string { return "/v2/" + repo + "/blobs/" + d.String() }

// ManifestPath returns the URL path of a manifest by tag or digest.
func ManifestPath(repo, tagOrDigest string) string {
	return "/v2/" + repo + "/manifests/" + tagOrDigest
}

// Start starts a registry on 127.0.0.1:<random port> and stops it when the
// test ends. It fails the test if an option is invalid or it cannot listen.
func Start(t testing.TB, opts ...Option) *Registry {
	t.Helper()
	var c config
	for _, o := range opts {
		o(&c)
	}
	if c.err != nil {
		t.Fatalf("registry.Start: %v", c.err)
	}
	r := &Registry{
		blobs:       &blobStore{m: map[string][]byte{}},
		served:      map[digest.Digest]int64{},
		corrupt:     map[digest.Digest]bool{},
		cut:         map[digest.Digest]int64{},
		failures:    map[string]*failure{},
		ignoreRange: c.ignoreRange,
		redirect:    c.redirect,
		authMode:    c.authMode,
		user:        c.user,
		pass:        c.pass,
		tokens:      map[string]bool{},
	}
	for _, d := range c.corrupt {
		r.corrupt[d] = true
	}
	for d, n := range c.cut {
		r.cut[d] = n
	}
	for p, f := range c.failures {
		r.failures[p] = f
	}
	r.throttle.Store(c.throttle)
	r.inner = ggcrregistry.New(
		ggcrregistry.Logger(log.New(io.Discard, "", 0)),
		ggcrregistry.WithBlobHandler(r.blobs),
	)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("registry.Start: listen: %v", err)
	}
	r.host = ln.Addr().String()
	r.realm = "http://" + r.host + "/token"
	r.srv = &http.Server{Handler: http.HandlerFunc(r.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = r.srv.Serve(&throttledListener{Listener: ln, r: r}) }()

	sln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = r.srv.Close()
		t.Fatalf("registry.Start: listen: %v", err)
	}
	r.storageHost = sln.Addr().String()
	r.storageSrv = &http.Server{Handler: http.HandlerFunc(r.serveStorage), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = r.storageSrv.Serve(&throttledListener{Listener: sln, r: r}) }()

	t.Cleanup(r.Close)
	return r
}

// Close stops the registry, cutting open connections. Start arranges for it
// to be called when the test ends; calling it again does nothing.
func (r *Registry) Close() {
	_ = r.srv.Close()
	_ = r.storageSrv.Close()
}

// Host returns "127.0.0.1:port", the registry part of image references.
func (r *Registry) Host() string { return r.host }

// StorageHost returns the "127.0.0.1:port" of the storage server blob GETs
// are redirected to with WithBlobRedirect.
func (r *Registry) StorageHost() string { return r.storageHost }

// BytesServed returns the body bytes served for the blob or manifest with
// digest d (manifests fetched by tag count under their digest), over all
// requests, partial ones included.
func (r *Registry) BytesServed(d digest.Digest) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.served[d]
}

// TotalBytesServed returns the body bytes served for all blobs and manifests.
func (r *Registry) TotalBytesServed() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total
}

// Requests returns a copy of the request log, oldest first.
func (r *Registry) Requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Request(nil), r.reqs...)
}

// RequestCount returns how many requests with method (any method if "") for
// path were answered.
func (r *Registry) RequestCount(method, path string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, q := range r.reqs {
		if (method == "" || q.Method == method) && q.Path == path {
			n++
		}
	}
	return n
}

// ResetCounters clears the byte counters and the request log, e.g. after
// pushing the test's images.
func (r *Registry) ResetCounters() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.served = map[digest.Digest]int64{}
	r.total = 0
	r.reqs = nil
}

// SetThrottle limits every connection, open ones included, to
// bytesPerSecond (0: unlimited).
func (r *Registry) SetThrottle(bytesPerSecond int64) { r.throttle.Store(max(0, bytesPerSecond)) }

// SetIgnoreRange turns ignoring Range on or off (see WithIgnoreRange).
func (r *Registry) SetIgnoreRange(ignore bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ignoreRange = ignore
}

// CorruptBlob makes GETs of digest d serve wrong bytes (see
// WithCorruptBlob); corrupt false serves the right bytes again.
func (r *Registry) CorruptBlob(d digest.Digest, corrupt bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if corrupt {
		r.corrupt[d] = true
	} else {
		delete(r.corrupt, d)
	}
}

// CutBlob makes GETs of the blob with digest d send at most n bytes of
// their body and then drop the connection (see WithCutBlob); n < 0 serves
// the whole body again.
func (r *Registry) CutBlob(d digest.Digest, n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n < 0 {
		delete(r.cut, d)
	} else {
		r.cut[d] = n
	}
}

// FailNext makes the next n requests for path answer status (see
// WithFailures). n == 0 clears the failure.
func (r *Registry) FailNext(path string, status, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n <= 0 {
		delete(r.failures, path)
		return
	}
	r.failures[path] = &failure{status: status, remaining: n}
}

// Blob returns the bytes of a pushed blob (not manifests), and whether the
// registry has it.
func (r *Registry) Blob(d digest.Digest) ([]byte, bool) {
	r.blobs.mu.Lock()
	defer r.blobs.mu.Unlock()
	b, ok := r.blobs.m[d.String()]
	return b, ok
}

var (
	blobRE     = regexp.MustCompile(`^/v2/(.+)/blobs/([a-z0-9]+:[a-zA-Z0-9=_-]+)$`)
	manifestRE = regexp.MustCompile(`^/v2/(.+)/manifests/([^/]+)$`)
)

// serve is the registry's handler.
func (r *Registry) serve(w http.ResponseWriter, req *http.Request) {
	rw := r.wrap(w, req, "registry")
	defer rw.record()

	if req.URL.Path == "/token" {
		r.serveToken(rw, req)
		return
	}
	if r.injectFailure(rw, req) {
		return
	}
	if !r.authorized(rw, req) {
		return
	}
	if m := blobRE.FindStringSubmatch(req.URL.Path); m != nil && req.Method == http.MethodGet {
		d, err := digest.Parse(m[2])
		if err != nil {
			writeError(rw, http.StatusBadRequest, "DIGEST_INVALID", "invalid digest")
			return
		}
		r.mu.Lock()
		redirect := r.redirect
		r.mu.Unlock()
		if redirect {
			if _, ok := r.Blob(d); !ok {
				writeError(rw, http.StatusNotFound, "BLOB_UNKNOWN", "blob unknown to registry")
				return
			}
			http.Redirect(rw, req, "http://"+r.storageHost+"/blobs/"+d.String()+"?X-Signature=s3cr3t-signature", http.StatusTemporaryRedirect)
			return
		}
		r.serveBlob(rw, req, d)
		return
	}
	r.inner.ServeHTTP(rw, req)
}

// serveStorage is the handler of the redirect target.
func (r *Registry) serveStorage(w http.ResponseWriter, req *http.Request) {
	rw := r.wrap(w, req, "storage")
	defer rw.record()
	if r.injectFailure(rw, req) {
		return
	}
	ds, ok := strings.CutPrefix(req.URL.Path, "/blobs/")
	d, err := digest.Parse(ds)
	if !ok || err != nil || req.Method != http.MethodGet && req.Method != http.MethodHead {
		http.NotFound(rw, req)
		return
	}
	r.serveBlob(rw, req, d)
}

// serveBlob serves a blob, honouring "Range: bytes=N-" and "bytes=N-M"
// unless ranges are ignored.
func (r *Registry) serveBlob(w http.ResponseWriter, req *http.Request, d digest.Digest) {
	b, ok := r.Blob(d)
	if !ok {
		writeError(w, http.StatusNotFound, "BLOB_UNKNOWN", "blob unknown to registry")
		return
	}
	r.mu.Lock()
	ignore := r.ignoreRange
	cut, cutting := r.cut[d]
	r.mu.Unlock()
	if !cutting {
		cut = -1
	}
	size := int64(len(b))
	w.Header().Set("Docker-Content-Digest", d.String())
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Accept-Ranges", "bytes")
	first, last, hasRange := parseRange(req.Header.Get("Range"), size)
	if ignore || !hasRange {
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		w.WriteHeader(http.StatusOK)
		if req.Method != http.MethodHead {
			writeCut(w, b, cut)
		}
		return
	}
	if first < 0 {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", size))
		writeError(w, http.StatusRequestedRangeNotSatisfiable, "BLOB_UNKNOWN", "range not satisfiable")
		return
	}
	w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", first, last, size))
	w.Header().Set("Content-Length", strconv.FormatInt(last-first+1, 10))
	w.WriteHeader(http.StatusPartialContent)
	if req.Method != http.MethodHead {
		writeCut(w, b[first:last+1], cut)
	}
}

// writeCut writes body, or when cut >= 0 only its first cut bytes, after
// which it drops the connection so that the client sees the body end early.
func writeCut(w http.ResponseWriter, body []byte, cut int64) {
	if cut < 0 || cut >= int64(len(body)) {
		writeChunks(w, body)
		return
	}
	writeChunks(w, body[:cut])
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	// net/http closes the connection without finishing the response.
	panic(http.ErrAbortHandler)
}

// writeChunks writes b in 64 KiB pieces, so that the served-bytes counters
// follow what actually left the server rather than jumping to the whole
// blob on the first write.
func writeChunks(w io.Writer, b []byte) {
	const chunk = 64 << 10
	for len(b) > 0 {
		n := min(chunk, len(b))
		if _, err := w.Write(b[:n]); err != nil {
			return
		}
		b = b[n:]
	}
}

// parseRange parses a single byte range. ok is false when there is no range
// or it is not one this server understands (then the whole blob is served,
// which RFC 9110 allows). first is -1 when the range cannot be satisfied.
func parseRange(h string, size int64) (first, last int64, ok bool) {
	spec, found := strings.CutPrefix(h, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false
	}
	a, b, found := strings.Cut(spec, "-")
	if !found || a == "" {
		return 0, 0, false
	}
	first, err := strconv.ParseInt(a, 10, 64)
	if err != nil || first < 0 {
		return 0, 0, false
	}
	last = size - 1
	if b != "" {
		l, err := strconv.ParseInt(b, 10, 64)
		if err != nil || l < first {
			return 0, 0, false
		}
		last = min(l, size-1)
	}
	if first >= size {
		return -1, 0, true
	}
	return first, last, true
}

func (r *Registry) injectFailure(w http.ResponseWriter, req *http.Request) bool {
	r.mu.Lock()
	f, ok := r.failures[req.URL.Path]
	if ok {
		f.remaining--
		if f.remaining <= 0 {
			delete(r.failures, req.URL.Path)
		}
	}
	r.mu.Unlock()
	if !ok {
		return false
	}
	writeError(w, f.status, "INJECTED", fmt.Sprintf("injected failure %d", f.status))
	return true
}

// authorized checks the request's credentials, answering 401 when they are
// missing or wrong.
func (r *Registry) authorized(w http.ResponseWriter, req *http.Request) bool {
	r.mu.Lock()
	mode, user, pass := r.authMode, r.user, r.pass
	r.mu.Unlock()
	switch mode {
	case "basic":
		u, p, ok := req.BasicAuth()
		if ok && u == user && p == pass {
			return true
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="stevedore-test-registry"`)
		writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
		return false
	case "bearer":
		tok, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
		r.mu.Lock()
		valid := ok && r.tokens[tok]
		r.mu.Unlock()
		if valid {
			return true
		}
		challenge := fmt.Sprintf(`Bearer realm=%q,service="stevedore-test-registry"`, r.realm)
		if m := blobRE.FindStringSubmatch(req.URL.Path); m != nil {
			challenge += fmt.Sprintf(`,scope="repository:%s:pull"`, m[1])
		} else if m := manifestRE.FindStringSubmatch(req.URL.Path); m != nil {
			challenge += fmt.Sprintf(`,scope="repository:%s:pull"`, m[1])
		}
		w.Header().Set("WWW-Authenticate", challenge)
		writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
		return false
	}
	return true
}

// serveToken is the bearer token endpoint.
func (r *Registry) serveToken(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	mode, user, pass := r.authMode, r.user, r.pass
	r.mu.Unlock()
	if mode != "bearer" {
		http.NotFound(w, req)
		return
	}
	if user != "" {
		u, p, ok := req.BasicAuth()
		if !ok || u != user || p != pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="stevedore-test-token"`)
			writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "invalid credentials for the token service")
			return
		}
	}
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	tok := hex.EncodeToString(raw[:])
	r.mu.Lock()
	r.tokens[tok] = true
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"token": tok, "access_token": tok, "expires_in": 300})
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
}

// respWriter records the status and counts (and corrupts) body bytes of
// blobs and manifests.
type respWriter struct {
	http.ResponseWriter
	r      *Registry
	req    *http.Request
	server string
	status int
	key    digest.Digest
	keyed  bool
	// recorded is set once the request is in the log.
	recorded bool
}

func (r *Registry) wrap(w http.ResponseWriter, req *http.Request, server string) *respWriter {
	return &respWriter{ResponseWriter: w, r: r, req: req, server: server}
}

// WriteHeader records the request before the client can see the answer,
// so the log is complete when a client has its response.
func (w *respWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
		w.record()
	}
	w.ResponseWriter.WriteHeader(code)
}

// digestKey returns the digest body bytes count under: the digest in the
// path, or the Docker-Content-Digest of a manifest fetched by tag.
func (w *respWriter) digestKey() digest.Digest {
	if w.keyed {
		return w.key
	}
	w.keyed = true
	p := w.req.URL.Path
	switch {
	case w.server == "storage":
		w.key, _ = digest.Parse(strings.TrimPrefix(p, "/blobs/"))
	case blobRE.MatchString(p):
		w.key, _ = digest.Parse(blobRE.FindStringSubmatch(p)[2])
	case manifestRE.MatchString(p):
		if d, err := digest.Parse(manifestRE.FindStringSubmatch(p)[2]); err == nil {
			w.key = d
		} else {
			w.key, _ = digest.Parse(w.Header().Get("Docker-Content-Digest"))
		}
	}
	if w.status >= 300 {
		w.key = ""
	}
	return w.key
}

func (w *respWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	key := w.digestKey()
	if key == "" || w.req.Method != http.MethodGet {
		return w.ResponseWriter.Write(p)
	}
	w.r.mu.Lock()
	bad := w.r.corrupt[key]
	w.r.mu.Unlock()
	out := p
	if bad {
		out = make([]byte, len(p))
		for i, c := range p {
			out[i] = ^c
		}
	}
	// Count before writing, so the counters are up to date by the time a
	// client has read the bytes; take back what was not written.
	w.count(key, int64(len(out)))
	n, err := w.ResponseWriter.Write(out)
	if n < len(out) {
		w.count(key, int64(n-len(out)))
	}
	return n, err
}

func (w *respWriter) count(key digest.Digest, n int64) {
	w.r.mu.Lock()
	defer w.r.mu.Unlock()
	w.r.served[key] += n
	w.r.total += n
}

// Flush lets streaming handlers flush.
func (w *respWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// record appends the request to the log, once.
func (w *respWriter) record() {
	if w.recorded {
		return
	}
	w.recorded = true
	status := w.status
	if status == 0 {
		status = http.StatusOK
	}
	w.r.mu.Lock()
	defer w.r.mu.Unlock()
	w.r.reqs = append(w.r.reqs, Request{
		Server:        w.server,
		Method:        w.req.Method,
		Path:          w.req.URL.Path,
		Range:         w.req.Header.Get("Range"),
		Authorization: w.req.Header.Get("Authorization") != "",
		Status:        status,
	})
}

// throttledListener wraps accepted connections so their writes honour the
// registry's throttle.
type throttledListener struct {
	net.Listener
	r *Registry
}

func (l *throttledListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &throttledConn{Conn: c, r: l.r}, nil
}

type throttledConn struct {
	net.Conn
	r *Registry
}

func (c *throttledConn) Write(p []byte) (int, error) {
	written := 0
	for written < len(p) {
		rate := c.r.throttle.Load()
		if rate <= 0 {
			n, err := c.Conn.Write(p[written:])
			return written + n, err
		}
		chunk := int(max(rate/50, 512))
		n := min(chunk, len(p)-written)
		start := time.Now()
		m, err := c.Conn.Write(p[written : written+n])
		written += m
		if err != nil {
			return written, err
		}
		want := time.Duration(float64(m) / float64(rate) * float64(time.Second))
		if el := time.Since(start); el < want {
			time.Sleep(want - el)
		}
	}
	return written, nil
}

// blobStore is the registry's blob storage (ggcr's BlobHandler), global
// across repositories like ggcr's own in-memory handler.
type blobStore struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (s *blobStore) Get(_ context.Context, _ string, h v1.Hash) (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.m[h.String()]
	if !ok {
		return nil, ggcrregistry.ErrNotFound
	}
	return io.NopCloser(strings.NewReader(string(b))), nil
}

func (s *blobStore) Stat(_ context.Context, _ string, h v1.Hash) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.m[h.String()]
	if !ok {
		return 0, ggcrregistry.ErrNotFound
	}
	return int64(len(b)), nil
}

func (s *blobStore) Put(_ context.Context, _ string, h v1.Hash, rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[h.String()] = b
	return nil
}

func (s *blobStore) Delete(_ context.Context, _ string, h v1.Hash) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[h.String()]; !ok {
		return ggcrregistry.ErrNotFound
	}
	delete(s.m, h.String())
	return nil
}
