package profiling

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/metrics"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func TestRoutes(t *testing.T) {
	addr, stop, err := metrics.Serve("127.0.0.1:0", zerolog.Nop(), Routes(true)...)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	base := "http://" + addr
	if code, body := get(t, base+"/debug/pprof/"); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("index: %d %.200q", code, body)
	}
	// A named profile, in the text form: the goroutines include this test's.
	if code, body := get(t, base+"/debug/pprof/goroutine?debug=1"); code != http.StatusOK || !strings.Contains(body, "TestRoutes") {
		t.Errorf("goroutine profile: %d %.200q", code, body)
	}
	// A CPU profile is a gzipped protobuf.
	if code, body := get(t, base+"/debug/pprof/profile?seconds=1"); code != http.StatusOK || !strings.HasPrefix(body, "\x1f\x8b") {
		t.Errorf("CPU profile: %d, %d bytes", code, len(body))
	}
	// The command line may hold credentials: not served.
	if code, body := get(t, base+"/debug/pprof/cmdline"); code != http.StatusNotFound {
		t.Errorf("cmdline: %d %.200q, want 404", code, body)
	}
	if code, _ := get(t, base+"/metrics"); code != http.StatusOK {
		t.Errorf("metrics: %d", code)
	}
}

func TestDisabled(t *testing.T) {
	if r := Routes(false); len(r) != 0 {
		t.Fatalf("Routes(false) = %v", r)
	}
	addr, stop, err := metrics.Serve("127.0.0.1:0", zerolog.Nop(), Routes(false)...)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if code, _ := get(t, "http://"+addr+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("pprof served without --pprof: %d", code)
	}
}

func TestCheck(t *testing.T) {
	if err := Check(true, ""); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("--pprof without --metrics: %v", err)
	}
	if err := Check(true, "127.0.0.1:9450"); err != nil {
		t.Error(err)
	}
	if err := Check(false, ""); err != nil {
		t.Error(err)
	}
}
