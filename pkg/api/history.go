package api

import "time"

// SubjectViewAt is the gateway endpoint that answers from the view as it was
// at a past point of the log: ViewAtRequest → ViewAtReply.
const SubjectViewAt = "sd.api.view.at"

// What a ViewAtRequest asks for.
const (
	ViewAtImages     = "images"
	ViewAtContainers = "containers"
)

// MaxViewAtEvents is the most events one ViewAtRequest replays; a request
// for a later point is refused (resource_exhausted).
const MaxViewAtEvents = 5_000_000

// ViewAtRequest asks for the images or containers of a namespace as they
// were at a past point of the log. Exactly one of AtSeq and AtTime is set.
//
// The gateway replays the log from its first event into a fresh view:
// with AtSeq, every event up to and including sequence AtSeq; with AtTime,
// every event up to (not including) the first whose time is after AtTime,
// so the answer is always the view of a prefix of the log.
type ViewAtRequest struct {
	Namespace string `json:"namespace,omitempty"`
	// What is ViewAtImages or ViewAtContainers.
	What   string     `json:"what"`
	AtSeq  uint64     `json:"at_seq,omitempty"`
	AtTime *time.Time `json:"at_time,omitempty"`
}

// ViewAtReply is the view as of a point of the log.
type ViewAtReply struct {
	// Seq is the last event the answer reflects (0: none, the log was empty
	// at that point); Time is that event's time.
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time,omitzero"`
	// FirstSeq is the first event still in the log. Above 1, older events
	// have aged out of the log and the answer is the view of what remains.
	FirstSeq uint64 `json:"first_seq"`
	// Replayed is how many events were read to build the answer.
	Replayed uint64 `json:"replayed"`
	// Images is set when What is ViewAtImages, Containers when it is
	// ViewAtContainers (without their runtime specs).
	Images     []Image     `json:"images,omitempty"`
	Containers []Container `json:"containers,omitempty"`
}
