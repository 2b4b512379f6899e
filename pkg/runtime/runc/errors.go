package runc

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/stevedore/stevedore/pkg/errdefs"
)

// runcMessage extracts the last error message runc logged (in JSON, with
// --log-format json) from text: a go-runc error string or runc's log file.
// It returns "" if there is none.
func runcMessage(text string) string {
	var msg string
	for _, line := range strings.Split(text, "\n") {
		i := strings.Index(line, "{")
		if i < 0 {
			continue
		}
		var l struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal([]byte(line[i:]), &l) == nil && l.Msg != "" && (l.Level == "error" || l.Level == "fatal") {
			msg = l.Msg
		}
	}
	return msg
}

// lastRuncLogError returns the last error in runc's JSON log file.
func lastRuncLogError(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return runcMessage(string(data))
}

// classify returns the errdefs class for a runc error message.
func classify(msg string) error {
	switch {
	case strings.Contains(msg, "does not exist"):
		return errdefs.ErrNotFound
	case strings.Contains(msg, "already exists"):
		return errdefs.ErrAlreadyExists
	case strings.Contains(msg, "not running"), strings.Contains(msg, "not stopped"),
		strings.Contains(msg, "is paused"), strings.Contains(msg, "already stopped"):
		return errdefs.ErrFailedPrecondition
	case strings.Contains(msg, "exec: "), strings.Contains(msg, "executable file not found"):
		// The command is missing from the image or cannot be executed.
		return errdefs.ErrInvalidArgument
	case strings.Contains(msg, "permission denied"):
		return errdefs.ErrPermissionDenied
	default:
		return errdefs.ErrFailedPrecondition
	}
}

// runcError wraps an error from a go-runc call for operation op on id with
// runc's own message and an errdefs class.
func runcError(op, id string, err error) error {
	msg := runcMessage(err.Error())
	if msg == "" {
		msg = strings.TrimSpace(err.Error())
	}
	return fmt.Errorf("runc %s %s: %s: %w", op, id, msg, classify(msg))
}

// classedError is an error message with its class kept apart, so the
// monitor can send both to Start.
type classedError struct {
	msg   string
	class error
}

// Error returns the message and the class.
func (e *classedError) Error() string { return e.msg + ": " + e.class.Error() }

// Unwrap returns the class.
func (e *classedError) Unwrap() error { return e.class }

// classed returns an error with message msg in class.
func classed(class error, format string, args ...any) error {
	return &classedError{msg: fmt.Sprintf(format, args...), class: class}
}

// toReady turns a start failure into the monitor's report.
func toReady(err error) readyMsg {
	var ce *classedError
	if errors.As(err, &ce) {
		return readyMsg{Error: ce.msg, Code: errdefs.Code(ce.class)}
	}
	return readyMsg{Error: err.Error(), Code: errdefs.Code(err)}
}
