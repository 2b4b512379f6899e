package oci

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/stevedore/stevedore/pkg/errdefs"
)

func fileUID(t *testing.T, fi fs.FileInfo) int {
	t.Helper()
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		t.Fatalf("no stat_t for %s", fi.Name())
	}
	return int(st.Uid)
}

func TestUser(t *testing.T) {
	rootfs := usersRootfs(t)
	noFiles := newRootfs(t, nil)
	tests := []struct {
		name     string
		rootfs   string
		imgUser  string
		user     string
		want     specs.User
		wantHome string
		class    error
		msg      string
	}{
		{name: "default root", want: specs.User{UID: 0, GID: 0}, wantHome: "/root"},
		{name: "image user", imgUser: "app", want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{50, 29}}, wantHome: "/home/app"},
		{name: "option overrides image user", imgUser: "app", user: "svc", want: specs.User{UID: 1001, GID: 1001, AdditionalGids: []uint32{50}}, wantHome: "/srv"},
		{name: "name", user: "app", want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{50, 29}}, wantHome: "/home/app"},
		{name: "uid in passwd", user: "1000", want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{50, 29}}, wantHome: "/home/app"},
		{name: "uid not in passwd", user: "4242", want: specs.User{UID: 4242, GID: 0}, wantHome: "/"},
		{name: "name:group", user: "app:staff", want: specs.User{UID: 1000, GID: 50}, wantHome: "/home/app"},
		{name: "uid:gid", user: "1000:29", want: specs.User{UID: 1000, GID: 29}, wantHome: "/home/app"},
		{name: "name:gid not in group file", user: "app:7777", want: specs.User{UID: 1000, GID: 7777}, wantHome: "/home/app"},
		{name: "uid:group", user: "4242:staff", want: specs.User{UID: 4242, GID: 50}, wantHome: "/"},
		{name: "unknown uid:gid", user: "4242:4343", want: specs.User{UID: 4242, GID: 4343}, wantHome: "/"},
		{name: "root explicit", user: "root", want: specs.User{UID: 0, GID: 0}, wantHome: "/root"},
		{name: "malformed passwd line skipped", user: "broken", class: errdefs.ErrNotFound, msg: "unable to find user broken: no matching entries in passwd file"},
		{name: "unknown user", user: "nobody", class: errdefs.ErrNotFound, msg: "unable to find user nobody: no matching entries in passwd file"},
		{name: "unknown image user", imgUser: "ghost", class: errdefs.ErrNotFound, msg: "unable to find user ghost"},
		{name: "unknown group", user: "app:nogroup", class: errdefs.ErrNotFound, msg: "unable to find group nogroup: no matching entries in group file"},
		{name: "uid out of range", user: "99999999999", class: errdefs.ErrInvalidArgument, msg: "uid out of range"},
		{name: "negative uid", user: "-1", class: errdefs.ErrInvalidArgument, msg: "uid out of range"},
		{name: "empty user part is root", user: ":staff", want: specs.User{UID: 0, GID: 50}, wantHome: "/root"},
		{name: "empty group part", user: "app:", class: errdefs.ErrInvalidArgument, msg: "invalid user"},
		{name: "no passwd file, numeric", rootfs: noFiles, user: "1000:1000", want: specs.User{UID: 1000, GID: 1000}, wantHome: "/"},
		{name: "no passwd file, default", rootfs: noFiles, want: specs.User{UID: 0, GID: 0}, wantHome: "/"},
		{name: "no passwd file, name", rootfs: noFiles, user: "app", class: errdefs.ErrNotFound, msg: "unable to find user app: no matching entries in passwd file"},
		{name: "no group file, group name", rootfs: noFiles, user: "0:wheel", class: errdefs.ErrNotFound, msg: "unable to find group wheel"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.rootfs
			if r == "" {
				r = rootfs
			}
			s, err := generate(t, r, ocispec.ImageConfig{User: tt.imgUser}, Options{User: tt.user})
			checkErr(t, err, tt.class, tt.msg)
			if err != nil {
				return
			}
			if !reflect.DeepEqual(s.Process.User, tt.want) {
				t.Fatalf("user = %+v, want %+v", s.Process.User, tt.want)
			}
			if home, _ := envValue(s.Process.Env, "HOME"); home != tt.wantHome {
				t.Fatalf("HOME = %q, want %q", home, tt.wantHome)
			}
		})
	}
}

