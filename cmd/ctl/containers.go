package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
)

// logsPoll is how often "ctl logs -f" looks for more output.
const logsPoll = 200 * time.Millisecond

func (a *app) containersCmd() *cobra.Command {
	var (
		quiet  bool
		format string
	)
	list := func(cmd *cobra.Command, _ []string) error {
		if err := checkFormat(format); err != nil {
			return err
		}
		return a.containersList(cmd.Context(), quiet, format)
	}
	listFlags := func(cmd *cobra.Command) {
		cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print container ids only")
		cmd.Flags().StringVar(&format, "format", "", formatFlagHelp)
	}
	const listLong = `List the containers of the namespace, running or not: their ID, the IMAGE
they were created from, their STATUS as docker shows it ("Created",
"Up 5 seconds", "Exited (3) 2 minutes ago"), when they were CREATED, and the
NODE they are on.

--format json prints them as a JSON array, with their labels and tasks.`
	const listExample = `  ctl containers
  ctl c ls -q
  ctl containers ls --format json | jq -r '.[] | select(.task.status == "stopped") | .id'`
	cmd := &cobra.Command{
		Use:     "containers",
		Aliases: []string{"container", "c"},
		Short:   "List, inspect, label and remove containers",
		Long:    listLong + "\n\nSubcommands: ls (the default), info, rm and label.",
		Example: listExample + "\n  ctl container info web\n  ctl c rm -f web\n  ctl c label web team=a tier=",
		Args:    cobra.NoArgs,
		RunE:    list,
	}
	listFlags(cmd)
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List containers",
		Long:    listLong,
		Example: listExample,
		Args:    cobra.NoArgs,
		RunE:    list,
	}
	listFlags(ls)
	info := &cobra.Command{
		Use:     "info ID",
		Aliases: []string{"inspect"},
		Short:   "Show a container, with its runtime spec",
		Long: `Print container ID as JSON: its image and image digest, node, snapshot, labels,
whether it is removed when its task exits (rm), its task (status, pid, exit
code, signal, OOM kill, start and exit times) and the OCI runtime spec the
task runs with.`,
		Example: `  ctl containers info web
  ctl c info web | jq .spec.process.args`,
		Args: exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			ctr, err := c.Container(cmd.Context(), args[0])
			if err != nil {
				return fmt.Errorf("containers info %s: %w", args[0], err)
			}
			return writeJSON(a.stdout, ctr)
		},
	}
	label := &cobra.Command{
		Use:   "label ID KEY=VALUE...",
		Short: "Set or remove a container's labels",
		Long: `Set the labels KEY=VALUE on container ID; "KEY=" (an empty value) removes
the label KEY. The other labels stay as they are. The id is printed.`,
		Example: `  ctl containers label web team=a tier=frontend
  ctl c label web tier=`,
		Args: needArgs(2, "ID and KEY=VALUE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			labels := map[string]string{}
			for _, kv := range args[1:] {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return fmt.Errorf("containers label: %q: want KEY=VALUE, or KEY= to remove the label: %w", kv, errdefs.ErrInvalidArgument)
				}
				labels[k] = v
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			if _, err := c.ContainerLabel(cmd.Context(), args[0], labels); err != nil {
				return fmt.Errorf("containers label %s: %w", args[0], err)
			}
			fmt.Fprintln(a.stdout, args[0])
			return nil
		},
	}
	cmd.AddCommand(ls, info, a.removeCmd("rm"), label)
	return cmd
}

func (a *app) containersList(ctx context.Context, quiet bool, format string) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	ctrs, err := c.Containers(ctx)
	if err != nil {
		return fmt.Errorf("containers: %w", err)
	}
	switch {
	case format == "json":
		return writeJSON(a.stdout, ctrs)
	case quiet:
		for _, ctr := range ctrs {
			fmt.Fprintln(a.stdout, ctr.ID)
		}
		return nil
	}
	now := time.Now()
	tw := newTable(a.stdout, "ID", "IMAGE", "STATUS", "CREATED", "NODE")
	for _, ctr := range ctrs {
		row(tw, ctr.ID, orDash(ctr.Image), containerStatus(now, ctr.Task), ago(now, ctr.Created), orDash(ctr.Node))
	}
	return flush(tw)
}

// containerStatus is a container's status as docker shows it.
func containerStatus(now time.Time, t api.Task) string {
	switch t.Status {
	case api.TaskRunning:
		if t.StartedAt.IsZero() {
			return "Up"
		}
		return "Up " + humanDuration(now.Sub(t.StartedAt))
	case api.TaskStopped:
		code := "?"
		if t.ExitCode != nil {
			code = strconv.Itoa(*t.ExitCode)
		}
		s := "Exited (" + code + ")"
		if !t.ExitedAt.IsZero() {
			s += " " + ago(now, t.ExitedAt)
		}
		if t.OOMKilled {
			s += " (OOM killed)"
		}
		return s
	case api.TaskCreated, "":
		return "Created"
	}
	return t.Status
}

