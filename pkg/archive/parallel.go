package archive

import (
	"archive/tar"
	"errors"
	"io"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Small regular files are created by a few writer goroutines while the
// applier goes on reading the tar. Creating a file costs several system
// calls (openat, write, fchown, fchmod, utimensat, close) and, on a fresh
// filesystem, the kernel's work of allocating its inode and page cache; for
// a layer of many small files that work, not decompression, sets the apply
// time, and one goroutine leaves the other cores idle. The tar stream is
// still read in order by one goroutine, which reads each small file's data
// into a buffer (so a truncated stream is found there, as before) and hands
// the file to a writer.
//
// Only overlay-form applies into an empty directory use writers: then every
// name that exists below the root was created by this apply and is recorded
// in applier.added, so an entry whose name is not recorded cannot collide
// with anything, in flight or not. Whatever could observe or change a file
// still in flight waits for the writers first (drain):
//   - an entry whose name was already written (a duplicate, a replacement,
//     a whiteout of it), and every hard link (its target is looked up);
//   - any parent lookup that is not answered by the directory cache (an
//     in-flight file could be where a directory is expected);
//   - closing cached directory fds, which in-flight files may use;
//   - removals, finishing directory times, and the end of the apply.
//
// A writer's error is returned in place of any later error of the applier:
// entries are handed out in order, so it is the first error in tar order.

const (
	// parallelFileMax is the largest file handed to a writer; larger ones
	// are streamed by the applier itself (still in parallel with the
	// writers' files).
	parallelFileMax = 128 << 10
	// parallelQueue bounds the files read ahead of the writers.
	parallelQueue = 32
)

// parallelWriters is the number of writer goroutines; 0 disables them.
// Two measured best on 2 cores (the reading, decompressing and hashing
// goroutines need CPU too) and gain nothing more with 3.
var parallelWriters = 2

// testHookAsync, if set, is called for each file handed to a writer.
var testHookAsync func()

var smallBufs = sync.Pool{New: func() any { b := make([]byte, parallelFileMax); return &b }}

// fileJob is one small file for a writer.
type fileJob struct {
	pfd   int // parent directory, owned by the applier's cache
	base  string
	hdr   *tar.Header
	data  *[]byte // pooled; len(*data) is the file's size
	entry int     // for errors
	name  string
}

// writers creates small files in parallel.
type writers struct {
	jobs    chan fileJob
	pending sync.WaitGroup // files handed out and not yet written
	exited  sync.WaitGroup

	failed atomic.Bool
	mu     sync.Mutex
	err    error // the first failure, in entry order
	errAt  int
}

func newWriters(n int) *writers {
	w := &writers{jobs: make(chan fileJob, parallelQueue)}
	w.exited.Add(n)
	for range n {
		go w.work()
	}
	return w
}

func (w *writers) work() {
	defer w.exited.Done()
	for j := range w.jobs {
		if !w.failed.Load() {
			if err := writeSmall(j); err != nil {
				w.fail(j.entry, err)
			}
		}
		smallBufs.Put(j.data)
		w.pending.Done()
	}
}

func (w *writers) fail(entry int, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil || entry < w.errAt {
		w.err, w.errAt = err, entry
	}
	w.failed.Store(true)
}

// wait returns when every file handed out is written, with the first
// error.
func (w *writers) wait() error {
	w.pending.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// stop waits for the writers to exit. No file may be handed out after.
func (w *writers) stop() {
	w.pending.Wait()
	close(w.jobs)
	w.exited.Wait()
}

// writeSmall creates one file: the writer's half of applier.file.
func writeSmall(j fileJob) error {
	const flags = unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err := unix.Openat(j.pfd, j.base, flags, 0o600)
	if err != nil {
		// EEXIST included: every existing name is recorded, so this file
		// cannot be a replacement; something else writes into the
		// directory.
		return entryFSErr(j.entry, j.name, "create", err)
	}
	err = writeAll(fd, *j.data)
	op := "write"
	if err == nil {
		op, err = setMeta(fd, j.hdr)
	}
	if err == nil {
		ts := times(j.hdr)
		op, err = "set times", futimens(fd, &ts)
	}
	if cerr := unix.Close(fd); err == nil && cerr != nil {
		op, err = "close", cerr
	}
	if err != nil {
		return entryFSErr(j.entry, j.name, op, err)
	}
	return nil
}

// startParallel enables writers if the apply qualifies: overlay form into
// an empty directory (see above).
func (a *applier) startParallel() error {
	if parallelWriters <= 0 || a.opts.Mode != OverlayForm {
		return nil
	}
	empty, err := isEmptyDir(a.root)
	if err != nil {
		return err
	}
	if empty {
		a.added = make(map[string]struct{})
		a.parallel = true
	}
	return nil
}

// drain waits for the files in flight. It returns a writer's error, which
// the caller returns in place of its own.
func (a *applier) drain() error {
	if a.par == nil {
		return nil
	}
	return a.par.wait()
}

// fileAsync reads a small file's data and hands the file to a writer.
func (a *applier) fileAsync(pfd int, hdr *tar.Header, base string, tr io.Reader) error {
	bp := smallBufs.Get().(*[]byte)
	*bp = (*bp)[:hdr.Size]
	if _, err := io.ReadFull(tr, *bp); err != nil {
		smallBufs.Put(bp)
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return a.streamErr(err, a.entries)
	}
	if a.par == nil {
		a.par = newWriters(parallelWriters)
	}
	if testHookAsync != nil {
		testHookAsync()
	}
	a.par.pending.Add(1)
	a.par.jobs <- fileJob{pfd: pfd, base: base, hdr: hdr, data: bp, entry: a.entries, name: a.name}
	return nil
}

// isAsyncFile reports whether the entry goes to a writer.
func (a *applier) isAsyncFile(rel string, hdr *tar.Header) bool {
	return a.parallel && (hdr.Typeflag == tar.TypeReg || hdr.Typeflag == tar.TypeRegA) &&
		hdr.Size >= 0 && hdr.Size <= parallelFileMax && !a.isAdded(rel)
}

// isEmptyDir reports whether the directory fd has no entries. It reads a
// new open file description, leaving fd's offset alone.
func isEmptyDir(fd int) (bool, error) {
	dfd, err := openNoFollow(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return false, err
	}
	defer unix.Close(dfd)
	var buf [512]byte
	for {
		n, err := unix.Getdents(dfd, buf[:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, err
		}
		if n == 0 {
			return true, nil
		}
		_, _, names := unix.ParseDirent(buf[:n], -1, nil)
		if len(names) > 0 { // ParseDirent skips "." and ".."
			return false, nil
		}
	}
}
