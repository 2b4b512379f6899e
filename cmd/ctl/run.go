package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/client"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
	"github.com/stevedore/stevedore/pkg/oci"
	"github.com/stevedore/stevedore/pkg/progress"
)

// Exit statuses of the commands attached to a task, as docker's.
const (
	exitCtlFailed   = 125 // the container could not be created, or ctl failed
	exitCannotRun   = 126 // the task's command could not be run
	exitNotFound    = 127 // the task's command was not found
	exitInterrupted = 130 // ctl stopped waiting (128+SIGINT)
)

// annotationExit125 marks a command whose own errors (bad flags, missing
// arguments) exit with status 125, as docker run's do.
const annotationExit125 = "ctl/exit-125"

// interruptsToGiveUp is how many SIGINT/SIGTERM ctl forwards to a task
// before it stops waiting for it.
const interruptsToGiveUp = 3

// containerFlags are the flags that describe a container (run, create).
type containerFlags struct {
	name        string
	id          string
	rm          bool
	detach      bool
	interactive bool
	quiet       bool
	env         []string
	envFiles    []string
	user        string
	workdir     string
	entrypoint  string
	hostname    string
	network     string
	mounts      []string
	readOnly    bool
	memory      string
	cpus        float64
	pidsLimit   int64
	labels      []string
	platform    string
	pull        string
	plainHTTP   bool
}

func (f *containerFlags) register(fs *pflag.FlagSet, run bool) {
	fs.SetInterspersed(false) // flags after IMAGE are the command's
	fs.StringVar(&f.name, "name", "", "the container's name, which is its id: letters, digits, '_' and '-' (default: 24 random hex digits)")
	fs.StringVar(&f.id, "id", "", "same as --name")
	fs.BoolVar(&f.rm, "rm", false, "remove the container when its task exits")
	if run {
		fs.BoolVarP(&f.detach, "detach", "d", false, "start the container and print its id; do not wait for it")
		fs.BoolVarP(&f.interactive, "interactive", "i", false, "forward ctl's stdin to the task (it sees end-of-file when ctl's stdin ends)")
	}
	fs.BoolVarP(&f.quiet, "quiet", "q", false, "show no pull progress")
	fs.StringArrayVarP(&f.env, "env", "e", nil, "set an environment variable: KEY=VAL, or KEY to pass ctl's value of KEY (repeatable)")
	fs.StringArrayVar(&f.envFiles, "env-file", nil, "read environment variables from a file of KEY=VAL lines (repeatable; -e wins)")
	fs.StringVarP(&f.user, "user", "u", "", `user to run as: "name", "uid", "name:group" or "uid:gid" (default: the image's)`)
	fs.StringVarP(&f.workdir, "workdir", "w", "", "working directory inside the container, absolute (default: the image's)")
	fs.StringVar(&f.entrypoint, "entrypoint", "", `replace the image's entrypoint; "" clears it (and the image's command)`)
	fs.StringVar(&f.hostname, "hostname", "", "the container's host name")
	fs.StringVar(&f.network, "net", "none", `network: "none" (only loopback) or "host" (the node's network)`)
	fs.StringArrayVar(&f.mounts, "mount", nil, "bind mount: type=bind,src=/host/dir,dst=/dir[,ro] (repeatable)")
	fs.BoolVar(&f.readOnly, "read-only", false, "mount the container's root filesystem read-only")
	fs.StringVar(&f.memory, "memory", "", `memory limit, e.g. "512m", "1.5g" (no swap beyond it)`)
	fs.Float64Var(&f.cpus, "cpus", 0, "CPU limit in CPUs' worth of time, e.g. 1.5")
	fs.Int64Var(&f.pidsLimit, "pids-limit", 0, "most processes the container may have (0: no limit)")
	fs.StringArrayVar(&f.labels, "label", nil, "set a label: KEY=VALUE (repeatable)")
	fs.StringVar(&f.platform, "platform", "", `platform of the image, "os/arch[/variant]" (default: the gateway host's)`)
	fs.StringVar(&f.pull, "pull", client.PullMissing, `when to pull the image: "missing" (unless unpacked on the node), "always" or "never"`)
	fs.BoolVar(&f.plainHTTP, "plain-http", false, "allow plain HTTP to a registry that is not on loopback")
}

