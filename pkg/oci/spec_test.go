package oci

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/stevedore/stevedore/pkg/errdefs"
)

func TestProcessArgs(t *testing.T) {
	rootfs := newRootfs(t, nil)
	ep := []string{"/entry", "--flag"}
	cmd := []string{"serve", "--port=80"}
	tests := []struct {
		name      string
		imgEP     []string
		imgCmd    []string
		opts      Options
		want      []string
		wantError bool
	}{
		{name: "image entrypoint and cmd", imgEP: ep, imgCmd: cmd, want: []string{"/entry", "--flag", "serve", "--port=80"}},
		{name: "image cmd only", imgCmd: []string{"/bin/sh", "-c", "echo"}, want: []string{"/bin/sh", "-c", "echo"}},
		{name: "image entrypoint only", imgEP: ep, want: []string{"/entry", "--flag"}},
		{name: "args replace cmd, keep entrypoint", imgEP: ep, imgCmd: cmd, opts: Options{Args: []string{"debug"}}, want: []string{"/entry", "--flag", "debug"}},
		{name: "args replace cmd without entrypoint", imgCmd: cmd, opts: Options{Args: []string{"/bin/ls", "-l"}}, want: []string{"/bin/ls", "-l"}},
		{name: "entrypoint override drops image cmd", imgEP: ep, imgCmd: cmd, opts: Options{EntrypointSet: true, Entrypoint: []string{"/bin/sh"}}, want: []string{"/bin/sh"}},
		{name: "entrypoint override with args", imgEP: ep, imgCmd: cmd, opts: Options{EntrypointSet: true, Entrypoint: []string{"/bin/sh"}, Args: []string{"-c", "id"}}, want: []string{"/bin/sh", "-c", "id"}},
		{name: "entrypoint cleared, args run", imgEP: ep, imgCmd: cmd, opts: Options{EntrypointSet: true, Args: []string{"/bin/id"}}, want: []string{"/bin/id"}},
		{name: "entrypoint cleared with empty string", imgEP: ep, imgCmd: cmd, opts: Options{EntrypointSet: true, Entrypoint: []string{""}, Args: []string{"/bin/id"}}, want: []string{"/bin/id"}},
		{name: "entrypoint cleared, no args", imgEP: ep, imgCmd: cmd, opts: Options{EntrypointSet: true}, wantError: true},
		{name: "entrypoint not set ignores Entrypoint field", imgEP: ep, opts: Options{Entrypoint: []string{"/ignored"}}, want: []string{"/entry", "--flag"}},
		{name: "nothing at all", wantError: true},
		{name: "empty argv0", imgCmd: []string{""}, wantError: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Generate(context.Background(), rootfs, ocispec.ImageConfig{Entrypoint: tt.imgEP, Cmd: tt.imgCmd}, tt.opts)
			if tt.wantError {
				checkErr(t, err, errdefs.ErrInvalidArgument, "no command specified")
				return
			}
			checkErr(t, err, nil, "")
			if !reflect.DeepEqual(s.Process.Args, tt.want) {
				t.Fatalf("args = %q, want %q", s.Process.Args, tt.want)
			}
		})
	}
}

