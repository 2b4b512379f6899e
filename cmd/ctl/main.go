// Command ctl is Stevedore's command-line client: a thin front over
// pkg/client that talks to the gateway over NATS. It pulls images with live
// progress and lists and removes images, content and operations.
//
// Run `ctl --help` for the commands.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(report(os.Stderr, err))
}

// exitError carries an exit status other than 1.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// report prints err, one "ctl: " line per line of its message, and returns
// the exit status: 0 without an error, the exitError's status, or 1.
func report(w io.Writer, err error) int {
	if err == nil {
		return 0
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		fmt.Fprintf(w, "ctl: %s\n", line)
	}
	if ee := (*exitError)(nil); errors.As(err, &ee) {
		return ee.code
	}
	return 1
}
