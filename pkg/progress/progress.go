// Package progress renders the progress of a pull the way containerd's
// `ctr pull` does: a line for the reference, a line per blob with its state
// and a bar, and a footer with the elapsed time, the bytes fetched and the
// rate.
//
// When the pull unpacks, a layer goes on from done to unpacked when its
// snapshot is applied (layer-applied), the reference line says "unpacking"
// while some downloaded layers are not unpacked yet, and a line "unpacked
// N/M layers" appears above the footer once the first layer is unpacked:
// ctr's "unpacking linux/amd64 sha256:…" phase, per layer.
//
// On a terminal the whole frame is redrawn in place (ANSI cursor movement)
// at most every Config.Interval; elsewhere one line is printed per state
// change, so logs stay readable. The renderer is pure apart from its writer
// and clock, both of which the caller supplies.
package progress

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stevedore/stevedore/pkg/client"
	"github.com/stevedore/stevedore/pkg/events"
	"github.com/stevedore/stevedore/pkg/images"
)

// State is the state of one blob of the pull.
type State string

// Blob states, in the order a blob goes through them.
const (
	Waiting     State = "waiting"     // known, not being downloaded yet
	Downloading State = "downloading" // bytes are arriving
	Done        State = "done"        // downloaded and committed
	Exists      State = "exists"      // was already in the store; nothing downloaded
	Unpacked    State = "unpacked"    // a layer that is a committed snapshot on the node
	Failed      State = "failed"      // the pull failed on this blob
)

// Reference line states besides "resolving", "resolved" and "failed".
const (
	// Unpacking: some downloaded layers are not unpacked yet.
	Unpacking = "unpacking"
	// ImageUnpacked: every layer is unpacked (image-unpacked arrived).
	ImageUnpacked = "unpacked"
)

// terminal reports whether no download state replaces s (only a layer's
// unpacking moves it on from done or exists).
func (s State) terminal() bool { return s == Done || s == Exists || s == Failed || s == Unpacked }

// fetched reports whether the blob is in the store (downloaded or already there).
func (s State) fetched() bool { return s == Done || s == Exists }

// Config configures a Renderer.
type Config struct {
	// Ref is the reference shown on the first line. If empty, the ref of
	// the pull-requested event is used once it arrives.
	Ref string
	// Unpack says the pull unpacks its layers, so downloaded layers wait
	// for their snapshots ("unpacking"). A pull-requested update that asks
	// for unpacking, or any layer-applied update, says so too.
	Unpack bool
	// TTY redraws the frame in place; otherwise one line is printed per
	// state change.
	TTY bool
	// Width is the terminal width in columns; lines are fitted to it
	// (default 80). It matters only when TTY is set.
	Width int
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Interval is the least time between two redraws on a TTY (default
	// 100ms, i.e. at most 10 frames a second).
	Interval time.Duration
}

// Renderer turns a pull's updates into progress output. It is safe for
// concurrent use: Wait's callback may call Update while a ticker calls Tick.
type Renderer struct {
	mu    sync.Mutex
	w     io.Writer
	cfg   Config
	start time.Time
	end   time.Time // set by Finish: the elapsed time stops there

	ref      string
	resolved bool
	failed   bool
	unpack   bool // layers are to be unpacked
	applied  bool // a layer-applied arrived
	unpacked bool // image-unpacked arrived
	layers   int  // the layer count image-unpacked gave, if more than seen
	said     map[string]bool
	blobs    []*blob
	byDigest map[digest.Digest]*blob

	completed bool  // pull-completed arrived
	size      int64 // the image's size, once image-updated or pull-completed gives it

	drawn    int       // lines of the last TTY frame
	lastDraw time.Time // when the last TTY frame was drawn
	dirty    bool      // the state changed since the last TTY frame
	err      error     // the first write error; later writes are skipped
}

type blob struct {
	role   string
	dgst   digest.Digest
	state  State
	offset int64
	size   int64
	// downloaded: this pull fetched its bytes (it was done, not exists).
	downloaded bool
}

func (b *blob) name() string {
	role := b.role
	if role == "" {
		role = "blob"
	}
	return role + "-" + b.dgst.String()
}

// New returns a Renderer writing to w. The elapsed time starts now.
func New(w io.Writer, cfg Config) *Renderer {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Width <= 0 {
		cfg.Width = 80
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 100 * time.Millisecond
	}
	return &Renderer{w: w, cfg: cfg, start: cfg.Now(), ref: cfg.Ref, unpack: cfg.Unpack,
		byDigest: map[digest.Digest]*blob{}, said: map[string]bool{}}
}

// Update applies one update from client.Wait: descriptor-resolved adds a
// waiting blob, a progress tick makes it downloading, blob-committed makes it
// done (or exists, when nothing had to be downloaded), layer-applied makes
// the layer it names unpacked (also when its snapshot existed already),
// image-unpacked marks the image unpacked, pull-failed marks the blob it
// names as failed. image-updated gives the image's size and, if no blob was
// named before it (a re-pull of an image that is complete has no
// descriptor-resolved), adds its target as an existing blob. pull-completed
// makes every blob still waiting exist and every one still downloading done,
// since the pull committed them all. Other updates are ignored.
//
// Every one of descriptor-resolved, a tick, blob-committed, image-updated and
// pull-completed marks the reference resolved. Off a TTY, the reference line
// is printed when resolved (before the line of the update that resolved it),
// the first time it is unpacking, and when the image is unpacked.
func (r *Renderer) Update(u client.Update) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case u.Progress != nil:
		r.tick(*u.Progress)
	case u.Event != nil:
		r.event(u.Event)
	default:
		return
	}
	if r.cfg.TTY {
		r.drawIfDue()
	}
}

