// Package remotes is the fetcher's access to OCI registries: parse and
// normalize image references, resolve a reference to the descriptor of its
// root manifest or index, and fetch manifests and blobs, resuming a blob
// from an offset with an HTTP Range request.
//
// Reference parsing, credentials (the docker config keychain, basic auth and
// the bearer token flow Docker Hub uses) and the authenticating transport
// come from go-containerregistry; the manifest and blob requests are made
// here so blob fetches can use Range and stream without buffering.
//
// Registries are reached over HTTPS with the system roots (or WithTLSConfig).
// Plain HTTP is used only for a loopback registry (localhost, 127.0.0.0/8,
// ::1), as containerd does, or when the caller passes plainHTTP; a plain-HTTP
// request to any other host, a redirect included, is refused. Every error wraps an errdefs class and says what
// failed in words; none carries credentials or tokens.
package remotes

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/images"
)

// Defaults for the options.
const (
	DefaultDialTimeout           = 30 * time.Second
	DefaultTLSHandshakeTimeout   = 10 * time.Second
	DefaultResponseHeaderTimeout = 30 * time.Second
	DefaultIdleConnTimeout       = 90 * time.Second
	DefaultMaxConnsPerRegistry   = 8
	DefaultMaxManifestSize       = images.DefaultMaxManifestSize
	DefaultMaxConfigSize         = images.DefaultMaxConfigSize
	DefaultMaxIndexDepth         = 4
	DefaultUserAgent             = "stevedore"

	// transportTTL bounds how long an authenticated transport (and the
	// credentials resolved for it) is reused before the keychain is read
	// again.
	transportTTL = 5 * time.Minute
	// maxRedirects bounds redirects to blob storage.
	maxRedirects = 10
)

// Limits are the size and depth limits a Remote applies, which the walker
// that reads manifests and configs should apply too.
type Limits struct {
	// MaxManifestSize is the largest manifest or index, in bytes.
	MaxManifestSize int64
	// MaxConfigSize is the largest image config, in bytes.
	MaxConfigSize int64
	// MaxIndexDepth is how deeply indexes may nest below the root.
	MaxIndexDepth int
}

type options struct {
	dialTimeout           time.Duration
	tlsHandshakeTimeout   time.Duration
	responseHeaderTimeout time.Duration
	idleConnTimeout       time.Duration
	maxConns              int
	keychain              authn.Keychain
	userAgent             string
	tlsConfig             *tls.Config
	limits                Limits
}

// Option configures a Remote. Options validate their arguments and New
// returns the first error, wrapping errdefs.ErrInvalidArgument.
type Option func(*options) error

func positive[T int | int64 | time.Duration](what string, v T) error {
	if v <= 0 {
		return fmt.Errorf("remotes: %s must be positive, got %v: %w", what, v, errdefs.ErrInvalidArgument)
	}
	return nil
}

// WithDialTimeout bounds establishing a TCP connection (default 30s).
func WithDialTimeout(d time.Duration) Option {
	return func(o *options) error { o.dialTimeout = d; return positive("dial timeout", d) }
}

// WithTLSHandshakeTimeout bounds the TLS handshake (default 10s).
func WithTLSHandshakeTimeout(d time.Duration) Option {
	return func(o *options) error { o.tlsHandshakeTimeout = d; return positive("TLS handshake timeout", d) }
}

// WithResponseHeaderTimeout bounds the wait for response headers after a
// request is written (default 30s). There is deliberately no overall timeout:
// a large blob body may stream for as long as it takes; cancel the context
// to stop it.
func WithResponseHeaderTimeout(d time.Duration) Option {
	return func(o *options) error { o.responseHeaderTimeout = d; return positive("response header timeout", d) }
}

// WithIdleConnTimeout bounds how long an idle keep-alive connection is kept
// (default 90s).
func WithIdleConnTimeout(d time.Duration) Option {
	return func(o *options) error { o.idleConnTimeout = d; return positive("idle connection timeout", d) }
}

// WithMaxConnsPerRegistry bounds the concurrent requests (and so
// connections) to one registry host (default 8). A fetch holds its slot
// until its body is closed.
func WithMaxConnsPerRegistry(n int) Option {
	return func(o *options) error { o.maxConns = n; return positive("max connections per registry", n) }
}

