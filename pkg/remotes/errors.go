package remotes

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/stevedore/stevedore/pkg/errdefs"
)

// StatusError is returned when a registry answers with an unexpected HTTP
// status. It wraps the errdefs class of the status, so callers can branch
// with errors.Is (errdefs.ErrNotFound for 404) or errors.As to a
// *StatusError for the code:
//
//	401 → errdefs.ErrUnauthenticated
//	403 → errdefs.ErrPermissionDenied
//	404 → errdefs.ErrNotFound
//	429, 5xx → errdefs.ErrUnavailable (Temporary reports true)
//	other 4xx → errdefs.ErrInvalidArgument
//
// Neither URL nor Message ever holds credentials or tokens.
type StatusError struct {
	// StatusCode is the HTTP status the registry answered with.
	StatusCode int
	// Method is the HTTP method of the failed request.
	Method string
	// URL is the request URL without user info and without a query (which
	// may hold signatures for blob storage).
	URL string
	// Message says what failed in words a person understands, e.g.
	// "registry 127.0.0.1:5000: manifest for app:1.0 not found (404)".
	Message string

	class error
}

// Error returns Message.
func (e *StatusError) Error() string { return e.Message }

// Unwrap returns the errdefs class of the status.
func (e *StatusError) Unwrap() error { return e.class }

// Temporary reports whether retrying the same request later may succeed
// (429 and 5xx).
func (e *StatusError) Temporary() bool { return isTemporaryStatus(e.StatusCode) }

func isTemporaryStatus(code int) bool {
	return code == http.StatusTooManyRequests || code == http.StatusRequestTimeout || code >= 500
}

// classOf maps an HTTP status to an errdefs class.
func classOf(code int) error {
	switch {
	case code == http.StatusUnauthorized:
		return errdefs.ErrUnauthenticated
	case code == http.StatusForbidden:
		return errdefs.ErrPermissionDenied
	case code == http.StatusNotFound:
		return errdefs.ErrNotFound
	case isTemporaryStatus(code):
		return errdefs.ErrUnavailable
	case code >= 400:
		return errdefs.ErrInvalidArgument
	}
	return errdefs.ErrInternal
}

// redactURL strips user info and the query from u.
func redactURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	c := *u
	c.User = nil
	c.RawQuery = ""
	c.ForceQuery = false
	c.Fragment = ""
	return c.String()
}

// what describes the object of a request for messages: "manifest for
// app:1.0", "blob sha256:… of app".
type what struct {
	registry string // as the user wrote it
	object   string
	// anonymous is true when no credentials were found for the registry.
	anonymous bool
}

// registryMessage extracts the registry's own explanation from an OCI
// distribution error body, bounded and on one line.
func registryMessage(body []byte) string {
	var e struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &e) != nil || len(e.Errors) == 0 {
		return ""
	}
	var parts []string
	for _, d := range e.Errors {
		s := strings.TrimSpace(d.Code + ": " + d.Message)
		s = strings.Trim(s, ": ")
		if s != "" {
			parts = append(parts, s)
		}
	}
	msg := strings.Join(parts, "; ")
	msg = strings.Join(strings.Fields(msg), " ")
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	return msg
}

// newStatusError builds the StatusError for resp, reading (a bounded amount
// of) its body for the registry's explanation. It does not close the body.
func newStatusError(resp *http.Response, w what) *StatusError {
	var regMsg string
	if resp.Body != nil {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
		regMsg = registryMessage(body)
	}
	method, u := "", ""
	if resp.Request != nil {
		method, u = resp.Request.Method, redactURL(resp.Request.URL)
	}
	return statusError(resp.StatusCode, method, u, regMsg, w)
}