// Tick redraws the frame on a TTY if Interval has passed since the last
// one, so the elapsed time moves even when nothing else does. Call it from
// a ticker; it does nothing on a non-TTY.
func (r *Renderer) Tick() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cfg.TTY && r.end.IsZero() {
		r.dirty = true
		r.drawIfDue()
	}
}

// Finish stops the clock and writes the final output: the last frame on a
// TTY, the footer line otherwise. It returns the first error writing to the
// writer, if any. Updates after Finish change nothing that is shown.
func (r *Renderer) Finish() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.end.IsZero() {
		return r.err
	}
	r.end = r.cfg.Now()
	if r.cfg.TTY {
		r.draw()
	} else {
		if r.applied {
			r.printf("%s\n", r.unpackLine())
		}
		r.printf("%s\n", r.footer())
	}
	return r.err
}

func (r *Renderer) event(ev *events.Envelope) {
	switch ev.Type {
	case events.TypePullRequested:
		var p events.PullRequested
		if ev.Decode(&p) != nil {
			return
		}
		if r.ref == "" {
			r.ref = p.Ref
		}
		r.unpack = r.unpack || p.Unpack
	case events.TypeDescriptorResolved:
		var p events.DescriptorResolved
		if ev.Decode(&p) != nil {
			return
		}
		r.markResolved(p.Ref)
		b := r.blob(p.Descriptor.Digest, p.Role)
		if p.Descriptor.Size > 0 {
			b.size = p.Descriptor.Size
		}
		if b.state == "" {
			r.setState(b, Waiting)
		}
	case events.TypeBlobCommitted:
		var p events.BlobCommitted
		if ev.Decode(&p) != nil {
			return
		}
		r.markResolved(p.Ref)
		b := r.blob(p.Descriptor.Digest, p.Role)
		if p.Descriptor.Size > 0 {
			b.size = p.Descriptor.Size
		}
		if b.state.terminal() {
			return
		}
		b.offset = b.size
		if p.Existing {
			r.setState(b, Exists)
		} else {
			b.downloaded = true
			r.setState(b, Done)
		}
		r.refChanged()
	case events.TypeLayerApplied:
		var p events.LayerApplied
		if ev.Decode(&p) != nil || p.Layer == "" {
			return
		}
		r.unpack, r.applied = true, true
		r.dirty = true
		// A layer that was already in the store and unpacked on the node
		// may have no earlier event in this pull: it is added here.
		b := r.blob(p.Layer, events.RoleLayer)
		if b.state != Unpacked && b.state != Failed {
			b.offset = b.size
			r.setState(b, Unpacked)
		}
		r.refChanged()
	case events.TypeImageUnpacked:
		var p events.ImageUnpacked
		if ev.Decode(&p) != nil {
			return
		}
		r.unpack, r.unpacked = true, true
		r.layers = p.Layers
		r.refChanged()
	case events.TypeImageUpdated:
		var p events.ImageUpdated
		if ev.Decode(&p) != nil {
			return
		}
		r.recorded(p.Name, p.Size)
		// An image recorded before any blob of the pull was named is one
		// the fetcher found complete in the store: its target was there
		// already.
		if t := p.Target; t.Digest != "" && len(r.blobs) == 0 {
			b := r.blob(t.Digest, images.RoleOf(t.MediaType))
			b.size = max(t.Size, 0)
			b.offset = b.size
			r.setState(b, Exists)
		}
	case events.TypePullCompleted:
		var p events.PullCompleted
		if ev.Decode(&p) != nil {
			return
		}
		r.recorded(p.Ref, p.Size)
		r.completed = true
		// Every blob of the image is committed: one still waiting had no
		// blob-committed in this pull (it was in the store already, or its
		// fan-out had not reported yet), one still downloading was fetched.
		for _, b := range r.blobs {
			switch b.state {
			case Waiting:
				b.offset = b.size
				r.setState(b, Exists)
			case Downloading:
				b.size = max(b.size, b.offset)
				b.offset = b.size
				b.downloaded = true
				r.setState(b, Done)
			}
		}
	case events.TypePullFailed:
		var p events.PullFailed
		if ev.Decode(&p) != nil {
			return
		}
		r.failed = true
		r.dirty = true
		if b, ok := r.byDigest[p.Digest]; ok && p.Digest != "" && !b.state.terminal() {
			r.setState(b, Failed)
		}
	}
}

