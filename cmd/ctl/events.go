package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/stevedore/stevedore/pkg/client"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
)

// eventTimeFormat is how event times are printed: local time, to the
// millisecond, with the zone.
const eventTimeFormat = "2006-01-02T15:04:05.000Z07:00"

func (a *app) eventsCmd() *cobra.Command {
	var (
		since, format                   string
		fromSeq                         uint64
		all, noFollow                   bool
		types, imgs, ctrs, blobs, pulls []string
		op, actor                       string
	)
	cmd := &cobra.Command{
		Use:   "events [flags]",
		Short: "Show the event log: tail it live, or replay it from a time or sequence",
		Long: `Print the events of the log, the durable record of every state change, one
line each: its time, log sequence (#N), type, what it is about (an image
name, a blob's short digest, a container id, a pull), the node whose worker
recorded it, the actor who asked, the operation id (whole: ids made by one process share their first characters) and a summary of
its payload.

By default ctl prints new events as they are recorded, until interrupted.
--since TIME|DURATION (RFC 3339, or a duration before now such as 10m) or
--from-seq N first replays the log from there and then goes on with new
events: one ordered read, so nothing is missed or printed twice in between.
A late reader sees every event, in order: the log is durable. --no-follow
stops at the end of the log (from its start, unless --since or --from-seq
says otherwise).

Filters combine with "and"; a filter given several times (and the
aggregate filters --image, --container, --blob and --pull among themselves)
with "or". --namespace/-n picks the namespace, --all-namespaces/-A reads
them all. --image is matched as given and as Docker qualifies it (alpine is
docker.io/library/alpine:latest). --pull keeps a pull's own events
(requested, completed, failed); --op keeps every event of an operation,
whatever it is about.

--format json prints one event envelope per line, as stored, with its log
sequence added as "seq".`,
		Example: `  ctl events
  ctl events --since 10m --type pull-failed --type container-create-failed
  ctl events -A --from-seq 1 --no-follow --actor alice@build-7
  ctl events --image alpine:3.20 --since 2026-11-23T08:00:00Z
  ctl events --container web --format json | jq -c '{seq, type, node}'
  ctl events --op 3Y1Bq4zGmTmY0aPZ2xHkQe --from-seq 1 --no-follow`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFormat(format); err != nil {
				return fmt.Errorf("events: %w", err)
			}
			opts := client.EventsOptions{
				AllNamespaces: all, Images: imgs, Containers: ctrs, Pulls: pulls,
				Operation: op, Actor: actor, NoFollow: noFollow,
			}
			if all && cmd.Flags().Changed("namespace") {
				return fmt.Errorf("events: give --namespace or --all-namespaces, not both: %w", errdefs.ErrInvalidArgument)
			}
			if !all {
				opts.Namespace = a.namespace
			}
			for _, t := range types {
				opts.Types = append(opts.Types, events.Type(t))
			}
			for _, b := range blobs {
				d, err := parseDigest(b)
				if err != nil {
					return fmt.Errorf("events: --blob: %w", err)
				}
				opts.Blobs = append(opts.Blobs, d)
			}
			if cmd.Flags().Changed("from-seq") {
				if fromSeq == 0 {
					return fmt.Errorf("events: --from-seq 0: %w: log sequences start at 1", errdefs.ErrInvalidArgument)
				}
				opts.FromSeq = fromSeq
			}
			if since != "" {
				if opts.FromSeq != 0 {
					return fmt.Errorf("events: give --since or --from-seq, not both: %w", errdefs.ErrInvalidArgument)
				}
				t, err := parseTimeOrAgo("--since", since, time.Now())
				if err != nil {
					return fmt.Errorf("events: %w", err)
				}
				opts.Since = t
			}
			c, err := a.logClient()
			if err != nil {
				return err
			}
			emit := func(ev *events.Envelope) error { return writeEventLine(a.stdout, ev) }
			if format == "json" {
				emit = func(ev *events.Envelope) error {
					b, err := client.MarshalEvent(ev)
					if err != nil {
						return err
					}
					_, err = a.stdout.Write(append(b, '\n'))
					return err
				}
			}
			// The client's errors say "events: " already.
			return c.Events(cmd.Context(), opts, emit)
		},
	}
	f := cmd.Flags()
	f.StringVar(&since, "since", "", "replay from this time (RFC 3339) or this long ago (e.g. 10m), then follow")
	f.Uint64Var(&fromSeq, "from-seq", 0, "replay from this log sequence (1: the beginning), then follow")
	f.BoolVar(&noFollow, "no-follow", false, "stop at the end of the log instead of following new events")
	f.BoolVarP(&all, "all-namespaces", "A", false, "read every namespace")
	f.StringArrayVar(&types, "type", nil, "keep events of this type (repeatable)")
	f.StringArrayVar(&imgs, "image", nil, "keep events of this image name (repeatable)")
	f.StringArrayVar(&ctrs, "container", nil, "keep events of this container (repeatable)")
	f.StringArrayVar(&blobs, "blob", nil, "keep events of this blob digest (repeatable)")
	f.StringArrayVar(&pulls, "pull", nil, "keep the events of this pull operation's aggregate (repeatable)")
	f.StringVar(&op, "op", "", "keep events of this operation id")
	f.StringVar(&actor, "actor", "", "keep events caused by this actor")
	f.StringVar(&format, "format", "", `output format: "json" for one envelope per line; empty for one line per event`)
	return cmd
}

