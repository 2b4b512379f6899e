package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/client"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
	"github.com/stevedore/stevedore/pkg/progress"
)

// pullOutcome is what `pull --format json` prints.
type pullOutcome struct {
	Operation string        `json:"operation"`
	Ref       string        `json:"ref"`
	State     string        `json:"state"` // api.OpCompleted or api.OpFailed
	Target    digest.Digest `json:"target,omitempty"`
	Size      int64         `json:"size,omitempty"`
	Blobs     int           `json:"blobs,omitempty"`
	Code      string        `json:"code,omitempty"`
	Message   string        `json:"message,omitempty"`
	Digest    digest.Digest `json:"digest,omitempty"` // the blob a failure names
	ElapsedMS int64         `json:"elapsed_ms"`
}

func (a *app) pullCmd() *cobra.Command {
	var (
		req      api.PullRequest
		noUnpack bool
		quiet    bool
		format   string
	)
	cmd := &cobra.Command{
		Use:   "pull [flags] REF",
		Short: "Pull an image from a registry",
		Long: `Pull asks the gateway to pull the image REF: its blobs are fetched into the
node's content store and its layers unpacked into snapshots (one per layer,
keyed by chainID) by the node's unpacker. The pull ends when the image's
rootfs is ready on the node, so a container can start from it at once.
With --no-unpack the pull only fetches, and ends once every blob is in the
content store.

The first line is the reference and its state: resolved, unpacking while
downloaded layers wait for their snapshots, and unpacked at the end. Then one
line per blob (index, manifest, config, layers) with its state: waiting,
downloading (with bytes so far), done, exists (already in the store, nothing
to download) and, for a layer, unpacked (its snapshot is applied, or was
there already). Once a layer is unpacked a line counts them ("unpacked 1/3
layers"); the last line is the elapsed time, the bytes fetched and the rate.
On a terminal the lines are redrawn in place; otherwise one line is printed
per state change, so logs stay readable.

ctl exits with status 0 when the pull completes, and prints
"ctl: pull REF: <why>" and exits with status 1 when it fails (to fetch or
to unpack).

Ctrl-C stops ctl from waiting, not the pull: the pull goes on in the system,
and "ctl ops get ID" shows how it ends.`,
		Example: `  ctl pull docker.io/library/alpine:3.20
  ctl pull --platform linux/arm64 alpine:3.20
  ctl pull --no-unpack alpine:3.20
  ctl pull --plain-http registry.lan:5000/app:dev
  ctl pull -q alpine:3.20 && echo pulled
  ctl pull --format json alpine:3.20 | jq -r .target`,
		Args: exactArgs(1, "REF"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			req.Ref = args[0]
			req.Unpack = !noUnpack
			return a.pull(cmd.Context(), req, quiet, format)
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Platform, "platform", "", `platform to pull, "os/arch[/variant]" (default: the gateway host's)`)
	f.BoolVar(&req.PlainHTTP, "plain-http", false, "allow plain HTTP to a registry that is not on loopback")
	f.BoolVar(&noUnpack, "no-unpack", false, "only fetch: leave the layers in the content store, not unpacked into snapshots")
	f.BoolVarP(&quiet, "quiet", "q", false, "show no progress; print only the reference when done")
	f.StringVar(&format, "format", "", `"json" prints the outcome as one JSON object instead of progress`)
	return cmd
}

func (a *app) pull(ctx context.Context, req api.PullRequest, quiet bool, format string) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	start := time.Now()
	op, err := c.Pull(ctx, req)
	if err != nil {
		return fmt.Errorf("pull %s: %w", req.Ref, err)
	}
	ref := req.Ref
	if op.Ref != "" {
		ref = op.Ref
	}

	var fn func(client.Update)
	var r *progress.Renderer
	stopTicks := func() {}
	if !quiet && format == "" {
		r = progress.New(a.stdout, progress.Config{Ref: ref, TTY: a.tty, Width: a.width, Unpack: req.Unpack})
		fn = r.Update
		if a.tty {
			stopTicks = tickEvery(100*time.Millisecond, r.Tick)
		}
	}
	last, werr := c.Wait(ctx, op, fn)
	stopTicks()
	if r != nil {
		if err := r.Finish(); err != nil {
			return err
		}
	}
	if last == nil {
		if ctx.Err() != nil {
			return &exitError{code: 130, err: fmt.Errorf("pull %s: stopped waiting; the pull goes on in the system (`ctl ops get %s` shows how it ends)", req.Ref, op.Operation)}
		}
		return fmt.Errorf("pull %s: %w", req.Ref, werr)
	}

	if format == "json" {
		out := outcome(op, ref, last, time.Since(start))
		if err := writeJSON(a.stdout, out); err != nil {
			return err
		}
	} else if quiet && werr == nil {
		fmt.Fprintln(a.stdout, ref)
	}
	if werr != nil {
		return fmt.Errorf("pull %s: %w", req.Ref, werr)
	}
	return nil
}

// outcome summarizes a pull's terminal event.
func outcome(op api.OpReply, ref string, term *events.Envelope, elapsed time.Duration) pullOutcome {
	out := pullOutcome{Operation: op.Operation, Ref: ref, ElapsedMS: elapsed.Milliseconds()}
	switch term.Type {
	case events.TypePullCompleted:
		var p events.PullCompleted
		_ = term.Decode(&p) // a payload we cannot read leaves the fields empty
		out.State, out.Target, out.Size, out.Blobs = api.OpCompleted, p.Target, p.Size, p.Blobs
	default:
		var p events.PullFailed
		_ = term.Decode(&p)
		out.State, out.Code, out.Message, out.Digest = api.OpFailed, p.Code, p.Message, p.Digest
		if out.Code == "" {
			out.Code = errdefs.Code(errdefs.ErrInternal)
		}
	}
	return out
}

// tickEvery calls fn every d until the returned stop function is called;
// stop returns once fn is no longer running.
func tickEvery(d time.Duration, fn func()) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fn()
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(done) })
		wg.Wait()
	}
}