// options turns the flags and arguments (IMAGE [CMD [ARG...]]) into run
// options. getenv looks up bare -e KEYs.
func (f *containerFlags) options(cmd *cobra.Command, args []string, getenv func(string) (string, bool)) (client.RunOptions, error) {
	bad := func(format string, a ...any) (client.RunOptions, error) {
		return client.RunOptions{}, fmt.Errorf("%s: %s: %w", name(cmd), fmt.Sprintf(format, a...), errdefs.ErrInvalidArgument)
	}
	o := client.RunOptions{Image: args[0], Rm: f.rm, Detach: f.detach, Pull: f.pull, PlainHTTP: f.plainHTTP}
	switch {
	case f.name != "" && f.id != "" && f.name != f.id:
		return bad("--name %q and --id %q differ: give one", f.name, f.id)
	case f.name != "":
		o.ID = f.name
	default:
		o.ID = f.id
	}
	if o.ID != "" {
		if err := client.ValidateContainerID(o.ID); err != nil {
			return client.RunOptions{}, fmt.Errorf("%s: --name: %w", name(cmd), err)
		}
	}
	if f.detach && f.interactive {
		return bad("-i needs ctl to stay attached to forward stdin; drop -d or -i")
	}
	switch f.pull {
	case client.PullMissing, client.PullAlways, client.PullNever:
	default:
		return bad("--pull %q: want missing, always or never", f.pull)
	}

	opts := events.ContainerOptions{
		Args: args[1:], User: f.user, WorkingDir: f.workdir, Hostname: f.hostname,
		ReadOnly: f.readOnly, CPUs: f.cpus, PidsLimit: f.pidsLimit, Platform: f.platform,
	}
	if cmd.Flags().Changed("entrypoint") {
		opts.EntrypointSet = true
		if f.entrypoint != "" {
			opts.Entrypoint = []string{f.entrypoint}
		}
	}
	for _, file := range f.envFiles {
		env, err := readEnvFile(file)
		if err != nil {
			return client.RunOptions{}, fmt.Errorf("%s: --env-file: %w", name(cmd), err)
		}
		opts.Env = append(opts.Env, env...)
	}
	for _, e := range f.env {
		key, _, hasValue := strings.Cut(e, "=")
		switch {
		case key == "" || strings.ContainsAny(key, " \t\n"):
			return bad("-e %q: want KEY=VAL or KEY", e)
		case hasValue:
			opts.Env = append(opts.Env, e)
		default:
			// Docker's rule: a bare KEY passes ctl's value, and nothing if unset.
			if v, ok := getenv(key); ok {
				opts.Env = append(opts.Env, key+"="+v)
			}
		}
	}
	if f.workdir != "" && !strings.HasPrefix(f.workdir, "/") {
		return bad("--workdir %q is not an absolute path", f.workdir)
	}
	switch f.network {
	case oci.NetworkNone, oci.NetworkHost:
		opts.Network = f.network
	default:
		return bad("--net %q: want none or host", f.network)
	}
	for _, m := range f.mounts {
		pm, err := oci.ParseMount(m)
		if err != nil {
			return client.RunOptions{}, fmt.Errorf("%s: --mount: %w", name(cmd), err)
		}
		opts.Mounts = append(opts.Mounts, events.BindMount{Source: pm.Source, Destination: pm.Destination, ReadOnly: pm.ReadOnly})
	}
	if f.memory != "" {
		n, err := oci.ParseMemory(f.memory)
		if err != nil {
			return client.RunOptions{}, fmt.Errorf("%s: --memory: %w", name(cmd), err)
		}
		if n <= 0 {
			return bad("--memory %q: the limit must be positive", f.memory)
		}
		opts.MemoryLimit = n
	}
	if f.cpus < 0 {
		return bad("--cpus %v: must not be negative", f.cpus)
	}
	if f.pidsLimit < 0 {
		return bad("--pids-limit %d: must not be negative", f.pidsLimit)
	}
	for _, l := range f.labels {
		k, v, _ := strings.Cut(l, "=")
		if k == "" {
			return bad("--label %q: want KEY=VALUE", l)
		}
		if opts.Labels == nil {
			opts.Labels = map[string]string{}
		}
		opts.Labels[k] = v
	}
	o.Options = opts
	return o, nil
}