// WithKeychain sets where credentials come from (default
// authn.DefaultKeychain, which reads the docker config: $DOCKER_CONFIG or
// ~/.docker/config.json, with credential helpers).
func WithKeychain(k authn.Keychain) Option {
	return func(o *options) error {
		if k == nil {
			return fmt.Errorf("remotes: nil keychain: %w", errdefs.ErrInvalidArgument)
		}
		o.keychain = k
		return nil
	}
}

// WithUserAgent sets the User-Agent of requests (default "stevedore").
func WithUserAgent(ua string) Option {
	return func(o *options) error {
		if strings.TrimSpace(ua) == "" || strings.ContainsAny(ua, "\r\n") {
			return fmt.Errorf("remotes: invalid user agent %q: %w", ua, errdefs.ErrInvalidArgument)
		}
		o.userAgent = ua
		return nil
	}
}

// WithTLSConfig sets the TLS client configuration, e.g. to trust a private
// CA. The default uses the system roots.
func WithTLSConfig(c *tls.Config) Option {
	return func(o *options) error {
		if c == nil {
			return fmt.Errorf("remotes: nil TLS config: %w", errdefs.ErrInvalidArgument)
		}
		o.tlsConfig = c.Clone()
		return nil
	}
}

// WithMaxManifestSize sets the largest manifest or index accepted, in bytes
// (default 4 MiB).
func WithMaxManifestSize(n int64) Option {
	return func(o *options) error { o.limits.MaxManifestSize = n; return positive("max manifest size", n) }
}

// WithMaxConfigSize sets the largest image config accepted, in bytes
// (default 8 MiB).
func WithMaxConfigSize(n int64) Option {
	return func(o *options) error { o.limits.MaxConfigSize = n; return positive("max config size", n) }
}

// WithMaxIndexDepth sets how deeply indexes may nest (default 4).
func WithMaxIndexDepth(n int) Option {
	return func(o *options) error { o.limits.MaxIndexDepth = n; return positive("max index depth", n) }
}

// Remote fetches from registries. It is safe for concurrent use; create one
// per process and share it, so connections and tokens are reused.
type Remote struct {
	opts   options
	base   http.RoundTripper
	direct *http.Transport

	mu         sync.Mutex
	transports map[transportKey]*cachedTransport
	sems       map[string]chan struct{}
}

type transportKey struct {
	host, repository string
	plainHTTP        bool
}

type cachedTransport struct {
	rt        http.RoundTripper
	anonymous bool
	created   time.Time
}

// New returns a Remote configured by opts. It fails with an error wrapping
// errdefs.ErrInvalidArgument when an option is invalid.
func New(opts ...Option) (*Remote, error) {
	o := options{
		dialTimeout:           DefaultDialTimeout,
		tlsHandshakeTimeout:   DefaultTLSHandshakeTimeout,
		responseHeaderTimeout: DefaultResponseHeaderTimeout,
		idleConnTimeout:       DefaultIdleConnTimeout,
		maxConns:              DefaultMaxConnsPerRegistry,
		keychain:              authn.DefaultKeychain,
		userAgent:             DefaultUserAgent,
		limits: Limits{
			MaxManifestSize: DefaultMaxManifestSize,
			MaxConfigSize:   DefaultMaxConfigSize,
			MaxIndexDepth:   DefaultMaxIndexDepth,
		},
	}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	dialer := &net.Dialer{Timeout: o.dialTimeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		TLSClientConfig:       o.tlsConfig,
		TLSHandshakeTimeout:   o.tlsHandshakeTimeout,
		ResponseHeaderTimeout: o.responseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       o.idleConnTimeout,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   o.maxConns,
	}
	return &Remote{
		opts:       o,
		direct:     tr,
		base:       transport.NewUserAgent(tr, o.userAgent),
		transports: map[transportKey]*cachedTransport{},
		sems:       map[string]chan struct{}{},
	}, nil
}

// Limits returns the limits r applies.
func (r *Remote) Limits() Limits { return r.opts.limits }

// Close releases idle connections. r must not be used afterwards.
func (r *Remote) Close() error {
	r.direct.CloseIdleConnections()
	return nil
}