// logClient is a.client for a read of the event log: it warns on stderr of
// each event it skips.
func (a *app) logClient() (*client.Client, error) {
	c, err := a.client()
	if err != nil {
		return nil, err
	}
	return c.With(client.WithWarn(a.warnSkipped))
}

// warnSkipped prints a warning for an event of the log that ctl skipped: one
// of a newer schema version than it reads, or a message that is not an
// event.
func (a *app) warnSkipped(s client.SkippedEvent) {
	if s.Newer() && s.Event != nil {
		fmt.Fprintf(a.stderr, "ctl: skipped event #%d (%s): schema v%d is newer than this ctl understands (upgrade ctl)\n", s.Seq, s.Event.Type, s.Event.Version)
		return
	}
	fmt.Fprintf(a.stderr, "ctl: skipped event #%d on %s: %s\n", s.Seq, s.Subject, s.Reason())
}

// writeEventLine prints ev as one line: time, #seq, type, aggregate, node,
// actor, short op and payload summary.
func writeEventLine(w io.Writer, ev *events.Envelope) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s  #%-6d %-26s %-36s", ev.Time.Local().Format(eventTimeFormat), ev.Seq, ev.Type, client.DescribeAggregate(ev))
	if ev.Namespace != "" && ev.Namespace != events.DefaultNamespace {
		fmt.Fprintf(&b, "  ns=%s", ev.Namespace)
	}
	fmt.Fprintf(&b, "  node=%s  actor=%s  op=%s", orDash(ev.Node), orDash(ev.Actor), orDash(ev.Operation))
	if s := client.Summary(ev); s != "" {
		b.WriteString("  ")
		b.WriteString(s)
	}
	b.WriteByte('\n')
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write event: %w", err)
	}
	return nil
}

// parseTimeOrAgo reads a time as RFC 3339 or as a duration before now.
func parseTimeOrAgo(flag, s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return time.Time{}, fmt.Errorf("%s %q: %w: a duration before now must be positive", flag, s, errdefs.ErrInvalidArgument)
		}
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%s %q: %w: want a time (RFC 3339, e.g. 2026-11-23T08:41:07Z) or a duration before now (e.g. 10m, 1h30m)",
		flag, s, errdefs.ErrInvalidArgument)
}

// parseLogPoint reads --at: a log sequence (digits), an RFC 3339 time, or
// a duration before now.
func parseLogPoint(s string, now time.Time) (client.LogPoint, error) {
	if s != "" && strings.Trim(s, "0123456789") == "" {
		seq, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return client.LogPoint{}, fmt.Errorf("--at %q: %w: not a log sequence: %w", s, errdefs.ErrInvalidArgument, err)
		}
		if seq == 0 {
			return client.LogPoint{}, fmt.Errorf("--at 0: %w: log sequences start at 1", errdefs.ErrInvalidArgument)
		}
		return client.LogPoint{Seq: seq}, nil
	}
	t, err := parseTimeOrAgo("--at", s, now)
	if err != nil {
		return client.LogPoint{}, fmt.Errorf("%w (or a log sequence, e.g. 1234)", err)
	}
	return client.LogPoint{Time: t}, nil
}