func (r *Renderer) tick(p events.Progress) {
	if p.Digest == "" || r.completed {
		return
	}
	// A tick travels apart from the event log and may overtake the
	// descriptor-resolved events: bytes arriving say the reference is resolved.
	r.markResolved("")
	b := r.blob(p.Digest, p.Role)
	if b.state.terminal() {
		return // a late tick must not undo a commit
	}
	if p.Total > 0 {
		b.size = p.Total
	}
	b.offset = p.Offset
	r.dirty = true
	if b.state != Downloading {
		r.setState(b, Downloading)
	}
}

// blob returns the blob for d, adding it if it is new.
func (r *Renderer) blob(d digest.Digest, role string) *blob {
	if b, ok := r.byDigest[d]; ok {
		if b.role == "" {
			b.role = role
		}
		return b
	}
	b := &blob{dgst: d, role: role}
	r.byDigest[d] = b
	r.blobs = append(r.blobs, b)
	return b
}

func (r *Renderer) setState(b *blob, s State) {
	b.state = s
	r.changed(b.name() + ": " + plainStatus(b))
}

// changed records a state change: a line on a non-TTY, a redraw later on a TTY.
func (r *Renderer) changed(line string) {
	r.dirty = true
	if !r.cfg.TTY && r.end.IsZero() {
		r.printf("%s\n", line)
	}
}

// recorded notes that the image ref, of size bytes (0 if unknown), is in the
// store: resolved, whatever events came before.
func (r *Renderer) recorded(ref string, size int64) {
	if size > 0 {
		r.size = size
	}
	r.markResolved(ref)
	r.dirty = true
}

