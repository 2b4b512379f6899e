package events

import (
	"encoding/base64"
	"fmt"
	"regexp"
	"strings"
)

// Subject layout. Every token is safe: no '.', '*', '>' or whitespace.
const (
	// EventsStream is the JetStream stream holding the log.
	EventsStream = "STEVEDORE_EVENTS"
	// EventsPrefix prefixes every event subject: sd.evt.<ns>.<kind>.<id>.<type>.
	EventsPrefix = "sd.evt"
	// ProgressPrefix prefixes live progress ticks: sd.progress.<op>.
	ProgressPrefix = "sd.progress"
	// DefaultNamespace is used when none is given.
	DefaultNamespace = "default"
)

// Subject returns the event subject for the given parts.
func Subject(ns, kind, id string, t Type) string {
	return EventsPrefix + "." + ns + "." + kind + "." + id + "." + string(t)
}

// FilterSubject returns a subject filter; empty parts match any token.
func FilterSubject(ns, kind, id string, t Type) string {
	w := func(s string) string {
		if s == "" {
			return "*"
		}
		return s
	}
	return EventsPrefix + "." + w(ns) + "." + w(kind) + "." + w(id) + "." + w(string(t))
}

// ProgressSubject is where live progress for operation op is published.
func ProgressSubject(op string) string { return ProgressPrefix + "." + op }

var nsRe = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// ContainerIDPattern is what a container id must match: one token of the
// container's event and stdio subjects, and a runc id.
const ContainerIDPattern = `^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`

var containerIDRe = regexp.MustCompile(ContainerIDPattern)

// ValidContainerID reports whether id matches ContainerIDPattern.
func ValidContainerID(id string) bool { return containerIDRe.MatchString(id) }

// ValidateNamespace checks that ns can be a subject token.
func ValidateNamespace(ns string) error {
	if !nsRe.MatchString(ns) {
		return fmt.Errorf("namespace %q: must match %s", ns, nsRe)
	}
	return nil
}

// EncodeToken encodes an arbitrary string (an image name) as one subject token.
func EncodeToken(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// DecodeToken reverses EncodeToken.
func DecodeToken(tok string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return "", fmt.Errorf("decode subject token %q: %w", tok, err)
	}
	return string(b), nil
}

// ParseSubject splits an event subject into its parts.
func ParseSubject(subj string) (ns, kind, id string, t Type, err error) {
	parts := strings.Split(subj, ".")
	if len(parts) != 6 || parts[0]+"."+parts[1] != EventsPrefix {
		return "", "", "", "", fmt.Errorf("not an event subject: %q", subj)
	}
	return parts[2], parts[3], parts[4], Type(parts[5]), nil
}
