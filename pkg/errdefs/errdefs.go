// Package errdefs defines the error classes Stevedore uses across package and
// process boundaries. Errors are classes, not types: wrap one with %w and
// branch on it with errors.Is.
package errdefs

import "errors"

// The error classes. Every error that crosses a package boundary should wrap
// at most one of these, so callers can decide what to do with errors.Is.
var (
	// ErrInvalidArgument: the request is malformed (a bad reference, a bad digest).
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNotFound: the named thing does not exist.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: the thing being created is already there. For content
	// this is a success: the bytes are present and verified.
	ErrAlreadyExists = errors.New("already exists")
	// ErrFailedPrecondition: the state does not allow the operation now.
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrUnavailable: a resource is busy or temporarily unreachable; retry later.
	ErrUnavailable = errors.New("unavailable")
	// ErrUnauthenticated: credentials are missing or were refused.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrPermissionDenied: the caller is known but not allowed.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrDataLoss: bytes did not match their digest or size.
	ErrDataLoss = errors.New("data loss")
	// ErrResourceExhausted: a limit was exceeded (size, depth, count).
	ErrResourceExhausted = errors.New("resource exhausted")
	// ErrInternal: a bug or an unexpected state.
	ErrInternal = errors.New("internal")
)

// Code returns a short, stable name for the class err belongs to, used on the
// wire (API error headers, failure events). Unknown errors are "internal".
func Code(err error) string {
	for _, c := range classes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return "internal"
}

// FromCode returns the class for a code produced by Code, or ErrInternal.
func FromCode(code string) error {
	for _, c := range classes {
		if c.code == code {
			return c.err
		}
	}
	return ErrInternal
}

var classes = []struct {
	code string
	err  error
}{
	{"invalid_argument", ErrInvalidArgument},
	{"not_found", ErrNotFound},
	{"already_exists", ErrAlreadyExists},
	{"failed_precondition", ErrFailedPrecondition},
	{"unavailable", ErrUnavailable},
	{"unauthenticated", ErrUnauthenticated},
	{"permission_denied", ErrPermissionDenied},
	{"data_loss", ErrDataLoss},
	{"resource_exhausted", ErrResourceExhausted},
	{"internal", ErrInternal},
}