// removeCmd is "rm" (top level, and under containers).
func (a *app) removeCmd(use string) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     use + " [flags] ID...",
		Aliases: []string{"remove", "delete"},
		Short:   "Remove containers",
		Long: `Remove the containers ID...: their task (which must have exited, unless -f
kills it first), their rootfs snapshot and their logs. ctl waits until the
node's executor removed each one, and prints its id. A container that
cannot be removed is an error (ctl prints why and exits with status 1); the
others are still removed.`,
		Example: `  ctl rm web
  ctl rm -f web worker
  ctl rm $(ctl containers -q)`,
		Args: needArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.containersRemove(cmd.Context(), name(cmd), args, force)
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill a running task first")
	return cmd
}

func (a *app) rmCmd() *cobra.Command { return a.removeCmd("rm") }

func (a *app) containersRemove(ctx context.Context, what string, ids []string, force bool) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		op, err := c.ContainerDelete(ctx, id, force)
		if err == nil {
			_, err = c.WaitContainerOp(ctx, id, op, events.TypeContainerDeleted)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", what, id, err))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		fmt.Fprintln(a.stdout, id)
	}
	return errors.Join(errs...)
}

// taskJSON is a task as "tasks ls --format json" prints it.
type taskJSON struct {
	ID   string `json:"id"`
	Node string `json:"node"`
	api.Task
}

func (a *app) tasksCmd() *cobra.Command {
	var (
		quiet  bool
		format string
	)
	list := func(cmd *cobra.Command, _ []string) error {
		if err := checkFormat(format); err != nil {
			return err
		}
		return a.tasksList(cmd.Context(), true, quiet, format)
	}
	listFlags := func(cmd *cobra.Command) {
		cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print container ids only")
		cmd.Flags().StringVar(&format, "format", "", formatFlagHelp)
	}
	const long = `List the containers' tasks, running or not: the container ID, the task's
PID on its node, its STATUS (created, running or stopped), its EXIT CODE
(128+N when signal N killed it), when it STARTED and when it EXITED.
"ctl ps" lists only the running ones, "ctl ps -a" all.

--format json prints them as a JSON array.`
	cmd := &cobra.Command{
		Use:     "tasks",
		Aliases: []string{"task"},
		Short:   "List tasks",
		Long:    long + "\n\nSubcommands: ls (the default).",
		Example: `  ctl tasks
  ctl tasks ls --format json | jq -r '.[] | select(.exit_code != 0) | .id'`,
		Args: cobra.NoArgs,
		RunE: list,
	}
	listFlags(cmd)
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List tasks",
		Long:    long,
		Example: `  ctl tasks ls
  ctl tasks ls -q`,
		Args: cobra.NoArgs,
		RunE: list,
	}
	listFlags(ls)
	cmd.AddCommand(ls)
	return cmd
}

func (a *app) psCmd() *cobra.Command {
	var (
		all, quiet bool
		format     string
	)
	cmd := &cobra.Command{
		Use:   "ps",
		Short: "List running tasks (-a: all)",
		Long: `List the running tasks, as "ctl tasks ls" shows them: ID, PID, STATUS, EXIT
CODE, STARTED and EXITED. -a lists the created and stopped ones too.`,
		Example: `  ctl ps
  ctl ps -a
  ctl ps -aq`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			return a.tasksList(cmd.Context(), all, quiet, format)
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "list every task, not only the running ones")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print container ids only")
	cmd.Flags().StringVar(&format, "format", "", formatFlagHelp)
	return cmd
}

