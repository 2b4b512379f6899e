package metrics

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

func TestExitClass(t *testing.T) {
	tests := []struct {
		name   string
		code   int
		signal string
		oom    bool
		want   string
	}{
		{"success", 0, "", false, ExitOK},
		{"failure", 3, "", false, ExitError},
		{"not executable", 126, "", false, ExitCannotRun},
		{"not found", 127, "", false, ExitCannotRun},
		{"killed, by code", 137, "", false, ExitSignal},
		{"killed, by name", 0, "SIGTERM", false, ExitSignal},
		{"out of memory", 137, "SIGKILL", true, ExitOOM},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ExitClass(tc.code, tc.signal, tc.oom); got != tc.want {
				t.Errorf("ExitClass(%d, %q, %v) = %q, want %q", tc.code, tc.signal, tc.oom, got, tc.want)
			}
		})
	}
}

func TestServe(t *testing.T) {
	if addr, stop, err := Serve("", zerolog.Nop()); err != nil || addr != "" {
		t.Fatalf("Serve(\"\") = %q, %v; want nothing served", addr, err)
	} else {
		stop()
	}
	addr, stop, err := Serve("127.0.0.1:0", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if _, _, err := Serve(addr, zerolog.Nop()); err == nil {
		t.Fatal("a second server on the same address started")
	}
	TasksExited.WithLabelValues(ExitOK).Inc()
	HandlerDuration.WithLabelValues("fetcher", "blob-committed", "ok").Observe(0.02)
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`stevedore_tasks_exited_total{class="ok"} 1`,
		`stevedore_handler_duration_seconds_bucket{consumer="fetcher",outcome="ok",type="blob-committed",le="0.064"} 1`,
		"# TYPE stevedore_projection_lag_events gauge",
		"go_goroutines ",
		"process_resident_memory_bytes ",
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if v := Value(TasksExited.WithLabelValues(ExitOK)); v != 1 {
		t.Errorf("Value = %v, want 1", v)
	}
}