func readEnvFile(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	env, err := oci.ParseEnvFile(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return env, nil
}

// exit125 wraps the errors of a docker-like command (bad arguments, ctl's
// own failures) to exit with status 125.
func exit125(err error) error {
	if err == nil {
		return nil
	}
	if ee := (*exitError)(nil); errors.As(err, &ee) {
		return err
	}
	return &exitError{code: exitCtlFailed, err: err}
}

// imageArgs accepts IMAGE [CMD [ARG...]].
func imageArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return exit125(fmt.Errorf("%s: missing IMAGE (see `%s --help`)", name(cmd), cmd.CommandPath()))
	}
	return nil
}

// containerNode is the node containers are asked to run on: --node or
// STEVEDORE_NODE when given, else "" (the gateway's node).
func (a *app) containerNode(cmd *cobra.Command) string {
	if cmd.Flags().Changed("node") || os.Getenv(envNode) != "" {
		return a.node
	}
	return ""
}

const containerFlagsHelp = `The container's command is the image's entrypoint and command, CMD and ARGs
replacing the image's command; --entrypoint replaces the entrypoint (and
drops the image's command: only CMD and ARGs follow it). The environment is
the image's, then --env-file files, then -e; a bare "-e KEY" passes ctl's own
value of KEY (and nothing if it is unset). The container has its own
network with only loopback (--net none) unless --net host.

The image is pulled (with unpacking, its progress on stderr unless -q) unless
it is unpacked on the node already; --pull always pulls every time, --pull
never fails instead of pulling.`

func (a *app) runCmd() *cobra.Command {
	var f containerFlags
	cmd := &cobra.Command{
		Use:   "run [flags] IMAGE [CMD [ARG...]]",
		Short: "Run a command in a new container",
		Long: `Run creates a container from IMAGE and starts its task in one go, on the
gateway's node (or --node), then streams the task's stdout and stderr to
ctl's stdout and stderr until it exits, and exits with the task's exit
status (128+N when signal N killed it). With --rm the container is removed
when its task exits, and ctl returns once it is gone. With -d ctl prints the
container's id once the task started and leaves it running; "ctl logs" shows
its output and "ctl wait" its exit status. With -i ctl's stdin is forwarded
to the task, which sees end-of-file when ctl's stdin ends.

` + containerFlagsHelp + `

Ctrl-C (SIGINT) and SIGTERM are forwarded to the task, which decides what
to do with them (a process that is the container's init and has no handler
for a signal does not get it: "ctl kill -s KILL ID" stops it). After the third,
ctl stops waiting and leaves the container running.

Exit status, as docker's: the task's own, or 125 when the container could
not be created (a bad flag, an image that cannot be pulled, no gateway), 126
when the command could not be run, 127 when the command was not found,
130 when ctl stopped waiting. Errors are printed as "ctl: <message>".`,
		Example: `  ctl run --rm alpine:3.20 echo hello
  ctl run --rm -e GREETING=hi -e HOME alpine:3.20 sh -c 'echo $GREETING $HOME'
  ctl run --rm --env-file ./app.env --entrypoint /app/server app:1.0 --port 8080
  ctl run -d --name web --memory 512m --cpus 1.5 --pids-limit 200 nginx:1.27
  ctl run --rm --mount type=bind,src=$PWD,dst=/src,ro -w /src alpine:3.20 ls
  echo hello | ctl run --rm -i alpine:3.20 tr a-z A-Z
  ctl run --rm --net host --read-only -u 1000:1000 alpine:3.20 id`,
		Annotations: map[string]string{annotationExit125: "1"},
		Args:        imageArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o, err := f.options(cmd, args, os.LookupEnv)
			if err != nil {
				return exit125(err)
			}
			o.Node = a.containerNode(cmd)
			if f.interactive {
				o.Stdin = a.stdin
			}
			return a.run(cmd.Context(), o, f.quiet)
		},
	}
	f.register(cmd.Flags(), true)
	return cmd
}

