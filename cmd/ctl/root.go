package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/stevedore/stevedore/internal/daemon"
	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/client"
)

// Environment variables that set the global flags' defaults.
const (
	envNATS      = "STEVEDORE_NATS"
	envNamespace = "STEVEDORE_NAMESPACE"
	envNode      = "STEVEDORE_NODE"
)

const defaultNATS = "nats://127.0.0.1:4222"

// app is one ctl invocation: its input and output, its global flags and,
// once a command needs it, its connection.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	tty            bool // stdout is a terminal
	errTTY         bool // stderr is a terminal
	width          int  // the terminal's width when tty or errTTY

	interrupts *interrupts

	natsURL   string
	namespace string
	node      string
	timeout   time.Duration

	nc *nats.Conn
	c  *client.Client
}

// args is what one ctl invocation is given.
type args struct {
	argv           []string // without the program name
	stdin          io.Reader
	stdout, stderr io.Writer
	// interrupts routes SIGINT and SIGTERM; nil when nothing delivers them.
	interrupts *interrupts
}

// run runs ctl with argv (without the program name), with no stdin and no
// signals. The error it returns is ready to print after "ctl: ".
func run(ctx context.Context, argv []string, stdout, stderr io.Writer) error {
	return runWith(ctx, args{argv: argv, stdout: stdout, stderr: stderr})
}

// runWith runs one ctl invocation.
func runWith(ctx context.Context, in args) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a := &app{stdin: in.stdin, stdout: in.stdout, stderr: in.stderr, width: 80, interrupts: in.interrupts}
	if a.stdin == nil {
		a.stdin = strings.NewReader("")
	}
	if a.interrupts == nil {
		a.interrupts = &interrupts{}
	}
	a.interrupts.setCancel(cancel)
	for _, w := range []struct {
		out io.Writer
		tty *bool
	}{{a.stdout, &a.tty}, {a.stderr, &a.errTTY}} {
		if f, ok := w.out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			*w.tty = true
			if w, _, err := term.GetSize(int(f.Fd())); err == nil && w > 0 {
				a.width = w
			}
		}
	}
	defer a.close()
	root := a.rootCmd()
	root.SetArgs(in.argv)
	err := root.ExecuteContext(ctx)
	nu, ne := (*client.NoUnpackerError)(nil), (*client.NoExecutorError)(nil)
	if errors.Is(err, nats.ErrNoResponders) && !errors.As(err, &nu) && !errors.As(err, &ne) {
		ng := &noGatewayError{url: a.natsURL, err: err}
		if ee := (*exitError)(nil); errors.As(err, &ee) {
			return &exitError{code: ee.code, err: ng}
		}
		return ng
	}
	return err
}

// noGatewayError says that nothing answered a request.
type noGatewayError struct {
	url string
	err error
}

