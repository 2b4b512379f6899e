package events

import "errors"

// ErrPermanent marks a handler error that no redelivery can fix.
var ErrPermanent = errors.New("permanent failure")

type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() []error {
	return []error{p.err, ErrPermanent}
}

// Permanent marks err as permanent: the event is not redelivered and the
// consumer's FailureFunc records the failure. Its message is unchanged, and
// errors.Is still matches err's own class.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool { return errors.Is(err, ErrPermanent) }
