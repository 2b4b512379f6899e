// Package profiling serves Go's pprof profiles of a Stevedore daemon beside
// its metrics (the --pprof flag), so that where a worker spends its time can
// be read from a running system: go tool pprof http://ADDR/debug/pprof/profile.
//
// It is its own package so that only the daemons link net/http/pprof, not
// the clients that share the daemons' packages.
package profiling

import (
	"fmt"
	"net/http"
	"net/http/pprof"

	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/metrics"
)

// Routes returns the /debug/pprof/ endpoints for metrics.Serve when enabled
// (none otherwise): the index, a CPU profile (profile?seconds=N), an
// execution trace, symbol lookup, and the runtime's named profiles (heap,
// allocs, goroutine, block, mutex, threadcreate). The command line is not
// served: it may carry credentials (a NATS URL with a password).
func Routes(enabled bool) []metrics.Route {
	if !enabled {
		return nil
	}
	return []metrics.Route{
		{Pattern: "/debug/pprof/", Handler: http.HandlerFunc(pprof.Index)},
		{Pattern: "/debug/pprof/profile", Handler: http.HandlerFunc(pprof.Profile)},
		{Pattern: "/debug/pprof/symbol", Handler: http.HandlerFunc(pprof.Symbol)},
		{Pattern: "/debug/pprof/trace", Handler: http.HandlerFunc(pprof.Trace)},
		{Pattern: "/debug/pprof/cmdline", Handler: http.NotFoundHandler()},
	}
}

// Check says what is wrong with the flags: --pprof needs a --metrics
// address to serve on. Errors wrap errdefs.ErrInvalidArgument.
func Check(enabled bool, metricsAddr string) error {
	if enabled && metricsAddr == "" {
		return fmt.Errorf("--pprof serves on the --metrics address, and none is given: %w", errdefs.ErrInvalidArgument)
	}
	return nil
}

// FlagUsage is the help text of the --pprof flag.
const FlagUsage = "also serve Go's pprof profiles at /debug/pprof/ on the --metrics address (e.g. go tool pprof http://ADDR/debug/pprof/profile?seconds=10)"
