package oci

import (
	"bufio"
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/stevedore/stevedore/pkg/errdefs"
)

// ParseMount parses a --mount value: comma-separated key[=value] fields
// (CSV-quoted if a value holds a comma), as Docker:
//
//	type=bind,src=/host,dst=/ctr[,ro]
//
// Keys: type (only "bind"; the default), source|src, destination|dst|target,
// ro|readonly (alone or =true/false/1/0). Source and destination are required
// and must be absolute; the source is not checked for existence here
// (Generate does). Errors wrap errdefs.ErrInvalidArgument.
func ParseMount(s string) (Mount, error) {
	bad := func(format string, a ...any) (Mount, error) {
		return Mount{}, fmt.Errorf("invalid mount %q: %s: %w", s, fmt.Sprintf(format, a...), errdefs.ErrInvalidArgument)
	}
	r := csv.NewReader(strings.NewReader(s))
	fields, err := r.Read()
	if err != nil {
		return bad("%v", err)
	}
	m := Mount{Type: "bind"}
	seen := map[string]bool{}
	for _, f := range fields {
		key, val, hasVal := strings.Cut(f, "=")
		key = strings.ToLower(strings.TrimSpace(key))
		canon := key
		switch key {
		case "src":
			canon = "source"
		case "dst", "target":
			canon = "destination"
		case "ro":
			canon = "readonly"
		}
		if seen[canon] {
			return bad("%s given twice", canon)
		}
		seen[canon] = true
		switch canon {
		case "type":
			if val != "bind" {
				return bad("type %q is not supported (only bind)", val)
			}
		case "source":
			if !hasVal || val == "" {
				return bad("empty source")
			}
			m.Source = val
		case "destination":
			if !hasVal || val == "" {
				return bad("empty destination")
			}
			m.Destination = val
		case "readonly":
			if !hasVal {
				m.ReadOnly = true
				break
			}
			b, err := strconv.ParseBool(val)
			if err != nil {
				return bad("readonly=%q is not a boolean", val)
			}
			m.ReadOnly = b
		case "":
			return bad("empty field")
		default:
			return bad("unknown key %q", key)
		}
	}
	switch {
	case m.Source == "":
		return bad("source is required")
	case m.Destination == "":
		return bad("destination is required")
	case !strings.HasPrefix(m.Source, "/"):
		return bad("source %s is not an absolute path", m.Source)
	case !strings.HasPrefix(m.Destination, "/"):
		return bad("destination %s is not an absolute path", m.Destination)
	}
	return m, nil
}

// ParseMemory parses a size in bytes: a number (decimals allowed) with an
// optional binary unit b, k, m, g, t or p (with or without a trailing "b",
// any case): "1048576", "100k", "512m", "1.5g". Errors wrap
// errdefs.ErrInvalidArgument.
func ParseMemory(s string) (int64, error) {
	bad := func(why string) (int64, error) {
		return 0, fmt.Errorf("invalid size %q: %s: %w", s, why, errdefs.ErrInvalidArgument)
	}
	t := strings.ToLower(strings.TrimSpace(s))
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := t, ""
	if i >= 0 {
		num, unit = t[:i], t[i:]
	}
	if num == "" {
		return bad("no number")
	}
	mult := map[string]float64{
		"": 1, "b": 1,
		"k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10,
		"m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
		"g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
		"t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40,
		"p": 1 << 50, "pb": 1 << 50, "pib": 1 << 50,
	}[unit]
	if mult == 0 {
		return bad("unknown unit " + strconv.Quote(unit))
	}
	if !strings.Contains(num, ".") {
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil || n > math.MaxInt64/int64(mult) {
			return bad("too large")
		}
		return n * int64(mult), nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return bad("not a number")
	}
	v := f * mult
	if v >= math.MaxInt64 {
		return bad("too large")
	}
	return int64(v), nil
}

// maxEnvLine caps one line of an env file.
const maxEnvLine = 1 << 20

// ParseEnvFile reads a Docker env file: one KEY=VAL per line, values taken
// literally (no quote removal, trailing spaces kept, a trailing "\r" dropped);
// blank lines and lines starting with "#" are skipped; leading whitespace is
// ignored; a bare KEY takes its value from this process's environment and is
// dropped if unset there. A name containing whitespace, an empty name or
// invalid UTF-8 is an error wrapping errdefs.ErrInvalidArgument.
func ParseEnvFile(r io.Reader) ([]string, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxEnvLine)
	var out []string
	for n := 1; sc.Scan(); n++ {
		b := sc.Bytes()
		if n == 1 {
			b = []byte(strings.TrimPrefix(string(b), "\uFEFF"))
		}
		if !utf8.Valid(b) {
			return nil, fmt.Errorf("env file line %d: invalid UTF-8: %w", n, errdefs.ErrInvalidArgument)
		}
		line := strings.TrimSuffix(strings.TrimLeft(string(b), " \t\v\f"), "\r")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		if !ok {
			key = strings.TrimRight(key, " \t\v\f")
		}
		switch {
		case key == "":
			return nil, fmt.Errorf("env file line %d: no variable name: %w", n, errdefs.ErrInvalidArgument)
		case strings.ContainsAny(key, " \t\v\f\x00"):
			return nil, fmt.Errorf("env file line %d: variable %q contains whitespace: %w", n, key, errdefs.ErrInvalidArgument)
		}
		if ok {
			out = append(out, key+"="+val)
		} else if v, found := os.LookupEnv(key); found {
			out = append(out, key+"="+v)
		}
	}
	if err := sc.Err(); err != nil {
		if err == bufio.ErrTooLong {
			return nil, fmt.Errorf("env file: line longer than %d bytes: %w", maxEnvLine, errdefs.ErrInvalidArgument)
		}
		return nil, fmt.Errorf("read env file: %w", err)
	}
	return out, nil
}
