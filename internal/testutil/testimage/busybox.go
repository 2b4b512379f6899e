package testimage

import (
	"fmt"
	"os"
	"runtime"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// BusyboxApplets are linked to busybox in /bin of the busybox image.
var BusyboxApplets = []string{"sh", "ls", "cat", "echo", "true", "false", "sleep", "id", "env", "pwd", "mkdir", "rm", "touch", "ps", "uname", "hostname", "wc", "head", "tail", "grep", "sed", "date", "kill", "whoami", "stat", "find", "du", "df", "mount", "dd", "tr", "printf", "test", "seq", "yes"}

// Busybox builds a one-layer busybox image from a static busybox binary on
// this machine (Debian's busybox-static installs /bin/busybox), with an
// /etc/passwd and /etc/group that know root, app (1000) and nobody.
func Busybox(busyboxPath string, c Compression, f Format) (*Image, error) {
	bin, err := os.ReadFile(busyboxPath)
	if err != nil {
		return nil, fmt.Errorf("testimage: busybox binary: %w (install busybox-static)", err)
	}
	entries := []Entry{
		Dir("bin", 0o755), Dir("etc", 0o755), Dir("tmp", 0o1777), Dir("root", 0o700),
		Dir("home", 0o755), {Name: "home/app", Type: '5', Mode: 0o755, UID: 1000, GID: 1000},
		File("bin/busybox", bin, 0o755),
		File("etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"), 0o644),
		File("etc/group", []byte("root:x:0:\napp:x:1000:\nstaff:x:50:app\nnogroup:x:65534:\n"), 0o644),
	}
	for _, a := range BusyboxApplets {
		entries = append(entries, Hardlink("bin/"+a, "bin/busybox"))
	}
	layer, err := NewLayer(c, entries...)
	if err != nil {
		return nil, err
	}
	created := time.Now().UTC().Truncate(time.Second)
	return &Image{
		Format: f,
		Layers: []*Layer{layer},
		Config: ocispec.Image{
			Created:  &created,
			Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
			Config: ocispec.ImageConfig{
				Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
				Cmd:        []string{"sh"},
				WorkingDir: "/",
			},
		},
	}, nil
}
