package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/client"
	"github.com/stevedore/stevedore/pkg/errdefs"
)

func (a *app) historyCmd() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "history image REF | container ID | op ID",
		Short: "Tell the story of an image, a container or an operation from the event log",
		Long: `Print, in log order, every event of one image, container or operation: when
(TIME), how long after the previous event (STEP) and after the first
(ELAPSED), what happened (TYPE, and a summary), to what (AGGREGATE), which
node's worker recorded it (NODE), who asked (ACTOR) and in which operation
(OP). Then, per operation, how it ended: completed or failed (with the
message), how long it took and on which nodes.

image REF: the image's own events, and every pull that asked for REF with
  all of its blob, layer and image events; REF is matched as given and as
  Docker qualifies it.
container ID: the container's and its task's events.
op ID: every event of the operation, in any namespace.

Images and containers are looked up in the namespace (-n). --format json
prints {"kind", "id", "events": [{"seq", "event", "step_ns", "elapsed_ns",
"outcome", …}], "operations": [...]}.`,
		Example: `  ctl history image alpine:3.20
  ctl history container web
  ctl history op 3Y1Bq4zGmTmY0aPZ2xHkQe
  ctl history op 3Y1Bq4zGmTmY0aPZ2xHkQe --format json | jq -r '.events[] | [.seq, .event.node, .event.type] | @tsv'`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := exactArgs(2, "KIND and ID")(cmd, args); err != nil {
				return err
			}
			switch args[0] {
			case client.HistoryImage, client.HistoryContainer, client.HistoryOp:
				return nil
			}
			return fmt.Errorf("history: unknown kind %q: want image, container or op (see `%s --help`): %w", args[0], cmd.CommandPath(), errdefs.ErrInvalidArgument)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format); err != nil {
				return fmt.Errorf("history: %w", err)
			}
			c, err := a.logClient()
			if err != nil {
				return err
			}
			kind, id := args[0], args[1]
			entries, err := c.History(cmd.Context(), kind, id)
			if err != nil {
				return err
			}
			ops := client.Outcomes(entries)
			if format == "json" {
				if ops == nil {
					ops = []client.OpOutcome{}
				}
				return writeJSON(a.stdout, struct {
					Kind       string                `json:"kind"`
					ID         string                `json:"id"`
					Events     []client.HistoryEntry `json:"events"`
					Operations []client.OpOutcome    `json:"operations"`
				}{kind, id, entries, ops})
			}
			return a.printHistory(entries, ops)
		},
	}
	cmd.Flags().StringVar(&format, "format", "", formatFlagHelp)
	return cmd
}

func (a *app) printHistory(entries []client.HistoryEntry, ops []client.OpOutcome) error {
	tw := newTable(a.stdout, "SEQ", "TIME", "STEP", "ELAPSED", "TYPE", "AGGREGATE", "NODE", "ACTOR", "OP", "SUMMARY")
	for i, e := range entries {
		ev := e.Event
		step, elapsed := "-", "-"
		if i > 0 {
			step, elapsed = "+"+client.RoundDuration(e.Step).String(), "+"+client.RoundDuration(e.Elapsed).String()
		}
		summary := client.Summary(ev)
		if e.Outcome == api.OpCompleted {
			summary = strings.TrimSpace(summary + " [" + e.Outcome + "]")
		}
		row(tw, fmt.Sprint(e.Seq), ev.Time.Local().Format(eventTimeFormat), step, elapsed, string(ev.Type),
			client.DescribeAggregate(ev), orDash(ev.Node), orDash(ev.Actor), orDash(ev.Operation), orDash(summary))
	}
	if err := flush(tw); err != nil {
		return err
	}
	if len(ops) == 0 {
		return nil
	}
	fmt.Fprintln(a.stdout)
	tw = newTable(a.stdout, "OPERATION", "REQUEST", "ACTOR", "STATE", "TOOK", "EVENTS", "NODES", "MESSAGE")
	for _, o := range ops {
		took := client.RoundDuration(o.Duration).String()
		if o.State == api.OpRunning {
			took = "≥ " + took
		}
		msg := o.Message
		if o.Code != "" {
			msg += " (" + o.Code + ")"
		}
		row(tw, o.Operation, string(o.Request), orDash(o.Actor), o.State, took, fmt.Sprint(o.Events),
			orDash(strings.Join(o.Nodes, ",")), orDash(msg))
	}
	return flush(tw)
}

// atFlagHelp is the help of the --at flag of ps and images.
const atFlagHelp = "show the view as it was at this log sequence, time (RFC 3339) or duration ago (e.g. 1h), replayed from the log"

