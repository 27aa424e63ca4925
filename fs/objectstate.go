package fs

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/rs/zerolog"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/crypto"
)

// objectState is one opened version of one object, shared by every open
// handle of that version: its verified decryptor, the pinned storage ref,
// and the chunk loads in flight (so two readers never fetch one chunk twice).
type objectState struct {
	id    uint64
	name  string // logical name, for logs
	ref   blob.Ref
	store blob.Store
	d     *crypto.Decryptor
	fs    *Root
	sem   chan struct{} // Root.loads: bounds storage reads in flight in all
	refs  int           // open handles; guarded by Root.mu

	mu       sync.Mutex
	inflight map[int64]*flight // chunk index -> load covering it
}

// flight is one coalesced storage read of chunks [first, last].
type flight struct {
	first, last int64
	done        chan struct{}
	err         error

	// Chunks are published as they are decrypted: ready is the highest
	// chunk cached so far, and wake is closed (and replaced) at each step,
	// so a reader waits for its own chunks, not for the whole range.
	mu    sync.Mutex
	ready int64
	wake  chan struct{}
}

func newFlight(first, last int64) *flight {
	return &flight{first: first, last: last, done: make(chan struct{}), ready: first - 1, wake: make(chan struct{})}
}

// advance records that chunk i is cached and wakes the waiters.
func (f *flight) advance(i int64) {
	f.mu.Lock()
	f.ready = i
	close(f.wake)
	f.wake = make(chan struct{})
	f.mu.Unlock()
}

