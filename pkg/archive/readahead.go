package archive

import (
	"io"
	"sync"
)

// readahead reads its source in a goroutine, a few chunks ahead of its
// consumer, so that the stages of the pipeline (decompression; hashing;
// filesystem work) run in parallel. Read is for one consumer goroutine.
type readahead struct {
	full chan chunk
	free chan []byte
	stop chan struct{}
	done chan struct{} // closed when the producer has returned

	cur chunk
	off int
}

type chunk struct {
	b   []byte
	err error
}

const (
	readaheadChunks = 4
	readaheadSize   = 1 << 20
)

var readaheadBufs = sync.Pool{New: func() any { b := make([]byte, readaheadSize); return &b }}

func newReadahead(src io.Reader) *readahead {
	ra := &readahead{
		full: make(chan chunk, readaheadChunks),
		free: make(chan []byte, readaheadChunks),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	for range readaheadChunks {
		ra.free <- *readaheadBufs.Get().(*[]byte)
	}
	go ra.produce(src)
	return ra
}

func (ra *readahead) produce(src io.Reader) {
	defer close(ra.done)
	for {
		var buf []byte
		select {
		case buf = <-ra.free:
		case <-ra.stop:
			return
		}
		buf = buf[:cap(buf)]
		n := 0
		var err error
		for n < len(buf) && err == nil {
			var k int
			k, err = src.Read(buf[n:])
			n += k
		}
		select {
		case ra.full <- chunk{b: buf[:n], err: err}:
		case <-ra.stop:
			return
		}
		if err != nil {
			return
		}
	}
}

// Read implements io.Reader. After stop it fails with io.ErrClosedPipe.
func (ra *readahead) Read(p []byte) (int, error) {
	for ra.off == len(ra.cur.b) {
		if ra.cur.err != nil {
			return 0, ra.cur.err
		}
		if ra.cur.b != nil {
			ra.free <- ra.cur.b[:cap(ra.cur.b)] // never blocks: a slot per buffer
			ra.cur.b = nil
		}
		select {
		case ra.cur = <-ra.full:
			ra.off = 0
		case <-ra.stop:
			ra.cur, ra.off = chunk{err: io.ErrClosedPipe}, 0
		}
	}
	n := copy(p, ra.cur.b[ra.off:])
	ra.off += n
	return n, nil
}

// pipeline is the chain of readaheads of one Apply, source side first.
type pipeline struct {
	stages []*readahead
	once   sync.Once
}

// add appends a stage reading src and returns it.
func (p *pipeline) add(src io.Reader) *readahead {
	ra := newReadahead(src)
	p.stages = append(p.stages, ra)
	return ra
}

// close stops every stage and waits for their goroutines, so that nothing
// reads the source, and nothing writes the pipeline's error fields, once it
// returns. A Read blocked in the source delays it.
func (p *pipeline) close() {
	p.once.Do(func() {
		for _, ra := range p.stages {
			close(ra.stop)
		}
		for i := len(p.stages) - 1; i >= 0; i-- {
			<-p.stages[i].done
		}
		for _, ra := range p.stages {
			ra.recycle()
		}
	})
}

// recycle returns a stopped stage's buffers to the pool.
func (ra *readahead) recycle() {
	put := func(b []byte) {
		if cap(b) == readaheadSize {
			b = b[:readaheadSize]
			readaheadBufs.Put(&b)
		}
	}
	put(ra.cur.b)
	ra.cur, ra.off = chunk{err: io.ErrClosedPipe}, 0
	for {
		select {
		case b := <-ra.free:
			put(b)
		case c := <-ra.full:
			put(c.b)
		default:
			return
		}
	}
}