// withAt adds --at to a listing command (and its "ls" subcommand): with it,
// the gateway replays the log up to that point and the listing shows what
// it was then; what is api.ViewAtImages or api.ViewAtContainers.
func (a *app) withAt(cmd *cobra.Command, what string) *cobra.Command {
	wrap := func(c *cobra.Command, path string) {
		var at string
		c.Flags().StringVar(&at, "at", "", atFlagHelp)
		c.Example += "\n  ctl " + path + " --at 1h\n  ctl " + path + " --at 1234"
		orig := c.RunE
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("at") {
				return orig(cmd, args)
			}
			return a.listAt(cmd, what, at)
		}
	}
	wrap(cmd, cmd.Name())
	for _, sub := range cmd.Commands() {
		if sub.Name() == "ls" {
			wrap(sub, cmd.Name()+" ls")
		}
	}
	return cmd
}

// listAt prints a listing as of a past point of the log.
func (a *app) listAt(cmd *cobra.Command, what, at string) error {
	format, _ := cmd.Flags().GetString("format")
	quiet, _ := cmd.Flags().GetBool("quiet")
	all, _ := cmd.Flags().GetBool("all")
	if err := checkFormat(format); err != nil {
		return fmt.Errorf("%s: %w", name(cmd), err)
	}
	point, err := parseLogPoint(at, time.Now())
	if err != nil {
		return fmt.Errorf("%s: %w", name(cmd), err)
	}
	c, err := a.client()
	if err != nil {
		return err
	}
	r, err := c.ViewAt(cmd.Context(), what, point)
	if err != nil {
		return fmt.Errorf("%s --at %s: %w", name(cmd), at, err)
	}
	if !quiet && format == "" {
		fmt.Fprintln(a.stderr, asOf(r))
	}
	switch what {
	case api.ViewAtImages:
		imgs := r.Images
		if imgs == nil {
			imgs = []api.Image{}
		}
		switch {
		case format == "json":
			return writeJSON(a.stdout, imagesJSON(imgs))
		case quiet:
			for _, img := range imgs {
				fmt.Fprintln(a.stdout, img.Name)
			}
			return nil
		}
		now := time.Now()
		tw := newTable(a.stdout, "REF", "TYPE", "DIGEST", "SIZE", "CREATED", "PLATFORM", "UNPACKED")
		for _, img := range imgs {
			created := "-"
			if img.Created != nil {
				created = ago(now, *img.Created)
			}
			unpacked := "no"
			for _, n := range img.Unpacked {
				if n == a.node {
					unpacked = "yes"
				}
			}
			row(tw, img.Name, orDash(img.Target.MediaType), orDash(img.Target.Digest.String()),
				client.Bytes(img.Size), created, orDash(img.Platform), unpacked)
		}
		return flush(tw)
	}
	tasks := []taskJSON{}
	for _, ctr := range r.Containers {
		if all || ctr.Task.Status == api.TaskRunning {
			tasks = append(tasks, taskJSON{ID: ctr.ID, Node: ctr.Node, Task: ctr.Task})
		}
	}
	switch {
	case format == "json":
		return writeJSON(a.stdout, tasks)
	case quiet:
		for _, t := range tasks {
			fmt.Fprintln(a.stdout, t.ID)
		}
		return nil
	}
	now := time.Now()
	tw := newTable(a.stdout, "ID", "PID", "STATUS", "EXIT CODE", "STARTED", "EXITED")
	for _, t := range tasks {
		pid, code := "-", "-"
		if t.Pid > 0 && t.Status == api.TaskRunning {
			pid = fmt.Sprint(t.Pid)
		}
		if t.ExitCode != nil {
			code = fmt.Sprint(*t.ExitCode)
			if t.Signal != "" {
				code += " (" + t.Signal + ")"
			}
		}
		status := t.Status
		if status == "" {
			status = api.TaskCreated
		}
		row(tw, t.ID, pid, status, code, ago(now, t.StartedAt), ago(now, t.ExitedAt))
	}
	return flush(tw)
}

// asOf says which point of the log a past view reflects.
func asOf(r api.ViewAtReply) string {
	var s string
	if r.Seq == 0 {
		s = "as of the start of the log (no events before that point)"
	} else {
		s = fmt.Sprintf("as of event #%d", r.Seq)
		if !r.Time.IsZero() {
			s += " (" + r.Time.Local().Format(eventTimeFormat) + ")"
		}
	}
	if r.FirstSeq > 1 {
		s += fmt.Sprintf("; events before #%d have aged out of the log", r.FirstSeq)
	}
	return s
}