// IsLoopback reports whether host ("host" or "host:port") names the loopback
// interface: localhost, 127.0.0.0/8 or ::1.
func IsLoopback(host string) bool {
	h := host
	if sh, _, err := net.SplitHostPort(host); err == nil {
		h = sh
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if strings.EqualFold(h, "localhost") || strings.HasSuffix(strings.ToLower(h), ".localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// errPlainHTTP marks a refused plain-HTTP request.
var errPlainHTTP = errors.New("plain HTTP refused")

// schemeGuard sits under ggcr's transports and decides the scheme. Requests
// to httpHost (a loopback registry, or any registry when plain HTTP was asked
// for) go over plain HTTP, like containerd's --plain-http and its localhost
// default, so a stalled loopback registry costs no TLS probe. Any other
// plain-HTTP request is refused unless it goes to loopback or plain HTTP was
// asked for: ggcr alone would fall back to HTTP for private (RFC 1918)
// addresses too.
type schemeGuard struct {
	inner     http.RoundTripper
	plainHTTP bool
	httpHost  string
}

// RoundTrip implements http.RoundTripper.
func (g *schemeGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if g.httpHost != "" && req.URL.Scheme == "https" && strings.EqualFold(req.URL.Host, g.httpHost) {
		req = req.Clone(req.Context())
		req.URL.Scheme = "http"
	}
	if req.URL.Scheme == "http" && !g.plainHTTP && !IsLoopback(req.URL.Host) {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, fmt.Errorf("%w to %s: only loopback registries may use plain HTTP unless plain HTTP is enabled", errPlainHTTP, req.URL.Host)
	}
	return g.inner.RoundTrip(req)
}

// sem returns the connection semaphore of a registry host.
func (r *Remote) sem(host string) chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.sems[host]
	if !ok {
		s = make(chan struct{}, r.opts.maxConns)
		r.sems[host] = s
	}
	return s
}

// acquire takes a connection slot for host; release must be called exactly
// once (it is safe to call it more than once).
func (r *Remote) acquire(ctx context.Context, host string) (release func(), err error) {
	s := r.sem(host)
	select {
	case s <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var once sync.Once
	return func() { once.Do(func() { <-s }) }, nil
}

// transportFor returns an authenticated transport for ref's repository,
// pinging the registry and exchanging tokens the first time.
// w names what the caller is after, for error messages.
func (r *Remote) transportFor(ctx context.Context, ref Reference, plainHTTP bool, w what) (*cachedTransport, error) {
	key := transportKey{host: ref.host(), repository: ref.repository, plainHTTP: plainHTTP}
	r.mu.Lock()
	ct, ok := r.transports[key]
	if ok && time.Since(ct.created) > transportTTL {
		delete(r.transports, key)
		ok = false
	}
	r.mu.Unlock()
	if ok {
		return ct, nil
	}

	var nameOpts []name.Option
	httpHost := ""
	if plainHTTP || IsLoopback(ref.host()) {
		nameOpts = append(nameOpts, name.Insecure)
		httpHost = ref.host()
	}
	repo, err := name.NewRepository(ref.repo.Name(), nameOpts...)
	if err != nil {
		return nil, fmt.Errorf("reference %s: %v: %w", ref, err, errdefs.ErrInvalidArgument)
	}
	auth, err := authn.Resolve(ctx, r.opts.keychain, repo)
	if err != nil {
		// The message of a keychain error names the config file or helper,
		// never a secret.
		return nil, fmt.Errorf("registry %s: reading credentials: %v: %w", ref.registry, err, errdefs.ErrFailedPrecondition)
	}
	w.anonymous = auth == authn.Anonymous
	base := &schemeGuard{inner: r.base, plainHTTP: plainHTTP, httpHost: httpHost}
	scopes := []string{repo.Scope(transport.PullScope)}
	rt, err := transport.NewWithContext(ctx, repo.Registry, auth, base, scopes)
	if err != nil {
		return nil, classifyError(ctx, err, w)
	}
	ct = &cachedTransport{rt: rt, anonymous: w.anonymous, created: time.Now()}
	r.mu.Lock()
	r.transports[key] = ct
	r.mu.Unlock()
	return ct, nil
}

// forget drops a cached transport, e.g. after its credentials were refused.
func (r *Remote) forget(ref Reference, plainHTTP bool) {
	r.mu.Lock()
	delete(r.transports, transportKey{host: ref.host(), repository: ref.repository, plainHTTP: plainHTTP})
	r.mu.Unlock()
}

// client returns an http.Client over rt that never forwards Authorization
// (or cookies) to a different host:port when redirected, e.g. to blob
// storage.
func client(rt http.RoundTripper) *http.Client {
	return &http.Client{
		Transport: rt,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= maxRedirects {
				return fmt.Errorf("stopped after %d redirects", maxRedirects)
			}
			if !strings.EqualFold(req.URL.Host, via[0].URL.Host) {
				req.Header.Del("Authorization")
				req.Header.Del("Cookie")
			}
			return nil
		},
	}
}