func TestEnv(t *testing.T) {
	rootfs := usersRootfs(t)
	tests := []struct {
		name     string
		imgEnv   []string
		imgUser  string
		opts     Options
		want     []string
		wantErr  error
		errorMsg string
	}{
		{
			name: "defaults only",
			want: []string{"PATH=" + DefaultPath, "HOSTNAME=stevedore", "HOME=/root"},
		},
		{
			name:   "image PATH kept, user overrides by key in place",
			imgEnv: []string{"PATH=/opt/bin", "A=1", "B=2"},
			opts:   Options{Env: []string{"B=two", "C=3"}, Hostname: "web"},
			want:   []string{"PATH=/opt/bin", "A=1", "B=two", "HOSTNAME=web", "C=3", "HOME=/root"},
		},
		{
			name:   "bare key unsets",
			imgEnv: []string{"A=1", "SECRET=x"},
			opts:   Options{Env: []string{"SECRET", "NOTSET"}},
			want:   []string{"A=1", "PATH=" + DefaultPath, "HOSTNAME=stevedore", "HOME=/root"},
		},
		{
			name:   "unset then set again",
			imgEnv: []string{"A=1", "B=2"},
			opts:   Options{Env: []string{"A", "A=3"}},
			want:   []string{"A=3", "B=2", "PATH=" + DefaultPath, "HOSTNAME=stevedore", "HOME=/root"},
		},
		{
			name:   "value with equals and empty value",
			imgEnv: []string{"EMPTY="},
			opts:   Options{Env: []string{"URL=a=b=c"}},
			want:   []string{"EMPTY=", "PATH=" + DefaultPath, "HOSTNAME=stevedore", "URL=a=b=c", "HOME=/root"},
		},
		{
			name:    "HOME from the image user's passwd entry",
			imgUser: "app",
			want:    []string{"PATH=" + DefaultPath, "HOSTNAME=stevedore", "HOME=/home/app"},
		},
		{
			name:   "HOME set by image wins over passwd",
			imgEnv: []string{"HOME=/data"},
			opts:   Options{User: "app"},
			want:   []string{"HOME=/data", "PATH=" + DefaultPath, "HOSTNAME=stevedore"},
		},
		{
			name: "HOME is / for a uid without passwd entry",
			opts: Options{User: "4242"},
			want: []string{"PATH=" + DefaultPath, "HOSTNAME=stevedore", "HOME=/"},
		},
		{
			name: "HOME is / for an entry with empty home",
			opts: Options{User: "nohome"},
			want: []string{"PATH=" + DefaultPath, "HOSTNAME=stevedore", "HOME=/"},
		},
		{
			name: "terminal sets TERM",
			opts: Options{Terminal: true},
			want: []string{"PATH=" + DefaultPath, "HOSTNAME=stevedore", "TERM=xterm", "HOME=/root"},
		},
		{
			name:     "empty key rejected",
			opts:     Options{Env: []string{"=x"}},
			wantErr:  errdefs.ErrInvalidArgument,
			errorMsg: `invalid env entry "=x"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := generate(t, rootfs, ocispec.ImageConfig{Env: tt.imgEnv, User: tt.imgUser}, tt.opts)
			checkErr(t, err, tt.wantErr, tt.errorMsg)
			if err != nil {
				return
			}
			if !reflect.DeepEqual(s.Process.Env, tt.want) {
				t.Fatalf("env = %q\nwant  %q", s.Process.Env, tt.want)
			}
		})
	}
}

func TestWorkingDir(t *testing.T) {
	requireRoot(t) // chown
	outside := t.TempDir()
	tests := []struct {
		name     string
		files    map[string]string
		imgWD    string
		optWD    string
		user     string
		wantCwd  string
		check    string // path inside the rootfs that must now be a dir owned by wantUID
		wantUID  int
		wantErr  error
		errorMsg string
	}{
		{name: "default is /", wantCwd: "/", check: "/", wantUID: 0},
		{name: "image workdir existing", files: map[string]string{"srv/keep": ""}, imgWD: "/srv", wantCwd: "/srv", check: "/srv", wantUID: 0},
		{name: "option wins over image", imgWD: "/srv", optWD: "/opt/x", wantCwd: "/opt/x", check: "/opt/x", wantUID: 0},
		{name: "created owned by container user", optWD: "/home/app/work/deep", user: "app", wantCwd: "/home/app/work/deep", check: "/home/app/work", wantUID: 1000},
		{name: "created leaf owned by numeric user", optWD: "/data", user: "4242:4242", wantCwd: "/data", check: "/data", wantUID: 4242},
		{name: "path is cleaned", optWD: "/a/../b/./c/", wantCwd: "/b/c", check: "/b/c", wantUID: 0},
		{name: "relative rejected", optWD: "work", wantErr: errdefs.ErrInvalidArgument, errorMsg: "working directory work is not an absolute path"},
		{name: "file rejected", files: map[string]string{"x": "data"}, optWD: "/x", wantErr: errdefs.ErrInvalidArgument, errorMsg: "working directory /x is not a directory"},
		{name: "below a file rejected", files: map[string]string{"x": "data"}, optWD: "/x/y", wantErr: errdefs.ErrInvalidArgument, errorMsg: "working directory /x/y is not a directory"},
		{name: "symlink to a file rejected", files: map[string]string{"x": "data", "l": "->/x"}, optWD: "/l", wantErr: errdefs.ErrInvalidArgument, errorMsg: "working directory /l is not a directory"},
		{
			name:  "absolute symlink out of rootfs resolved inside",
			files: map[string]string{"work": "->" + outside + "/escaped"},
			optWD: "/work", user: "app", wantCwd: "/work", check: outside + "/escaped", wantUID: 1000,
		},
		{
			name:  "relative symlink out of rootfs resolved inside",
			files: map[string]string{"a/work": "->../../../../../../../../" + outside + "/escaped2"},
			optWD: "/a/work/sub", wantCwd: "/a/work/sub", check: outside + "/escaped2/sub", wantUID: 0,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := map[string]string{"etc/passwd": testPasswd, "etc/group": testGroup}
			for k, v := range tt.files {
				files[k] = v
			}
			rootfs := newRootfs(t, files)
			s, err := generate(t, rootfs, ocispec.ImageConfig{WorkingDir: tt.imgWD}, Options{WorkingDir: tt.optWD, User: tt.user})
			checkErr(t, err, tt.wantErr, tt.errorMsg)
			if err != nil {
				return
			}
			if s.Process.Cwd != tt.wantCwd {
				t.Fatalf("cwd = %q, want %q", s.Process.Cwd, tt.wantCwd)
			}
			fi, err := os.Stat(filepath.Join(rootfs, tt.check))
			if err != nil {
				t.Fatalf("workdir not created in rootfs: %v", err)
			}
			if !fi.IsDir() {
				t.Fatalf("%s is not a directory", tt.check)
			}
			if uid := fileUID(t, fi); uid != tt.wantUID {
				t.Fatalf("%s owned by %d, want %d", tt.check, uid, tt.wantUID)
			}
		})
	}
	// Nothing was created on the host through the escaping symlinks.
	if entries, err := os.ReadDir(outside); err != nil || len(entries) != 0 {
		t.Fatalf("host dir %s was written through a symlink: %v %v", outside, entries, err)
	}
}

func TestBindMounts(t *testing.T) {
	rootfs := newRootfs(t, nil)
	src := t.TempDir()
	tests := []struct {
		name     string
		mounts   []Mount
		want     []specs.Mount // user mounts, expected at the end
		wantErr  error
		errorMsg string
	}{
		{
			name:   "rw and ro",
			mounts: []Mount{{Type: "bind", Source: src, Destination: "/data"}, {Source: src + "/", Destination: "/ro/", ReadOnly: true}},
			want: []specs.Mount{
				{Destination: "/data", Type: "bind", Source: src, Options: []string{"rbind", "rw"}},
				{Destination: "/ro", Type: "bind", Source: src, Options: []string{"rbind", "ro"}},
			},
		},
		{name: "missing source", mounts: []Mount{{Source: "/nonexistent/stevedore-src", Destination: "/x"}}, wantErr: errdefs.ErrNotFound, errorMsg: "bind source /nonexistent/stevedore-src does not exist"},
		{name: "relative source", mounts: []Mount{{Source: "rel", Destination: "/x"}}, wantErr: errdefs.ErrInvalidArgument, errorMsg: "not an absolute path"},
		{name: "relative destination", mounts: []Mount{{Source: src, Destination: "x"}}, wantErr: errdefs.ErrInvalidArgument, errorMsg: "bind destination"},
		{name: "root destination", mounts: []Mount{{Source: src, Destination: "/"}}, wantErr: errdefs.ErrInvalidArgument, errorMsg: "bind destination"},
		{name: "non-bind type", mounts: []Mount{{Type: "tmpfs", Source: src, Destination: "/x"}}, wantErr: errdefs.ErrInvalidArgument, errorMsg: `mount type "tmpfs" is not supported`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := generate(t, rootfs, ocispec.ImageConfig{}, Options{Mounts: tt.mounts})
			checkErr(t, err, tt.wantErr, tt.errorMsg)
			if err != nil {
				return
			}
			got := s.Mounts[len(s.Mounts)-len(tt.want):]
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("user mounts = %+v\nwant %+v", got, tt.want)
			}
		})
	}

	t.Run("user mount replaces default /dev/shm", func(t *testing.T) {
		s := mustGenerate(t, rootfs, ocispec.ImageConfig{}, Options{Mounts: []Mount{{Source: src, Destination: "/dev/shm"}}})
		var n int
		for _, m := range s.Mounts {
			if m.Destination == "/dev/shm" {
				n++
				if m.Type != "bind" || m.Source != src {
					t.Fatalf("/dev/shm mount = %+v, want the user's bind", m)
				}
			}
		}
		if n != 1 {
			t.Fatalf("%d mounts on /dev/shm, want 1", n)
		}
	})
}

func TestNetwork(t *testing.T) {
	rootfs := newRootfs(t, nil)
	hostFiles := []string{}
	for _, f := range []string{"/etc/resolv.conf", "/etc/hosts"} {
		if _, err := os.Stat(f); err == nil {
			hostFiles = append(hostFiles, f)
		}
	}
	tests := []struct {
		name       string
		network    string
		wantNetNS  bool
		wantBinds  []string
		wantErrMsg string
	}{
		{name: "default is none", network: "", wantNetNS: true},
		{name: "none", network: "none", wantNetNS: true},
		{name: "host", network: "host", wantNetNS: false, wantBinds: hostFiles},
		{name: "bridge unsupported", network: "bridge", wantErrMsg: `unsupported network mode "bridge"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := generate(t, rootfs, ocispec.ImageConfig{}, Options{Network: tt.network})
			if tt.wantErrMsg != "" {
				checkErr(t, err, errdefs.ErrInvalidArgument, tt.wantErrMsg)
				return
			}
			checkErr(t, err, nil, "")
			var types []specs.LinuxNamespaceType
			for _, ns := range s.Linux.Namespaces {
				if ns.Path != "" {
					t.Fatalf("namespace %s joins %s, want a new one", ns.Type, ns.Path)
				}
				types = append(types, ns.Type)
			}
			want := []specs.LinuxNamespaceType{specs.PIDNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.MountNamespace}
			if tt.wantNetNS {
				want = append(want, specs.NetworkNamespace)
			}
			want = append(want, specs.CgroupNamespace)
			if !reflect.DeepEqual(types, want) {
				t.Fatalf("namespaces = %v, want %v", types, want)
			}
			var binds []string
			for _, m := range s.Mounts {
				if m.Type == "bind" {
					if m.Source != m.Destination || !slices.Equal(m.Options, []string{"rbind", "ro"}) {
						t.Fatalf("host file mount = %+v, want a read-only bind of the same path", m)
					}
					binds = append(binds, m.Destination)
				}
			}
			if !slices.Equal(binds, tt.wantBinds) {
				t.Fatalf("bind mounts = %v, want %v", binds, tt.wantBinds)
			}
		})
	}
}

