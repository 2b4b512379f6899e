// Package natsserver runs an embedded NATS server with JetStream, as the
// gateway does by default so that one machine needs no separate server.
package natsserver

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config says where the embedded server listens and stores its data.
type Config struct {
	// Listen is "host:port"; port 0 picks a free one.
	Listen string
	// StoreDir holds JetStream's file storage.
	StoreDir string
	// ServerName names the server (shows in `nats server info`).
	ServerName string
	// MaxStore caps JetStream file storage in bytes; 0 for the server default.
	MaxStore int64
}

// Start runs the server and waits until it accepts connections. The caller
// stops it with Shutdown and WaitForShutdown.
func Start(cfg Config) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("nats listen address %q: %w", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("nats listen port %q: %w", portStr, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	opts := &server.Options{
		ServerName:            cfg.ServerName,
		Host:                  host,
		Port:                  port,
		JetStream:             true,
		StoreDir:              cfg.StoreDir,
		JetStreamMaxStore:     cfg.MaxStore,
		NoSigs:                true,
		NoLog:                 true,
		MaxPayload:            8 << 20,
		DisableShortFirstPing: true,
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded nats on %s did not become ready", cfg.Listen)
	}
	return s, nil
}