// lockedWriter serializes writes to w: the task's stderr, pull progress and
// warnings share ctl's stderr.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// pullProgress shows a pull's progress, as "ctl pull" does, on stderr.
type pullProgress struct {
	a         *app
	w         io.Writer
	r         *progress.Renderer
	stopTicks func()
}

func (p *pullProgress) Pulling(op api.OpReply) {
	p.r = progress.New(p.w, progress.Config{Ref: op.Ref, TTY: p.a.errTTY, Width: p.a.width, Unpack: true})
	p.stopTicks = func() {}
	if p.a.errTTY {
		p.stopTicks = tickEvery(100*time.Millisecond, p.r.Tick)
	}
}

func (p *pullProgress) Update(u client.Update) { p.r.Update(u) }

func (p *pullProgress) Pulled(error) {
	p.stopTicks()
	_ = p.r.Finish()
}

// attach fills in o's output, progress and warnings, and starts forwarding
// ctl's interrupts to o.Signals. The returned context ends after the
// interruptsToGiveUp-th interrupt; call stop when the task is done with.
func (a *app) attach(ctx context.Context, o *client.AttachOptions) (_ context.Context, gaveUp func() bool, stop func()) {
	stderr := &lockedWriter{w: a.stderr}
	o.Stdout, o.Stderr = a.stdout, stderr
	o.Warn = func(err error) { fmt.Fprintf(stderr, "ctl: %v\n", err) }
	sigs, release := a.interrupts.take()
	fwd := make(chan string, interruptsToGiveUp)
	o.Signals = fwd
	ctx, cancel := context.WithCancel(ctx)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		gave bool
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 1; ; n++ {
			select {
			case <-ctx.Done():
				return
			case sig := <-sigs:
				if n >= interruptsToGiveUp {
					mu.Lock()
					gave = true
					mu.Unlock()
					cancel()
					return
				}
				fwd <- sig // buffered for every forwarded one
			}
		}
	}()
	return ctx, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return gave
		}, func() {
			cancel()
			wg.Wait()
			release()
		}
}

func (a *app) run(ctx context.Context, o client.RunOptions, quiet bool) error {
	c, err := a.client()
	if err != nil {
		return exit125(err)
	}
	if o.ID == "" {
		o.ID = client.NewContainerID() // known here, for the messages
	}
	ctx, gaveUp, stop := a.attach(ctx, &o.AttachOptions)
	defer stop()
	if !quiet {
		o.PullWatcher = &pullProgress{a: a, w: o.Stderr}
	}
	code, err := c.Run(ctx, o)
	if err == nil && o.Detach {
		fmt.Fprintln(a.stdout, o.ID)
		return nil
	}
	return taskResult(o.ID, code, err, gaveUp())
}

// taskResult is how ctl ends after following a task: with its exit status,
// or with a docker-like status for what went wrong.
func taskResult(id string, code int, err error, gaveUp bool) error {
	var re *client.RunError
	switch {
	case gaveUp:
		return &exitError{code: exitInterrupted, err: fmt.Errorf(
			"stopped waiting for container %s after %d interrupts; it goes on (`ctl kill -s KILL %s` stops it)", id, interruptsToGiveUp, id)}
	case err == nil && code == -1:
		return &exitError{code: 255, err: fmt.Errorf("the exit status of container %s is unknown: its monitor was killed while it ran", id)}
	case err == nil && code == 0:
		return nil
	case err == nil:
		return exitStatus(code)
	case errors.Is(err, client.ErrInterrupted):
		return &exitError{code: exitInterrupted, err: err}
	case errors.As(err, &re) && re.Stage == client.StageStart && commandNotFound(err.Error()):
		return &exitError{code: exitNotFound, err: err}
	case errors.As(err, &re) && re.Stage == client.StageStart:
		return &exitError{code: exitCannotRun, err: err}
	case code >= 0:
		// The task exited; something after (its removal) failed. Say so,
		// and still pass its exit status on.
		return &exitError{code: code, err: err}
	}
	return exit125(err)
}

