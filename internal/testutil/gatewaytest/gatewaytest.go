// Package gatewaytest runs a real Stevedore gateway for tests of its
// clients: an in-memory view, a content store in a temp dir, and the API on
// an embedded NATS server.
package gatewaytest

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/stevedore/stevedore/internal/testutil/natstest"
	"github.com/stevedore/stevedore/pkg/content/local"
	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
	"github.com/stevedore/stevedore/pkg/gateway"
	"github.com/stevedore/stevedore/pkg/view"
)

// Start runs a gateway of node "gw-1" on s until the test ends, and returns
// once it serves every endpoint.
func Start(t testing.TB, s *natstest.Server) {
	t.Helper()
	v, err := view.Open("", view.InMemory())
	if err != nil {
		t.Fatal(err)
	}
	store, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	nc, js := s.Connect(t)
	gw, err := gateway.New(gateway.Config{Conn: nc, JS: js, Publisher: sdjs.NewPublisher(js), View: v, Content: store,
		Node: "gw-1", DefaultPlatform: "linux/amd64", Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gw.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway: %v", err)
		}
		_ = v.Close()
	})
	select {
	case <-gw.Ready():
	case err := <-done:
		done <- err // for the cleanup
		t.Fatalf("gateway: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("gateway service did not come up")
	}
}
