package azblob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/skrfs/skrfs/blob"
)

// ReaderOptions tune a sequential reader. Zero fields take the store's
// defaults (Config.RangeSize and Config.Parallelism).
type ReaderOptions struct {
	// Offset is where reading starts.
	Offset int64
	// RangeSize is the size of one ranged GET; 1-16 MiB is sensible.
	RangeSize int64
	// Parallelism is the number of ranges in flight (and buffered).
	Parallelism int
}

// errClosed is returned by a sequential reader after Close.
var errClosed = errors.New("azblob: read on closed range reader")

// NewRangeReader returns a reader of the bytes [opts.Offset, size) of the
// version pinned by ref; size is the object's size from Stat. It fetches
// ranges of opts.RangeSize with opts.Parallelism GETs in flight and hands
// them out in order, so it holds at most RangeSize × Parallelism bytes.
// Every range is pinned with If-Match: if the object is replaced while it
// is read, the reader returns an error wrapping blob.ErrChanged, after only
// bytes of the pinned version. Ranges are fetched only as the reader is
// consumed, never more than Parallelism ahead.
//
// The reader is not safe for concurrent use. Close stops the fetches in
// flight and waits for them; it must be called.
func (s *Store) NewRangeReader(ctx context.Context, ref blob.Ref, size int64, opts ReaderOptions) io.ReadCloser {
	ctx, cancel := context.WithCancel(ctx)
	r := &rangeReader{
		s:           s,
		ctx:         ctx,
		cancel:      cancel,
		ref:         ref,
		next:        opts.Offset,
		end:         size,
		rangeSize:   orDefault(opts.RangeSize, s.rangeSize),
		parallelism: orDefault(opts.Parallelism, s.parallelism),
	}
	if opts.Offset < 0 || opts.Offset > size {
		r.err = fmt.Errorf("azblob: read %q: %w: offset %d, size %d", ref.Name, blob.ErrOutOfRange, opts.Offset, size)
	}
	return r
}

type rangeReader struct {
	s      *Store
	ctx    context.Context
	cancel context.CancelFunc
	ref    blob.Ref

	next, end   int64 // next offset to fetch, end of the object
	rangeSize   int64
	parallelism int

	queue []*chunk // fetches in flight or done, in order of offset
	free  [][]byte // buffers of consumed chunks, for reuse
	wg    sync.WaitGroup
	err   error // sticky: the first error, io.EOF at the end, errClosed
}

// chunk is one ranged GET. Its fetching goroutine writes buf and err, then
// closes done.
type chunk struct {
	done chan struct{}
	buf  []byte
	pos  int // bytes of buf already handed out
	err  error
}

// start launches fetches until Parallelism are queued or the object ends.
func (r *rangeReader) start() {
	for len(r.queue) < r.parallelism && r.next < r.end {
		n := min(r.rangeSize, r.end-r.next)
		var buf []byte
		if k := len(r.free); k > 0 && int64(cap(r.free[k-1])) >= n {
			buf, r.free = r.free[k-1][:n], r.free[:k-1]
		} else {
			buf = make([]byte, n)
		}
		c := &chunk{done: make(chan struct{}), buf: buf}
		off := r.next
		r.next += n
		r.queue = append(r.queue, c)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer close(c.done)
			c.err = r.fetch(c.buf, off)
		}()
	}
}

// fetch reads exactly len(buf) bytes at off.
func (r *rangeReader) fetch(buf []byte, off int64) error {
	n, err := r.s.ReadAt(r.ctx, r.ref, buf, off)
	if n == len(buf) && (err == nil || err == io.EOF) {
		return nil
	}
	if err == nil || err == io.EOF {
		return fmt.Errorf("azblob: read %q: object ended at %d, expected size %d: %w", r.ref.Name, off+int64(n), r.end, io.ErrUnexpectedEOF)
	}
	return err
}

// head returns the first chunk with bytes left to hand out, waiting for its
// fetch. A consumed chunk is dropped (and the next fetch started) only
// here, so no fetch starts before the reader asks for more.
func (r *rangeReader) head() (*chunk, error) {
	for r.err == nil {
		if len(r.queue) > 0 && r.queue[0].pos == len(r.queue[0].buf) {
			r.free = append(r.free, r.queue[0].buf)
			r.queue[0] = nil
			r.queue = r.queue[1:]
		}
		r.start()
		if len(r.queue) == 0 {
			r.err = io.EOF
			break
		}
		c := r.queue[0]
		<-c.done
		if c.err != nil {
			r.err = c.err
			r.cancel() // stop the fetches behind it
			break
		}
		if c.pos < len(c.buf) {
			return c, nil
		}
	}
	return nil, r.err
}

// Read implements io.Reader.
func (r *rangeReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, r.err
	}
	c, err := r.head()
	if err != nil {
		return 0, err
	}
	n := copy(p, c.buf[c.pos:])
	c.pos += n
	return n, nil
}

// WriteTo implements io.WriterTo, which spares io.Copy a copy of every byte.
func (r *rangeReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		c, err := r.head()
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		n, err := w.Write(c.buf[c.pos:])
		c.pos += n
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
}

// Close stops the fetches in flight, waits for them and releases the
// buffers. Reads after Close fail.
func (r *rangeReader) Close() error {
	r.cancel()
	r.wg.Wait()
	r.queue, r.free = nil, nil
	if r.err == nil || r.err == io.EOF {
		r.err = errClosed
	}
	return nil
}
