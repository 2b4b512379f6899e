package nodesvc

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
	"github.com/stevedore/stevedore/pkg/runtime"
)

// LogsConfig wires the executor's task log endpoint.
type LogsConfig struct {
	Conn *nats.Conn
	Node string
	// StateRoot holds the tasks' state dirs:
	// <StateRoot>/<task id>/<stream>.log (runtime.TaskID).
	StateRoot string
	Logger    zerolog.Logger
}

// StartLogs registers the executor's micro service with the task log
// endpoint on api.TaskLogsSubject(node).
func StartLogs(cfg LogsConfig) (micro.Service, error) {
	svc, err := micro.AddService(cfg.Conn, micro.Config{
		Name:        api.ExecutorService,
		Version:     api.ServiceVersion,
		Description: "Stevedore executor of node " + cfg.Node,
		Metadata:    map[string]string{"node": cfg.Node},
	})
	if err != nil {
		return nil, fmt.Errorf("executor service: %w", err)
	}
	h := micro.HandlerFunc(func(req micro.Request) {
		data, err := readLog(cfg.StateRoot, req.Data())
		if err != nil {
			_ = req.Error(errdefs.Code(err), err.Error(), nil)
			return
		}
		_ = req.Respond(data)
	})
	if err := svc.AddEndpoint("logs", h, micro.WithEndpointSubject(api.TaskLogsSubject(cfg.Node))); err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("executor service: %w", err)
	}
	if err := cfg.Conn.FlushTimeout(5 * time.Second); err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("executor service: %w: %w", err, errdefs.ErrUnavailable)
	}
	return svc, nil
}

func readLog(root string, data []byte) ([]byte, error) {
	var req api.TaskLogsRequest
	if err := decode(data, &req); err != nil {
		return nil, err
	}
	if !events.ValidContainerID(req.ID) {
		return nil, fmt.Errorf("container id %q is not valid: %w", req.ID, errdefs.ErrInvalidArgument)
	}
	if req.Namespace == "" {
		req.Namespace = events.DefaultNamespace
	}
	if err := events.ValidateNamespace(req.Namespace); err != nil {
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	if req.Stream != "stdout" && req.Stream != "stderr" {
		return nil, fmt.Errorf("stream %q: want stdout or stderr: %w", req.Stream, errdefs.ErrInvalidArgument)
	}
	n := req.Length
	if n <= 0 || n > api.MaxReadChunk {
		n = api.MaxReadChunk
	}
	f, err := os.Open(filepath.Join(root, runtime.TaskID(req.Namespace, req.ID), req.Stream+".log"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no logs for container %s on this node: %w", req.ID, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, n)
	m, err := f.ReadAt(buf, req.Offset)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return buf[:m], nil
}