// markResolved marks the reference resolved, taking ref as its name if it
// has none yet, and prints the reference line off a TTY the first time. A
// reference with no name stays unresolved until an update names it.
func (r *Renderer) markResolved(ref string) {
	if r.ref == "" {
		r.ref = ref
	}
	if r.resolved || r.ref == "" {
		return
	}
	r.resolved = true
	r.changed(r.refLinePlain())
}

// refLinePlain is the reference line printed off a TTY when it is resolved,
// with the image's size if it is known by then.
func (r *Renderer) refLinePlain() string {
	if r.size > 0 {
		return r.ref + ": resolved " + Bytes(r.size)
	}
	return r.ref + ": resolved"
}

// refState is the reference line's state.
func (r *Renderer) refState() string {
	switch {
	case r.unpacked:
		return ImageUnpacked
	case r.unpacking():
		return Unpacking
	case r.resolved:
		return "resolved"
	case r.failed:
		return string(Failed)
	}
	return "resolving"
}

// unpacking reports whether some layers are in the store but not unpacked.
func (r *Renderer) unpacking() bool {
	if !r.unpack || r.failed || r.unpacked {
		return false
	}
	for _, b := range r.blobs {
		if b.role == events.RoleLayer && b.state.fetched() {
			return true
		}
	}
	return false
}

// refChanged prints the reference line off a TTY when it first becomes
// unpacking, and when the image is unpacked.
func (r *Renderer) refChanged() {
	st := r.refState()
	if (st != Unpacking && st != ImageUnpacked) || r.said[st] {
		return
	}
	r.said[st] = true
	r.changed(r.ref + ": " + st)
}

// layerCounts returns how many layers are unpacked, and how many there are.
func (r *Renderer) layerCounts() (unpacked, total int) {
	for _, b := range r.blobs {
		if b.role != events.RoleLayer {
			continue
		}
		total++
		if b.state == Unpacked {
			unpacked++
		}
	}
	return unpacked, max(total, r.layers)
}

func (r *Renderer) unpackLine() string {
	n, m := r.layerCounts()
	return fmt.Sprintf("unpacked %d/%d layers", n, m)
}

func plainStatus(b *blob) string {
	switch b.state {
	case Downloading:
		return string(b.state) + " " + sizes(b)
	case Failed:
		return string(b.state)
	}
	if b.size > 0 {
		return string(b.state) + " " + Bytes(b.size)
	}
	return string(b.state)
}

func sizes(b *blob) string {
	switch b.state {
	case Downloading:
		if b.size > 0 {
			return Bytes(b.offset) + "/" + Bytes(b.size)
		}
		return Bytes(b.offset)
	case Failed:
		return ""
	}
	if b.size > 0 {
		return Bytes(b.size)
	}
	return ""
}

// fetched is the bytes this pull downloaded so far: committed blobs that
// were not already there, and the offsets of downloads in progress.
func (r *Renderer) fetched() int64 {
	var n int64
	for _, b := range r.blobs {
		switch b.state {
		case Done, Unpacked:
			if b.downloaded {
				n += b.size
			}
		case Downloading, Failed:
			n += b.offset
		}
	}
	return n
}

func (r *Renderer) footer() string {
	end := r.end
	if end.IsZero() {
		end = r.cfg.Now()
	}
	elapsed := end.Sub(r.start)
	total := r.fetched()
	var rate int64
	if s := elapsed.Seconds(); s > 0 {
		rate = int64(float64(total) / s)
	}
	return fmt.Sprintf("elapsed: %.1f s  total: %s (%s/s)", elapsed.Seconds(), Bytes(total), Bytes(rate))
}

func (r *Renderer) drawIfDue() {
	if !r.dirty || !r.end.IsZero() {
		return
	}
	if now := r.cfg.Now(); r.drawn > 0 && now.Sub(r.lastDraw) < r.cfg.Interval {
		return
	}
	r.draw()
}

