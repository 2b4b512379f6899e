package oci

import (
	"reflect"
	"strings"
	"testing"

	"github.com/stevedore/stevedore/pkg/errdefs"
)

func TestParseMount(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Mount
		msg  string // non-empty: an ErrInvalidArgument containing it
	}{
		{name: "short keys", in: "type=bind,src=/a,dst=/b", want: Mount{Type: "bind", Source: "/a", Destination: "/b"}},
		{name: "long keys ro", in: "type=bind,source=/a,destination=/b,ro", want: Mount{Type: "bind", Source: "/a", Destination: "/b", ReadOnly: true}},
		{name: "target readonly", in: "type=bind,source=/a,target=/b,readonly", want: Mount{Type: "bind", Source: "/a", Destination: "/b", ReadOnly: true}},
		{name: "readonly=true", in: "src=/a,dst=/b,readonly=true", want: Mount{Type: "bind", Source: "/a", Destination: "/b", ReadOnly: true}},
		{name: "ro=0", in: "type=bind,src=/a,dst=/b,ro=0", want: Mount{Type: "bind", Source: "/a", Destination: "/b"}},
		{name: "type defaults to bind", in: "src=/a,dst=/b", want: Mount{Type: "bind", Source: "/a", Destination: "/b"}},
		{name: "quoted comma", in: `type=bind,"src=/a,b",dst=/c`, want: Mount{Type: "bind", Source: "/a,b", Destination: "/c"}},
		{name: "key case", in: "Type=bind,SRC=/a,DST=/b", want: Mount{Type: "bind", Source: "/a", Destination: "/b"}},
		{name: "volume type", in: "type=volume,src=v,dst=/b", msg: `type "volume" is not supported`},
		{name: "missing source", in: "type=bind,dst=/b", msg: "source is required"},
		{name: "missing destination", in: "type=bind,src=/a", msg: "destination is required"},
		{name: "relative source", in: "type=bind,src=a,dst=/b", msg: "source a is not an absolute path"},
		{name: "relative destination", in: "type=bind,src=/a,dst=b", msg: "destination b is not an absolute path"},
		{name: "unknown key", in: "type=bind,src=/a,dst=/b,bind-propagation=shared", msg: `unknown key "bind-propagation"`},
		{name: "duplicate", in: "src=/a,source=/c,dst=/b", msg: "source given twice"},
		{name: "bad bool", in: "src=/a,dst=/b,ro=maybe", msg: `readonly="maybe" is not a boolean`},
		{name: "empty field", in: "src=/a,,dst=/b", msg: "empty field"},
		{name: "empty", in: "", msg: "invalid mount"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMount(tt.in)
			if tt.msg != "" {
				checkErr(t, err, errdefs.ErrInvalidArgument, tt.msg)
				return
			}
			checkErr(t, err, nil, "")
			if got != tt.want {
				t.Fatalf("ParseMount(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseMemory(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    int64
		wantErr bool
	}{
		{name: "bytes", in: "1048576", want: 1048576},
		{name: "b suffix", in: "10b", want: 10},
		{name: "k", in: "100k", want: 100 << 10},
		{name: "m", in: "512m", want: 512 << 20},
		{name: "M", in: "512M", want: 512 << 20},
		{name: "mb", in: "512mb", want: 512 << 20},
		{name: "g", in: "1g", want: 1 << 30},
		{name: "GiB", in: "2GiB", want: 2 << 30},
		{name: "decimal", in: "1.5g", want: 3 << 29},
		{name: "t", in: "1t", want: 1 << 40},
		{name: "spaces trimmed", in: " 64m ", want: 64 << 20},
		{name: "zero", in: "0", want: 0},
		{name: "empty", in: "", wantErr: true},
		{name: "unit only", in: "m", wantErr: true},
		{name: "negative", in: "-1", wantErr: true},
		{name: "unknown unit", in: "10x", wantErr: true},
		{name: "space before unit", in: "10 m", wantErr: true},
		{name: "two dots", in: "1.2.3m", wantErr: true},
		{name: "overflow", in: "9999999999p", wantErr: true},
		{name: "int overflow", in: "99999999999999999999", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMemory(tt.in)
			if tt.wantErr {
				checkErr(t, err, errdefs.ErrInvalidArgument, "invalid size")
				return
			}
			checkErr(t, err, nil, "")
			if got != tt.want {
				t.Fatalf("ParseMemory(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseEnvFile(t *testing.T) {
	t.Setenv("STEVEDORE_TEST_FROM_ENV", "from-env")
	t.Setenv("STEVEDORE_TEST_EMPTY", "")
	tests := []struct {
		name string
		in   string
		want []string
		msg  string
	}{
		{
			name: "docker syntax",
			in: "# comment\n\nA=1\n  B=two words  \nC=\"quoted\"\nD=x=y\n   # indented comment\nE=\n" +
				"STEVEDORE_TEST_FROM_ENV\nSTEVEDORE_TEST_EMPTY\nSTEVEDORE_TEST_UNSET_XYZ\n",
			want: []string{"A=1", "B=two words  ", `C="quoted"`, "D=x=y", "E=", "STEVEDORE_TEST_FROM_ENV=from-env", "STEVEDORE_TEST_EMPTY="},
		},
		{name: "crlf and bom", in: "\uFEFFA=1\r\nB=2\r\n", want: []string{"A=1", "B=2"}},
		{name: "no trailing newline", in: "A=1", want: []string{"A=1"}},
		{name: "bare key with trailing space", in: "STEVEDORE_TEST_FROM_ENV  \n", want: []string{"STEVEDORE_TEST_FROM_ENV=from-env"}},
		{name: "empty file", in: "", want: nil},
		{name: "whitespace in name", in: "MY VAR=1\n", msg: `variable "MY VAR" contains whitespace`},
		{name: "no name", in: "A=1\n=value\n", msg: "line 2: no variable name"},
		{name: "invalid utf8", in: "A=\xff\n", msg: "line 1: invalid UTF-8"},
		{name: "line too long", in: "A=" + strings.Repeat("x", maxEnvLine+1), msg: "line longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseEnvFile(strings.NewReader(tt.in))
			if tt.msg != "" {
				checkErr(t, err, errdefs.ErrInvalidArgument, tt.msg)
				return
			}
			checkErr(t, err, nil, "")
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseEnvFile = %q, want %q", got, tt.want)
			}
		})
	}
}