func (a *app) tasksList(ctx context.Context, all, quiet bool, format string) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	ctrs, err := c.Containers(ctx)
	if err != nil {
		return fmt.Errorf("tasks: %w", err)
	}
	tasks := []taskJSON{}
	for _, ctr := range ctrs {
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
			pid = strconv.Itoa(t.Pid)
		}
		if t.ExitCode != nil {
			code = strconv.Itoa(*t.ExitCode)
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

func (a *app) killCmd() *cobra.Command {
	var sig string
	cmd := &cobra.Command{
		Use:   "kill [flags] ID...",
		Short: "Send a signal to containers' tasks",
		Long: `Send a signal to the tasks of the containers ID... (TERM by default) and print
each id. A signal is a name with or without "SIG" (KILL, SIGKILL) or a
number. A task that is not running is an error; the others are still
signalled.

A process that is its container's init does not get a signal it has no
handler for (the kernel drops it), so TERM may not stop a simple command
such as sleep: KILL always does.`,
		Example: `  ctl kill web
  ctl kill -s KILL web worker
  ctl kill --signal HUP web`,
		Args: needArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			var errs []error
			for _, id := range args {
				if _, err := c.ContainerKill(cmd.Context(), id, sig); err != nil {
					errs = append(errs, fmt.Errorf("kill %s: %w", id, err))
					if cmd.Context().Err() != nil {
						break
					}
					continue
				}
				fmt.Fprintln(a.stdout, id)
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().StringVarP(&sig, "signal", "s", "TERM", "signal to send: a name (KILL, SIGINT) or a number")
	return cmd
}

func (a *app) waitCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "wait ID...",
		Short: "Wait for containers' tasks to exit and print their exit codes",
		Long: `Wait until the tasks of the containers ID... have exited, one after the other,
and print each exit code (128+N when signal N killed the task) on a line of
its own. A task that exited already is not waited for. ctl exits with the
last exit code; a container that does not exist, or whose task could not
start, is an error (ctl prints why and exits with status 1). A container
that was created and not yet started is waited for, as docker does: until
its task is started (ctl start) and exits, or the container is removed.`,
		Example: `  ctl wait job
  ctl run -d --name job alpine:3.20 sh -c 'exit 3' && ctl wait job; echo $?`,
		Args: needArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			var errs []error
			last := 0
			for _, id := range args {
				exit, err := c.WaitExit(cmd.Context(), id)
				if err != nil {
					errs = append(errs, fmt.Errorf("wait %s: %w", id, err))
					if cmd.Context().Err() != nil {
						break
					}
					continue
				}
				fmt.Fprintln(a.stdout, exit.Code)
				last = exit.Code
			}
			if len(errs) > 0 {
				return errors.Join(errs...)
			}
			if last != 0 {
				return exitStatus(last)
			}
			return nil
		},
	}
}

func (a *app) logsCmd() *cobra.Command {
	var (
		follow bool
		stream string
	)
	cmd := &cobra.Command{
		Use:   "logs [flags] ID",
		Short: "Print a container's output",
		Long: `Print what the task of container ID wrote: its stdout to ctl's stdout and
its stderr to ctl's stderr (--stream picks one). The node's executor keeps
the logs until the container is removed.

With -f ctl keeps printing new output as the task writes it (it looks every
200 ms) until the task has stopped and everything it wrote is printed, or
until Ctrl-C.`,
		Example: `  ctl logs web
  ctl logs -f web
  ctl logs --stream stderr web 2>&1 | grep -i error`,
		Args: exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			outs := map[string]io.Writer{}
			switch stream {
			case "both":
				outs["stdout"], outs["stderr"] = a.stdout, a.stderr
			case "stdout":
				outs["stdout"] = a.stdout
			case "stderr":
				outs["stderr"] = a.stderr
			default:
				return fmt.Errorf("logs: --stream %q: want stdout, stderr or both: %w", stream, errdefs.ErrInvalidArgument)
			}
			return a.logs(cmd.Context(), args[0], outs, follow)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing output until the task has stopped")
	cmd.Flags().StringVar(&stream, "stream", "both", "which output to print: stdout, stderr or both")
	return cmd
}

func (a *app) logs(ctx context.Context, id string, outs map[string]io.Writer, follow bool) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	ctr, err := c.Container(ctx, id)
	if err != nil {
		return fmt.Errorf("logs %s: %w", id, err)
	}
	offsets := map[string]int64{}
	for {
		// A task seen stopped before the logs are read has written all it
		// will: once they are read, there is nothing more to wait for.
		stopped := ctr.Task.Status == api.TaskStopped
		for _, stream := range []string{"stdout", "stderr"} {
			w := outs[stream]
			if w == nil {
				continue
			}
			for {
				b, err := c.TaskLogs(ctx, ctr.Node, id, stream, offsets[stream])
				if err != nil {
					if follow && ctx.Err() != nil {
						return nil // Ctrl-C ends following
					}
					return fmt.Errorf("logs %s: %w", id, err)
				}
				if len(b) == 0 {
					break
				}
				if _, err := w.Write(b); err != nil {
					return fmt.Errorf("logs %s: write: %w", id, err)
				}
				offsets[stream] += int64(len(b))
			}
		}
		if !follow || stopped {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(logsPoll):
		}
		ctr, err = c.Container(ctx, id)
		switch {
		case errors.Is(err, errdefs.ErrNotFound):
			return nil // removed (--rm): its logs went with it
		case err != nil && ctx.Err() != nil:
			return nil
		case err != nil:
			return fmt.Errorf("logs %s: %w", id, err)
		}
	}
}