// wait blocks until chunk need of f is cached, f ended, or ctx ended. It
// reports whether the chunk is there; otherwise f.err (or ctx) says why.
func (f *flight) wait(ctx context.Context, need int64) (bool, error) {
	for {
		f.mu.Lock()
		ready, wake := f.ready, f.wake
		f.mu.Unlock()
		if ready >= need {
			return true, nil
		}
		select {
		case <-wake:
		case <-f.done:
			f.mu.Lock()
			ready = f.ready
			f.mu.Unlock()
			return ready >= need, nil
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

func (o *objectState) key(i int64) chunkKey { return chunkKey{obj: o.id, index: i} }

// maxVecs bounds the chunks one reply sends straight from the cache: a
// read spanning more (objects with tiny chunks) is copied into one buffer,
// so the reply never exceeds writev's limit of 1024 vectors.
const maxVecs = 64

// read returns the plaintext from offset off, up to len(dst) bytes (short
// only at end of file), as a reply for the kernel: slices of pinned cache
// chunks, sent without a copy, or dst when the read spans too many chunks.
// The caller must call Done on a result it does not hand to go-fuse.
func (o *objectState) read(ctx context.Context, dst []byte, off int64) (*readResult, error) {
	first, last, ok := o.d.ChunkSpan(off, int64(len(dst)))
	if !ok {
		return &readResult{}, nil
	}
	if err := o.ensure(ctx, first, last); err != nil {
		return nil, err
	}
	c := int64(o.d.Header().ChunkSize)
	r := &readResult{cache: o.fs.cache, copying: last-first+1 > maxVecs}
	if !r.copying {
		r.vecs = make([][]byte, 0, last-first+1)
		r.pins = make([]*chunkEntry, 0, last-first+1)
	}
	for i := first; i <= last && r.n < len(dst); i++ {
		start := 0
		if i == first {
			start = int(off - first*c)
		}
		ok := r.add(o.key(i), dst, start)
		if !ok {
			// Evicted between load and use (cache smaller than the read):
			// load this chunk alone and retry once.
			if err := o.ensure(ctx, i, i); err != nil {
				r.Done()
				return nil, err
			}
			if !r.add(o.key(i), dst, start) {
				r.Done()
				return nil, fmt.Errorf("chunk cache too small for one read of %s", o.name)
			}
		}
	}
	if r.copying {
		r.vecs = [][]byte{r.wipe}
	}
	return r, nil
}

// readResult is the reply to one read (a fuse.ReadResult that go-fuse
// writes with writev): pinned chunk slices, or plaintext copied into the
// request's buffer. Done, called by go-fuse once the reply is sent, unpins
// the chunks or zeroes the buffer, so no plaintext is left behind in
// go-fuse's buffer pool.
type readResult struct {
	cache   *chunkCache
	copying bool // the reply is a copy in dst, not pinned chunks
	vecs    [][]byte
	pins    []*chunkEntry
	wipe    []byte // the copy in the request's buffer, if any
	n       int
}

// add appends chunk k from offset start, bounded by what dst can take:
// pinned, or copied into dst when r copies.
func (r *readResult) add(k chunkKey, dst []byte, start int) bool {
	if r.copying {
		m, ok := r.cache.get(k, dst[r.n:], start)
		r.n += m
		r.wipe = dst[:r.n]
		return ok
	}
	ce, ok := r.cache.pin(k)
	if !ok {
		return false
	}
	seg := ce.data[start:]
	seg = seg[:min(len(seg), len(dst)-r.n)]
	r.pins = append(r.pins, ce)
	r.vecs = append(r.vecs, seg)
	r.n += len(seg)
	return true
}

// Slices gives go-fuse the reply's vectors (its vectored write path).
func (r *readResult) Slices() ([][]byte, fuse.Status) { return r.vecs, fuse.OK }

// Bytes copies the reply into buf, for go-fuse paths that want one buffer.
func (r *readResult) Bytes(buf []byte) ([]byte, fuse.Status) {
	if len(r.vecs) == 1 {
		return r.vecs[0], fuse.OK
	}
	n := 0
	for _, v := range r.vecs {
		n += copy(buf[n:], v)
	}
	return buf[:n], fuse.OK
}

// Size is the reply's length.
func (r *readResult) Size() int { return r.n }

// Done releases the reply's chunks and zeroes its copy. Safe to call twice.
func (r *readResult) Done() {
	if len(r.pins) > 0 {
		r.cache.unpin(r.pins...)
	}
	r.pins = nil
	clear(r.wipe)
	r.wipe, r.vecs = nil, nil
}

var _ fuse.ReadResult = (*readResult)(nil)

// ensure makes chunks [first, last] present in the cache, starting loads
// for the missing ones (coalesced into runs of at most RangeSize) and
// waiting for those in flight. Loads run detached from ctx, so an
// interrupted reader does not abort a load another reader waits for.
func (o *objectState) ensure(ctx context.Context, first, last int64) error {
	for attempt := 0; ; attempt++ {
		retry := false
		for _, f := range o.start(first, last, true) {
			ok, err := f.wait(ctx, min(last, f.last))
			if err != nil {
				return err
			}
			if ok {
				continue
			}
			switch {
			case f.err == errPrefetchSkipped && attempt < 100:
				retry = true // a prefetch we joined was dropped for want of a slot: load it ourselves
			case f.err != nil:
				return f.err
			}
		}
		if !retry {
			return nil
		}
	}
}

// prefetch starts loads of the missing chunks in [first, last] without
// waiting for them, and without queueing beyond the parallelism bound. It
// returns the last chunk up to which [first, ...] is cached or loading (a
// run skipped for want of a load slot ends it), first-1 if none.
func (o *objectState) prefetch(first, last int64) int64 {
	last = min(last, o.d.NumChunks()-1)
	if first > last {
		return first - 1
	}
	o.start(first, last, false)
	o.mu.Lock()
	defer o.mu.Unlock()
	i := first
	for ; i <= last && (o.inflight[i] != nil || o.fs.cache.has(o.key(i))); i++ {
	}
	return i - 1
}

// perRange is how many chunks one storage read covers (RangeSize).
func (o *objectState) perRange() int64 {
	return max(1, o.fs.opts.RangeSize/int64(o.d.Header().ChunkSize+crypto.TagSize))
}

// start registers and launches loads for missing chunks of [first, last]
// and returns every flight covering the range. With wait false it skips a
// run when no load slot is free.
func (o *objectState) start(first, last int64, wait bool) []*flight {
	per := o.perRange()
	var flights []*flight
	seen := map[*flight]bool{}
	var launch []*flight
	var hits, misses int64
	o.mu.Lock()
	for i := first; i <= last; {
		if f := o.inflight[i]; f != nil {
			if !seen[f] {
				seen[f] = true
				flights = append(flights, f)
			}
			misses++
			i++
			continue
		}
		if o.fs.cache.has(o.key(i)) {
			hits++
			i++
			continue
		}
		// A run of missing chunks, at most per long.
		j := i
		for j < last && j-i+1 < per && o.inflight[j+1] == nil && !o.fs.cache.has(o.key(j+1)) {
			j++
		}
		f := newFlight(i, j)
		for k := i; k <= j; k++ {
			o.inflight[k] = f
		}
		seen[f] = true
		flights = append(flights, f)
		launch = append(launch, f)
		misses += j - i + 1
		i = j + 1
	}
	o.mu.Unlock()
	if wait { // a reader's own chunks, not read-ahead
		o.fs.counters.chunkHits.Add(hits)
		o.fs.counters.chunkMisses.Add(misses)
	}
	for _, f := range launch {
		if wait {
			o.sem <- struct{}{}
		} else {
			select {
			case o.sem <- struct{}{}:
			default:
				o.finish(f, errPrefetchSkipped)
				continue
			}
		}
		go func() {
			defer func() { <-o.sem }()
			o.finish(f, o.load(f))
		}()
	}
	return flights
}

var errPrefetchSkipped = fmt.Errorf("prefetch skipped: no free load slot")

func (o *objectState) finish(f *flight, err error) {
	o.mu.Lock()
	for k := f.first; k <= f.last; k++ {
		if o.inflight[k] == f {
			delete(o.inflight, k)
		}
	}
	o.mu.Unlock()
	f.err = err
	close(f.done)
}

// load fetches chunks [first, last] with one ranged read, streamed: each
// chunk is authenticated, decrypted and published as soon as its bytes have
// arrived, so readers wait for their own chunk, not for the whole range,
// and only one chunk of ciphertext per load is held in memory.
func (o *objectState) load(f *flight) error {
	first, last := f.first, f.last
	ctx, cancel := context.WithTimeout(context.Background(), o.fs.opts.OpTimeout)
	defer cancel()
	off, n := o.d.CipherRange(first, last)
	fail := func(i int64, err error) error {
		o.fs.log().Warn().Err(err).Str("object", o.name).Int64("first_chunk", first).Int64("last_chunk", last).Int64("chunk", i).Msg("storage read failed")
		return fmt.Errorf("%s: reading chunks %d-%d: %w", o.name, first, last, err)
	}
	r, err := blob.OpenRange(ctx, o.store, o.ref, off, n)
	if err != nil {
		return fail(first, err)
	}
	defer r.Close()
	c := o.d.Header().ChunkSize
	t := c + crypto.TagSize
	ct := o.fs.buffers.get(t)
	defer o.fs.buffers.put(ct)
	for i := first; i <= last; i++ {
		seg := ct[:min(int64(t), off+n-(off+(i-first)*int64(t)))]
		if _, err := io.ReadFull(r, seg); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fail(i, err)
		}
		pt, err := o.d.DecryptChunks(o.fs.cache.newChunk(c), seg, i)
		if err != nil {
			o.fs.cache.recycle(pt)
			o.fs.log().Warn().Err(err).Str("object", o.name).Str("etag", o.ref.ETag).Int64("chunk", i).
				Msg("chunk failed authentication; returning EIO")
			return fmt.Errorf("%s: %w", o.name, err)
		}
		o.fs.cache.put(o.key(i), pt)
		o.fs.counters.chunksLoaded.Add(1)
		f.advance(i)
	}
	return nil
}

func (r *Root) log() *zerolog.Logger { return &r.opts.Logger }