func TestResources(t *testing.T) {
	rootfs := newRootfs(t, nil)
	i64 := func(v int64) *int64 { return &v }
	u64 := func(v uint64) *uint64 { return &v }
	tests := []struct {
		name     string
		opts     Options
		memory   *specs.LinuxMemory
		cpu      *specs.LinuxCPU
		pids     *specs.LinuxPids
		wantErr  string
		errClass error
	}{
		{name: "none"},
		{name: "memory sets swap equal", opts: Options{MemoryLimit: 512 << 20}, memory: &specs.LinuxMemory{Limit: i64(512 << 20), Swap: i64(512 << 20)}},
		{name: "cpus 1.5", opts: Options{CPUs: 1.5}, cpu: &specs.LinuxCPU{Quota: i64(150000), Period: u64(100000)}},
		{name: "cpus 0.01", opts: Options{CPUs: 0.01}, cpu: &specs.LinuxCPU{Quota: i64(1000), Period: u64(100000)}},
		{name: "pids", opts: Options{PidsLimit: 100}, pids: &specs.LinuxPids{Limit: i64(100)}},
		{name: "negative pids is unlimited", opts: Options{PidsLimit: -1}},
		{
			name:   "all",
			opts:   Options{MemoryLimit: 1 << 30, CPUs: 2, PidsLimit: 10},
			memory: &specs.LinuxMemory{Limit: i64(1 << 30), Swap: i64(1 << 30)},
			cpu:    &specs.LinuxCPU{Quota: i64(200000), Period: u64(100000)},
			pids:   &specs.LinuxPids{Limit: i64(10)},
		},
		{name: "negative memory", opts: Options{MemoryLimit: -1}, errClass: errdefs.ErrInvalidArgument, wantErr: "memory limit -1 is negative"},
		{name: "tiny memory", opts: Options{MemoryLimit: 1 << 20}, errClass: errdefs.ErrInvalidArgument, wantErr: "below the minimum"},
		{name: "negative cpus", opts: Options{CPUs: -1}, errClass: errdefs.ErrInvalidArgument, wantErr: "cpus -1"},
		{name: "too few cpus", opts: Options{CPUs: 0.001}, errClass: errdefs.ErrInvalidArgument, wantErr: "out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := generate(t, rootfs, ocispec.ImageConfig{}, tt.opts)
			checkErr(t, err, tt.errClass, tt.wantErr)
			if err != nil {
				return
			}
			r := s.Linux.Resources
			if !reflect.DeepEqual(r.Memory, tt.memory) || !reflect.DeepEqual(r.CPU, tt.cpu) || !reflect.DeepEqual(r.Pids, tt.pids) {
				t.Fatalf("resources memory=%+v cpu=%+v pids=%+v\nwant memory=%+v cpu=%+v pids=%+v", r.Memory, r.CPU, r.Pids, tt.memory, tt.cpu, tt.pids)
			}
			if len(r.Devices) == 0 || r.Devices[0].Allow || r.Devices[0].Access != "rwm" {
				t.Fatalf("first device rule = %+v, want deny all", r.Devices)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	rootfs := newRootfs(t, nil)
	no := false
	tests := []struct {
		name  string
		opts  Options
		check func(t *testing.T, s *specs.Spec)
	}{
		{name: "docker defaults", check: func(t *testing.T, s *specs.Spec) {
			if s.Version != specs.Version || s.Root.Path != rootfs || s.Root.Readonly || s.Hostname != "stevedore" {
				t.Fatalf("version=%q root=%+v hostname=%q", s.Version, s.Root, s.Hostname)
			}
			p := s.Process
			if !p.NoNewPrivileges || p.Terminal {
				t.Fatalf("noNewPrivileges=%v terminal=%v", p.NoNewPrivileges, p.Terminal)
			}
			c := p.Capabilities
			if len(c.Bounding) != 14 || !slices.Equal(c.Bounding, DefaultCapabilities) || !slices.Equal(c.Effective, DefaultCapabilities) ||
				!slices.Equal(c.Permitted, DefaultCapabilities) || c.Inheritable != nil || c.Ambient != nil {
				t.Fatalf("capabilities = %+v", c)
			}
			if !reflect.DeepEqual(p.Rlimits, []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}}) {
				t.Fatalf("rlimits = %+v", p.Rlimits)
			}
			if !slices.Contains(s.Linux.MaskedPaths, "/proc/kcore") || len(s.Linux.MaskedPaths) != 10 ||
				!slices.Contains(s.Linux.ReadonlyPaths, "/proc/sys") || len(s.Linux.ReadonlyPaths) != 6 {
				t.Fatalf("masked=%v readonly=%v", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
			}
			var dests []string
			for _, m := range s.Mounts {
				dests = append(dests, m.Destination+":"+m.Type)
			}
			want := []string{"/proc:proc", "/dev:tmpfs", "/dev/pts:devpts", "/dev/shm:tmpfs", "/dev/mqueue:mqueue", "/sys:sysfs", "/sys/fs/cgroup:cgroup"}
			if !slices.Equal(dests, want) {
				t.Fatalf("mounts = %v, want %v", dests, want)
			}
			if s.Annotations != nil || s.Linux.CgroupsPath != "" {
				t.Fatalf("annotations=%v cgroupsPath=%q", s.Annotations, s.Linux.CgroupsPath)
			}
		}},
		{
			name: "options applied",
			opts: Options{
				ReadOnlyRootfs: true, Terminal: true, NoNewPrivileges: &no, Hostname: "box",
				Labels: map[string]string{"org.example/a": "b"}, CgroupsPath: "/stevedore/abc",
				Rlimits: []specs.POSIXRlimit{{Type: "RLIMIT_NPROC", Soft: 10, Hard: 20}},
			},
			check: func(t *testing.T, s *specs.Spec) {
				if !s.Root.Readonly || !s.Process.Terminal || s.Process.NoNewPrivileges || s.Hostname != "box" ||
					!reflect.DeepEqual(s.Annotations, map[string]string{"org.example/a": "b"}) || s.Linux.CgroupsPath != "/stevedore/abc" ||
					!reflect.DeepEqual(s.Process.Rlimits, []specs.POSIXRlimit{{Type: "RLIMIT_NPROC", Soft: 10, Hard: 20}}) {
					t.Fatalf("spec = %+v process = %+v", s, s.Process)
				}
				if v, _ := envValue(s.Process.Env, "HOSTNAME"); v != "box" {
					t.Fatalf("HOSTNAME = %q", v)
				}
			},
		},
		{name: "empty rlimits means none", opts: Options{Rlimits: []specs.POSIXRlimit{}}, check: func(t *testing.T, s *specs.Spec) {
			if len(s.Process.Rlimits) != 0 {
				t.Fatalf("rlimits = %+v", s.Process.Rlimits)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.check(t, mustGenerate(t, rootfs, ocispec.ImageConfig{}, tt.opts))
		})
	}
}

func TestGenerateErrors(t *testing.T) {
	rootfs := newRootfs(t, map[string]string{"file": "x"})
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name   string
		ctx    context.Context
		rootfs string
		opts   Options
		class  error
		msg    string
	}{
		{name: "missing rootfs", rootfs: filepath.Join(rootfs, "nope"), class: errdefs.ErrNotFound, msg: "does not exist"},
		{name: "rootfs is a file", rootfs: filepath.Join(rootfs, "file"), class: errdefs.ErrInvalidArgument, msg: "is not a directory"},
		{name: "bad rlimit", rootfs: rootfs, opts: Options{Rlimits: []specs.POSIXRlimit{{Type: "NOFILE"}}}, class: errdefs.ErrInvalidArgument, msg: "rlimit"},
		{name: "soft above hard", rootfs: rootfs, opts: Options{Rlimits: []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 2, Hard: 1}}}, class: errdefs.ErrInvalidArgument, msg: "soft limit 2 exceeds hard limit 1"},
		{name: "long hostname", rootfs: rootfs, opts: Options{Hostname: string(make([]byte, 65))}, class: errdefs.ErrInvalidArgument, msg: "invalid hostname"},
		{name: "canceled", ctx: canceled, rootfs: rootfs, class: context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := tt.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			_, err := Generate(ctx, tt.rootfs, ocispec.ImageConfig{Cmd: []string{"/bin/true"}}, tt.opts)
			if !errors.Is(err, tt.class) {
				t.Fatalf("error = %v, want %v", err, tt.class)
			}
			checkErr(t, err, tt.class, tt.msg)
		})
	}
}