// draw writes the frame over the previous one.
func (r *Renderer) draw() {
	var sb strings.Builder
	if r.drawn > 0 {
		fmt.Fprintf(&sb, "\x1b[%dA", r.drawn)
	}
	lines := r.frame()
	for _, l := range lines {
		sb.WriteString("\r\x1b[2K")
		sb.WriteString(l)
		sb.WriteString("\n")
	}
	sb.WriteString("\x1b[J")
	r.printf("%s", sb.String())
	r.drawn = len(lines)
	r.lastDraw = r.cfg.Now()
	r.dirty = false
}

func (r *Renderer) printf(format string, args ...any) {
	if r.err != nil {
		return
	}
	if _, err := fmt.Fprintf(r.w, format, args...); err != nil {
		r.err = fmt.Errorf("progress: %w", err)
	}
}

// Layout of a TTY frame.
const (
	statusWidth = len("downloading")
	maxBar      = 40 // bar cells between the pipes
	minBar      = 10
	minName     = 24
	shortName   = len("manifest-sha256:0123456789ab...:")
	sizesWidth  = len("1023.9 MiB/1023.9 MiB")
)

// frame returns the lines of a TTY frame, each fitted to the width.
func (r *Renderer) frame() []string {
	refState := r.refState()
	refFrac := 0.0
	switch refState {
	case "resolved", ImageUnpacked:
		refFrac = 1
	case Unpacking:
		if n, m := r.layerCounts(); m > 0 {
			refFrac = float64(n) / float64(m)
		}
	}
	ref := r.ref
	if ref == "" {
		ref = "(resolving)"
	}

	nameW := len(ref) + 1
	for _, b := range r.blobs {
		nameW = max(nameW, len(b.name())+1)
	}
	width := r.cfg.Width
	// The sizes column is reserved whether or not it is in use yet, so the
	// bars keep their length from frame to frame.
	fixed := 1 + statusWidth + 1 + 2 + 1 + sizesWidth // gaps, status, pipes, sizes
	// Full names and a full bar if they fit; else names shortened down to
	// shortName before the bar shrinks; then the bar down to minBar; then
	// the names again.
	full := nameW
	barW := maxBar
	nameW = min(full, width-fixed-barW)
	if nameW < shortName {
		nameW = min(full, shortName)
		barW = min(maxBar, max(minBar, width-fixed-nameW))
		nameW = min(nameW, max(minName, width-fixed-barW))
	}

	line := func(name string, status string, frac float64, size string) string {
		l := fmt.Sprintf("%-*s %-*s %s", nameW, fit(name, nameW-1)+":", statusWidth, status, bar(frac, barW))
		if size != "" {
			l += " " + size
		}
		return cut(l, width)
	}
	refSize := ""
	if r.size > 0 {
		refSize = Bytes(r.size)
	}
	lines := []string{line(ref, refState, refFrac, refSize)}
	for _, b := range r.blobs {
		frac := 0.0
		switch b.state {
		case Downloading, Failed:
			if b.size > 0 {
				frac = float64(b.offset) / float64(b.size)
			}
		case Done, Exists, Unpacked:
			frac = 1
		}
		lines = append(lines, line(b.name(), string(b.state), frac, sizes(b)))
	}
	if r.applied {
		lines = append(lines, cut(r.unpackLine(), width))
	}
	return append(lines, cut(r.footer(), width))
}

// bar draws a bar of w cells, frac of them full: |+++++-----|.
func bar(frac float64, w int) string {
	frac = min(max(frac, 0), 1)
	n := int(frac * float64(w))
	return "|" + strings.Repeat("+", n) + strings.Repeat("-", w-n) + "|"
}

// fit shortens s to at most n bytes, marking the cut with "...".
func fit(s string, n int) string {
	if len(s) <= n {
		return s
	}
	if n <= 3 {
		return s[:max(n, 0)]
	}
	return s[:n-3] + "..."
}

// cut truncates a line to the width so the terminal never wraps it (a
// wrapped line would break the cursor-up redraw).
func cut(s string, width int) string {
	if len(s) > width {
		return s[:width]
	}
	return s
}

// Bytes formats n bytes in binary units with one decimal: "512 B",
// "1.5 KiB", "4.0 MiB".
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
