// Package natstest runs a real embedded NATS server with JetStream for tests,
// on a random loopback port with its store in a temp dir, and provisions the
// events stream.
package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
	"github.com/stevedore/stevedore/pkg/natsserver"
)

// Server is a running test server and a client connection to it.
type Server struct {
	Server *server.Server
	Conn   *nats.Conn
	JS     jetstream.JetStream
}

// URL is the client URL of the server.
func (s *Server) URL() string { return s.Server.ClientURL() }

// Connect opens another client connection, closed at test cleanup.
func (s *Server) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.URL())
	if err != nil {
		t.Fatalf("connect to test nats: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// Start runs a server for the test and provisions the events stream. It is
// shut down at test cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	srv, err := natsserver.Start(natsserver.Config{Listen: "127.0.0.1:0", StoreDir: t.TempDir(), ServerName: "test"})
	if err != nil {
		t.Fatalf("start nats: %v", err)
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	s := &Server{Server: srv}
	s.Conn, s.JS = s.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := sdjs.EnsureStream(ctx, s.JS, sdjs.StreamConfig{}); err != nil {
		t.Fatalf("provision stream: %v", err)
	}
	return s
}

// Eventually polls cond every 20ms until it returns true or timeout passes,
// then fails the test with msg.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out after %v: "+msg, append([]any{timeout}, args...)...)
}
