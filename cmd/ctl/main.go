// Command ctl is Stevedore's command-line client: a thin front over
// pkg/client that talks to the gateway over NATS. It pulls images with live
// progress, runs containers (streaming their output, passing on their exit
// status and forwarding Ctrl-C to them), and lists and removes images,
// containers, tasks, content, snapshots and operations.
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
	"sync"
	"syscall"
)

func main() {
	in := &interrupts{}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		for sig := range sigs {
			in.deliver(signalName(sig))
		}
	}()
	err := runWith(context.Background(), args{argv: os.Args[1:], stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, interrupts: in})
	signal.Stop(sigs)
	os.Exit(report(os.Stderr, err))
}

// signalName names the signals ctl catches as the API does.
func signalName(sig os.Signal) string {
	switch sig {
	case os.Interrupt:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	}
	return sig.String()
}

// interrupts routes the signals ctl catches (SIGINT, SIGTERM). By default
// the first one cancels the command's context, so a command stops waiting;
// a command attached to a task takes them over (take) and forwards them to
// the task instead.
type interrupts struct {
	mu      sync.Mutex
	cancel  context.CancelFunc
	fired   bool
	forward chan string
}

// deliver handles one signal.
func (i *interrupts) deliver(sig string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.forward != nil {
		select {
		case i.forward <- sig:
		default: // the task has plenty to handle already
		}
		return
	}
	i.fired = true
	if i.cancel != nil {
		i.cancel()
	}
}

// setCancel sets what the default handling cancels (at once if a signal
// already came).
func (i *interrupts) setCancel(cancel context.CancelFunc) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.cancel = cancel
	if i.fired {
		cancel()
	}
}

// take makes signals go to the returned channel, until release.
func (i *interrupts) take() (sigs <-chan string, release func()) {
	ch := make(chan string, 8)
	i.mu.Lock()
	i.forward = ch
	i.mu.Unlock()
	return ch, func() {
		i.mu.Lock()
		i.forward = nil
		i.mu.Unlock()
	}
}

// exitError carries an exit status other than 1.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// exitStatus is an exit status ctl exits with without printing anything: a
// task's, passed on.
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// report prints err, one "ctl: " line per line of its message, and returns
// the exit status: 0 without an error, the exitStatus or exitError's
// status, or 1.
func report(w io.Writer, err error) int {
	if err == nil {
		return 0
	}
	if es := exitStatus(0); errors.As(err, &es) {
		return int(es)
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		fmt.Fprintf(w, "ctl: %s\n", line)
	}
	if ee := (*exitError)(nil); errors.As(err, &ee) {
		return ee.code
	}
	return 1
}
