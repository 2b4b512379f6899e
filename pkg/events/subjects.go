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
	// EventsPrefix prefixes every event subject:
	// sd.evt.<ns>.<kind>.<id>.<type>.<node>.
	EventsPrefix = "sd.evt"
	// NoNode is the node token of an event that names no node.
	NoNode = "-"
	// ProgressPrefix prefixes live progress ticks: sd.progress.<op>.
	ProgressPrefix = "sd.progress"
	// DefaultNamespace is used when none is given.
	DefaultNamespace = "default"
)

// Subject returns the event subject for the given parts. node is the node
// the event concerns: the node whose worker recorded it, or the node a
// request asks to act; empty becomes NoNode.
func Subject(ns, kind, id string, t Type, node string) string {
	if node == "" {
		node = NoNode
	}
	return EventsPrefix + "." + ns + "." + kind + "." + id + "." + string(t) + "." + node
}

// FilterSubject returns a subject filter for events on any node; empty
// parts match any token.
func FilterSubject(ns, kind, id string, t Type) string {
	return NodeFilterSubject("", ns, kind, id, t)
}

// NodeFilterSubject is FilterSubject for the events that concern one node
// (any node if node is empty). A worker that owns a node's resources
// consumes through it, so it is never handed another node's work.
func NodeFilterSubject(node, ns, kind, id string, t Type) string {
	w := func(s string) string {
		if s == "" {
			return "*"
		}
		return s
	}
	return EventsPrefix + "." + w(ns) + "." + w(kind) + "." + w(id) + "." + w(string(t)) + "." + w(node)
}

// WorkerDurable names the durable consumer shared by every worker of kind
// on node: the node's fetchers share one, so they spread its work; another
// node's have their own.
func WorkerDurable(kind, node string) string { return kind + "-" + node }

// ProgressSubject is where live progress for operation op is published.
func ProgressSubject(op string) string { return ProgressPrefix + "." + op }

var nsRe = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// ContainerIDPattern is what a container id must match: one token of the
// container's event and stdio subjects, and a runc id.
const ContainerIDPattern = `^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`

var containerIDRe = regexp.MustCompile(ContainerIDPattern)

// ValidContainerID reports whether id matches ContainerIDPattern.
func ValidContainerID(id string) bool { return containerIDRe.MatchString(id) }

var nodeRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$`)

// ValidateNode checks that node can name a node: it becomes a token of
// event and API subjects.
func ValidateNode(node string) error {
	if !nodeRe.MatchString(node) {
		return fmt.Errorf("node name %q: must match %s (a host name's dots become dashes)", node, nodeRe)
	}
	return nil
}

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

// ParseSubject splits an event subject into its parts; node is empty for
// NoNode.
func ParseSubject(subj string) (ns, kind, id string, t Type, node string, err error) {
	parts := strings.Split(subj, ".")
	if len(parts) != 7 || parts[0]+"."+parts[1] != EventsPrefix {
		return "", "", "", "", "", fmt.Errorf("not an event subject: %q", subj)
	}
	if parts[6] != NoNode {
		node = parts[6]
	}
	return parts[2], parts[3], parts[4], Type(parts[5]), node, nil
}