var notFoundRe = regexp.MustCompile(`(?i)executable file not found|command not found|exec[^:]*: .*no such file or directory`)

// commandNotFound reports whether a start failure says the command was
// not found, as runc says it.
func commandNotFound(msg string) bool { return notFoundRe.MatchString(msg) }

func (a *app) createCmd() *cobra.Command {
	var f containerFlags
	cmd := &cobra.Command{
		Use:   "create [flags] IMAGE [CMD [ARG...]]",
		Short: "Create a container without starting it",
		Long: `Create creates a container from IMAGE on the gateway's node (or --node), as
"ctl run" would, without starting its task, and prints its id once the
node's executor created it. "ctl start" starts it; with --rm it is removed
when that task exits.

` + containerFlagsHelp + `

Errors exit with status 125, as "docker create".`,
		Example: `  ctl create --name job alpine:3.20 sh -c 'date; sleep 5'
  ctl start -a job
  id=$(ctl create -q alpine:3.20 true) && ctl start "$id"`,
		Annotations: map[string]string{annotationExit125: "1"},
		Args:        imageArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o, err := f.options(cmd, args, os.LookupEnv)
			if err != nil {
				return exit125(err)
			}
			o.Node = a.containerNode(cmd)
			c, err := a.client()
			if err != nil {
				return exit125(err)
			}
			if !f.quiet {
				o.PullWatcher = &pullProgress{a: a, w: a.stderr}
			}
			id, err := c.Create(cmd.Context(), o)
			if err != nil {
				return exit125(err)
			}
			fmt.Fprintln(a.stdout, id)
			return nil
		},
	}
	f.register(cmd.Flags(), false)
	return cmd
}

func (a *app) startCmd() *cobra.Command {
	var attach, interactive bool
	cmd := &cobra.Command{
		Use:   "start [flags] ID",
		Short: "Start a created container's task",
		Long: `Start starts the task of container ID, made by "ctl create", and prints the id
once it runs; a start that fails is an error (ctl prints why and exits with
status 1). A container's task runs once: to run it again, create a new one.

With -a ctl stays attached as "ctl run" does: it streams the task's stdout
and stderr, forwards Ctrl-C and SIGTERM to it (the third makes ctl stop
waiting), and exits with the task's exit status, or 125/126/127 as "ctl
run". With -i (and -a) ctl's stdin is forwarded to the task.`,
		Example: `  ctl start job
  ctl start -a job; echo "job exited with $?"
  echo data | ctl start -a -i job`,
		Args: exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if interactive && !attach {
				return fmt.Errorf("start: -i needs -a")
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if !attach {
				op, err := c.ContainerStart(ctx, id, false)
				if err == nil {
					_, err = c.WaitContainerOp(ctx, id, op, events.TypeTaskStarted)
				}
				if err != nil {
					return fmt.Errorf("start %s: %w", id, err)
				}
				fmt.Fprintln(a.stdout, id)
				return nil
			}
			var o client.AttachOptions
			if interactive {
				o.Stdin = a.stdin
			}
			ctx, gaveUp, stop := a.attach(ctx, &o)
			defer stop()
			code, err := c.StartAttached(ctx, id, o)
			return taskResult(id, code, err, gaveUp())
		},
	}
	cmd.Flags().BoolVarP(&attach, "attach", "a", false, "stream the task's output and exit with its exit status")
	cmd.Flags().BoolVarP(&interactive, "interactive", "i", false, "forward ctl's stdin to the task (with -a)")
	return cmd
}