// TestUserHostileRootfs: /etc/passwd and /etc/group are read from the rootfs
// only. A symlink pointing at a host file is resolved as if the rootfs were
// "/": the host's sentinel passwd must never be read.
func TestUserHostileRootfs(t *testing.T) {
	host := t.TempDir()
	sentinelPasswd := filepath.Join(host, "shadow")
	sentinelGroup := filepath.Join(host, "gshadow")
	// If any of these were read, app would resolve to 4242 with HOME=/host-secret.
	if err := os.WriteFile(sentinelPasswd, []byte("app:x:4242:4242::/host-secret:/bin/sh\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sentinelGroup, []byte("hostgrp:x:4343:app\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fifoRootfs := newRootfs(t, nil)
	if err := os.MkdirAll(filepath.Join(fifoRootfs, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(fifoRootfs, "etc/passwd"), 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		rootfs   string
		files    map[string]string
		user     string
		want     specs.User
		wantHome string
		class    error
		msg      string
	}{
		{
			name:  "absolute passwd symlink to host file",
			files: map[string]string{"etc/passwd": "->" + sentinelPasswd},
			user:  "app", class: errdefs.ErrNotFound, msg: "unable to find user app",
		},
		{
			name:  "relative passwd symlink climbing out",
			files: map[string]string{"etc/passwd": "->../../../../../../../../../.." + sentinelPasswd},
			user:  "app", class: errdefs.ErrNotFound, msg: "unable to find user app",
		},
		{
			name:  "etc directory symlink to host dir",
			files: map[string]string{"etc": "->" + host, "passwd": "x"},
			user:  "app", class: errdefs.ErrNotFound, msg: "unable to find user app",
		},
		{
			name: "symlink target exists inside rootfs: the rootfs's file is read",
			files: map[string]string{
				"etc/passwd":       "->" + sentinelPasswd,
				sentinelPasswd[1:]: "app:x:1000:1000::/home/app:/bin/sh\n",
			},
			user: "app", want: specs.User{UID: 1000, GID: 1000}, wantHome: "/home/app",
		},
		{
			name:  "numeric user with escaping passwd gets no host home",
			files: map[string]string{"etc/passwd": "->" + sentinelPasswd},
			user:  "4242", want: specs.User{UID: 4242, GID: 0}, wantHome: "/",
		},
		{
			name: "group symlink to host file",
			files: map[string]string{
				"etc/passwd": "app:x:1000:1000::/home/app:/bin/sh\n",
				"etc/group":  "->" + sentinelGroup,
			},
			user: "app:hostgrp", class: errdefs.ErrNotFound, msg: "unable to find group hostgrp",
		},
		{
			name: "group symlink to host file gives no host memberships",
			files: map[string]string{
				"etc/passwd": "app:x:1000:1000::/home/app:/bin/sh\n",
				"etc/group":  "->" + sentinelGroup,
			},
			user: "app", want: specs.User{UID: 1000, GID: 1000}, wantHome: "/home/app",
		},
		{
			name:   "passwd is a fifo: refused, not blocked on",
			rootfs: fifoRootfs,
			user:   "app", class: errdefs.ErrInvalidArgument, msg: "/etc/passwd in rootfs is not a regular file",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.rootfs
			if r == "" {
				r = newRootfs(t, tt.files)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			done := make(chan struct{})
			var s *specs.Spec
			var err error
			go func() {
				defer close(done)
				s, err = Generate(ctx, r, ocispec.ImageConfig{Cmd: []string{"/bin/true"}}, Options{User: tt.user})
			}()
			select {
			case <-done:
			case <-ctx.Done():
				t.Fatal("Generate blocked")
			}
			checkErr(t, err, tt.class, tt.msg)
			if err != nil {
				return
			}
			if !reflect.DeepEqual(s.Process.User, tt.want) {
				t.Fatalf("user = %+v, want %+v (4242/4343 means the host file was read)", s.Process.User, tt.want)
			}
			if home, _ := envValue(s.Process.Env, "HOME"); home != tt.wantHome {
				t.Fatalf("HOME = %q, want %q", home, tt.wantHome)
			}
		})
	}
}
