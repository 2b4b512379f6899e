// Package archtest keeps the dependency direction of DESIGN.md honest:
// handlers see interfaces only, adapters never import each other, and ctl
// stays a thin client.
package archtest

import (
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/stevedore/stevedore/"

var (
	natsClient = "github.com/nats-io/nats.go"
	natsServer = "github.com/nats-io/nats-server"
	pebble     = "github.com/cockroachdb/pebble"
	adapters   = []string{mod + "pkg/events/jetstream", mod + "pkg/content/local", mod + "pkg/remotes", mod + "pkg/view"}
)

func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", mod+pkg).CombinedOutput()
	if err != nil {
		t.Fatalf("go list %s: %v\n%s", pkg, err, out)
	}
	return strings.Fields(string(out))
}

func TestDependencyDirection(t *testing.T) {
	tests := []struct {
		name      string
		pkg       string
		forbidden []string
	}{
		{"handlers see interfaces only", "pkg/handlers", append([]string{natsClient, natsServer, pebble}, adapters...)},
		{"events has no transport", "pkg/events", []string{natsClient, natsServer, pebble}},
		{"content contract is light", "pkg/content", []string{natsClient, natsServer, pebble, mod + "pkg/events"}},
		{"api carries data only", "pkg/api", []string{natsClient, natsServer, pebble}},
		{"jetstream adapter", "pkg/events/jetstream", []string{pebble, mod + "pkg/content/local", mod + "pkg/remotes", mod + "pkg/view"}},
		{"content store adapter", "pkg/content/local", []string{natsClient, natsServer, pebble, mod + "pkg/events/jetstream", mod + "pkg/remotes", mod + "pkg/view"}},
		{"registry adapter", "pkg/remotes", []string{natsClient, natsServer, pebble, mod + "pkg/events/jetstream", mod + "pkg/content/local", mod + "pkg/view"}},
		{"view adapter", "pkg/view", []string{natsClient, natsServer, mod + "pkg/events/jetstream", mod + "pkg/content/local", mod + "pkg/remotes"}},
		{"ctl is a thin client", "cmd/ctl", []string{natsServer, pebble, mod + "pkg/content/local", mod + "pkg/view", mod + "pkg/handlers", mod + "pkg/remotes", mod + "pkg/metrics", "github.com/prometheus", "net/http/pprof"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, d := range deps(t, tc.pkg) {
				for _, f := range tc.forbidden {
					if d == f || strings.HasPrefix(d, f+"/") {
						t.Errorf("%s depends on %s", tc.pkg, d)
					}
				}
			}
		})
	}
}