func statusError(code int, method, u, regMsg string, w what) *StatusError {
	text := http.StatusText(code)
	var msg string
	switch {
	case code == http.StatusUnauthorized:
		if w.anonymous {
			msg = fmt.Sprintf("%s: authentication required (401) and no credentials are configured for %s (docker login %s)", w.object, w.registry, w.registry)
		} else {
			msg = fmt.Sprintf("%s: the credentials configured for %s were refused (401)", w.object, w.registry)
		}
	case code == http.StatusForbidden:
		msg = fmt.Sprintf("access to %s denied (403)", w.object)
	case code == http.StatusNotFound:
		msg = fmt.Sprintf("%s not found (404)", w.object)
	case code == http.StatusTooManyRequests:
		msg = fmt.Sprintf("too many requests for %s (429); retry later", w.object)
	case code >= 500:
		msg = fmt.Sprintf("server error for %s (%d %s); retry later", w.object, code, text)
	default:
		msg = fmt.Sprintf("request for %s refused (%d %s)", w.object, code, text)
	}
	if regMsg != "" && code != http.StatusNotFound {
		msg += ": " + regMsg
	}
	return &StatusError{
		StatusCode: code,
		Method:     method,
		URL:        u,
		Message:    "registry " + w.registry + ": " + msg,
		class:      classOf(code),
	}
}

// classifyError turns an error from the HTTP stack (dial, TLS, ggcr's
// authenticating transport, context) into one that wraps an errdefs class
// and says what happened without credentials.
func classifyError(ctx context.Context, err error, w what) error {
	if err == nil {
		return nil
	}
	var se *StatusError
	if errors.As(err, &se) {
		return se
	}
	prefix := "registry " + w.registry + ": " + w.object
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("%s: %w (%w)", prefix, ctxErr, errdefs.ErrUnavailable)
	}
	var te *transport.Error
	if errors.As(err, &te) {
		method, u := "", ""
		if te.Request != nil {
			method, u = te.Request.Method, redactURL(te.Request.URL)
		}
		regMsg := ""
		if len(te.Errors) > 0 {
			var parts []string
			for _, d := range te.Errors {
				parts = append(parts, strings.Trim(string(d.Code)+": "+d.Message, ": "))
			}
			regMsg = strings.Join(parts, "; ")
		}
		tw := w
		if te.Request != nil && te.Request.URL != nil && !strings.HasPrefix(te.Request.URL.Path, "/v2/") {
			// The token service refused the exchange.
			tw.object = w.object + " (token service " + te.Request.URL.Host + ")"
		} else if te.Request != nil && te.Request.URL != nil && te.Request.URL.Path == "/v2/" {
			tw.object = w.object + " (API version check /v2/)"
		}
		return statusError(te.StatusCode, method, u, regMsg, tw)
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		if dnsErr.IsNotFound {
			return fmt.Errorf("%s: registry host %s not found (DNS lookup: no such host): %w", prefix, dnsErr.Name, errdefs.ErrNotFound)
		}
		return fmt.Errorf("%s: cannot resolve registry host %s: %v: %w", prefix, dnsErr.Name, dnsErr.Err, errdefs.ErrUnavailable)
	}
	var certErr *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	if errors.As(err, &certErr) || errors.As(err, &unknownAuth) || errors.As(err, &hostErr) {
		return fmt.Errorf("%s: the registry's TLS certificate is not trusted: %v: %w", prefix, rootCause(err), errdefs.ErrFailedPrecondition)
	}
	if strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		return fmt.Errorf("%s: the registry speaks plain HTTP, which is allowed only for loopback registries or with plain HTTP enabled: %w", prefix, errdefs.ErrFailedPrecondition)
	}
	if errors.Is(err, errPlainHTTP) {
		return fmt.Errorf("%s: %v: %w", prefix, rootCause(err), errdefs.ErrFailedPrecondition)
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s: cannot connect: connection refused: %w", prefix, errdefs.ErrUnavailable)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%s: timed out: %v: %w", prefix, rootCause(err), errdefs.ErrUnavailable)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
		return fmt.Errorf("%s: connection lost: %v: %w", prefix, rootCause(err), errdefs.ErrUnavailable)
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		return fmt.Errorf("%s: network error: %v: %w", prefix, rootCause(err), errdefs.ErrUnavailable)
	}
	return fmt.Errorf("%s: %v: %w", prefix, rootCause(err), errdefs.ErrUnavailable)
}

// rootCause drops the *url.Error wrapper, whose text repeats the URL.
func rootCause(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