func (e *noGatewayError) Error() string {
	return fmt.Sprintf("no gateway answered on %s (is it running? try `make up`)", e.url)
}
func (e *noGatewayError) Unwrap() error { return e.err }

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "ctl",
		Short: "Control Stevedore: pull images, run containers, inspect content, snapshots and operations",
		Long: `ctl talks to Stevedore over NATS. Every command is a request to the gateway,
except the snapshot commands, which the unpacker of one node (--node) answers,
and "ctl logs", which the executor of the container's node answers;
commands that start work (pull, run, rm, content rm) then follow the work's
events in the log until it ends.

The gateway embeds a NATS server by default, so on one machine the default
--nats URL reaches it. --node names the node whose snapshots "ctl snapshots"
shows and for which "ctl images" says UNPACKED; it defaults to this host's
name with dots as dashes, the name the workers on this host use. "ctl run"
and "ctl create" run containers on the gateway's node unless --node (or
STEVEDORE_NODE) is given.

Errors are printed as "ctl: <message>" and make ctl exit with status 1,
except for the commands attached to a task ("ctl run", "ctl start -a"),
which exit with the task's exit status, as docker does: 125 when the
container could not be created or ctl failed, 126 when its command could not
be run, 127 when its command was not found.`,
		Example: `  ctl pull docker.io/library/alpine:3.20
  ctl run --rm alpine:3.20 echo hello
  ctl run -d --name web --memory 512m nginx:1.27
  ctl ps
  ctl logs -f web
  ctl images
  ctl -n team-a images --format json
  ctl --node build-02 snapshots ls
  STEVEDORE_NATS=nats://build-01:4222 ctl content ls`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		if cmd == cmd.Root() {
			return fmt.Errorf("%w (see `%s --help`)", err, cmd.CommandPath())
		}
		err = fmt.Errorf("%s: %w (see `%s --help`)", name(cmd), err, cmd.CommandPath())
		if cmd.Annotations[annotationExit125] != "" {
			return &exitError{code: exitCtlFailed, err: err}
		}
		return err
	})
	pf := root.PersistentFlags()
	pf.StringVar(&a.natsURL, "nats", envOr(envNATS, defaultNATS), "NATS URL of the gateway (env "+envNATS+")")
	pf.StringVarP(&a.namespace, "namespace", "n", envOr(envNamespace, "default"), "namespace to act in (env "+envNamespace+")")
	pf.StringVar(&a.node, "node", envOr(envNode, daemon.Hostname()), "node for snapshots and the images UNPACKED column, and, when given, the node run and create use (env "+envNode+"; default: host name, dots as dashes)")
	pf.DurationVar(&a.timeout, "timeout", client.DefaultTimeout, "how long to wait for the gateway to answer a request")

	root.AddCommand(a.pullCmd(), a.withAt(a.imagesCmd(), api.ViewAtImages), a.runCmd(), a.createCmd(), a.startCmd(),
		a.containersCmd(), a.tasksCmd(), a.withAt(a.psCmd(), api.ViewAtContainers), a.killCmd(), a.waitCmd(), a.logsCmd(), a.rmCmd(),
		a.snapshotsCmd(), a.contentCmd(), a.opsCmd(), a.eventsCmd(), a.historyCmd())
	return root
}

// client connects to NATS on first use and returns the client.
func (a *app) client() (*client.Client, error) {
	if a.c != nil {
		return a.c, nil
	}
	if a.timeout <= 0 {
		return nil, fmt.Errorf("--timeout must be positive, got %v", a.timeout)
	}
	// Who we are is looked up (the user database) while NATS connects.
	actor := make(chan string, 1)
	go func() { actor <- client.DefaultActor() }()
	nc, err := nats.Connect(a.natsURL, nats.Name("ctl"), nats.Timeout(a.timeout))
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w (is the gateway running? try `make up`)", a.natsURL, err)
	}
	c, err := client.New(nc, client.WithNamespace(a.namespace), client.WithTimeout(a.timeout), client.WithActor(<-actor))
	if err != nil {
		nc.Close()
		return nil, err
	}
	a.nc, a.c = nc, c
	return c, nil
}

func (a *app) close() {
	if a.nc != nil {
		a.nc.Close()
	}
}

// name is the command's path without the program's name: "images rm".
func name(cmd *cobra.Command) string {
	return strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" ")
}

// needArgs accepts at least n arguments, naming what is missing.
func needArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return fmt.Errorf("%s: missing %s (see `%s --help`)", name(cmd), what, cmd.CommandPath())
		}
		return nil
	}
}

// exactArgs accepts exactly n arguments.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return fmt.Errorf("%s: missing %s (see `%s --help`)", name(cmd), what, cmd.CommandPath())
		}
		if len(args) > n {
			return fmt.Errorf("%s: too many arguments: want one %s, got %q (see `%s --help`)", name(cmd), what, args, cmd.CommandPath())
		}
		return nil
	}
}

// groupHelp runs a command group given no subcommand: it prints the help.
func groupHelp(cmd *cobra.Command, _ []string) error { return cmd.Help() }
