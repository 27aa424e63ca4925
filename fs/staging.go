package fs

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/crypto"
)

// stageChunk is the granularity of staged plaintext: a write touching a
// chunk stages all of it (filled from the old version, or zeros).
const stageChunk = 256 << 10

// spillSlot is the size of one spilled chunk: nonce, ciphertext, tag.
const spillSlot = 12 + stageChunk + 16

// stagedChunk is one chunk of a file's new content: in memory (mem), or
// sealed in the spill file at slot.
type stagedChunk struct {
	mem  []byte // stageChunk bytes, nil while spilled
	used int    // mem[used:] is all zeros (what free must wipe is mem[:used])
	slot int64  // spill slot, -1 if none yet
	gen  uint64 // the file's sealing count at this chunk's last sealing: bound into its AD
}

// dirtyFile is the staged new content of one object, shared by every
// handle of its inode (docs/writes.md). Bytes at [0, size) come from the
// staged chunks, else from the base version below baseValid, else are
// zero. Staged bytes at or past size are always zero.
type dirtyFile struct {
	root *Root
	node *objectNode

	mu        sync.Mutex
	size      int64
	sizeA     atomic.Int64 // size, readable without mu (stat)
	chunks    map[int64]*stagedChunk
	inMem     map[int64]bool // indexes of the chunks held in memory (spill candidates)
	baseValid int64          // unstaged bytes below this come from the base
	baseSize  int64          // the base's size as seen at open, checked when it is opened
	base      *objectState   // the version etag, opened for reading; nil until needed
	baseV     objectVersion
	etag      string      // the version this content replaces; "" = none in storage
	dirty     bool        // changed since the last commit
	failed    error       // a commit lost to another writer, or failed at close: every later operation fails
	deleted   atomic.Bool // unlinked or replaced by a rename: never committed
	broken    atomic.Bool // failed is set: new opens start afresh from storage
	handles   int         // open handles; guarded by node.mu
	writers   int         // handles open for writing and not closed (flushed) since
	warned    bool

	spill     *os.File
	aead      cipher.AEAD
	slots     int64   // slots used in the spill file
	sealings  uint64  // chunks sealed into the spill file so far (never reused)
	freeSlots []int64 // slots of dropped chunks, for reuse
}

func newDirtyFile(r *Root, n *objectNode, etag string) *dirtyFile {
	return &dirtyFile{root: r, node: n, etag: etag, chunks: map[int64]*stagedChunk{}, inMem: map[int64]bool{}}
}

// live reports whether d (possibly nil) is the content new opens share.
func (d *dirtyFile) live() bool { return d != nil && !d.deleted.Load() && !d.broken.Load() }

// fail drops the staged content for good: every later operation of the
// handles open on it gets err, and new opens start from storage. The
// caller holds d.mu.
func (d *dirtyFile) fail(err error) error {
	d.failed = err
	d.broken.Store(true)
	d.wipe()
	return err
}

func (d *dirtyFile) setSize(s int64) {
	d.size = s
	d.sizeA.Store(s)
}

// stageBuffers recycles staging buffers (many small files would each
// allocate one). Buffers are zeroed before they are put back.
var stageBuffers = sync.Pool{New: func() any { return new([stageChunk]byte) }}

// spillBuffers recycles the ciphertext buffers of spill reads and writes
// (a commit of a large file reads every spilled chunk back).
var spillBuffers = sync.Pool{New: func() any { return new([spillSlot]byte) }}

// alloc takes a zeroed chunk buffer from the staging budget.
func (d *dirtyFile) alloc() []byte {
	d.root.staged.Add(stageChunk)
	return stageBuffers.Get().(*[stageChunk]byte)[:]
}

// free zeroes buf[:used], a buffer from alloc whose bytes past used are
// zero, and returns it to the pool (zeroed: alloc's promise).
func (d *dirtyFile) free(buf []byte, used int) {
	clear(buf[:used])
	d.root.staged.Add(-stageChunk)
	stageBuffers.Put((*[stageChunk]byte)(buf))
}

// drop wipes and frees chunk i, c.
func (d *dirtyFile) drop(i int64, c *stagedChunk) {
	if c.mem != nil {
		d.free(c.mem, c.used)
		c.mem, c.used = nil, 0
		delete(d.inMem, i)
	}
	if c.slot >= 0 {
		d.freeSlots = append(d.freeSlots, c.slot)
		c.slot = -1
	}
}

// wipe drops every staged chunk, the base and the spill file.
func (d *dirtyFile) wipe() {
	for i, c := range d.chunks {
		d.drop(i, c)
		delete(d.chunks, i)
	}
	if d.spill != nil {
		d.spill.Close() // unlinked: its blocks are freed
		d.spill, d.aead, d.slots, d.freeSlots = nil, nil, 0, nil
	}
	d.releaseBase()
}

func (d *dirtyFile) releaseBase() {
	if d.base != nil {
		d.root.releaseObject(d.baseV, d.base)
		d.base = nil
	}
}

// ensureBase opens the version the unstaged bytes below baseValid come
// from. It must still be the current version in storage.
func (d *dirtyFile) ensureBase(ctx context.Context) error {
	if d.base != nil || d.baseValid == 0 {
		return nil
	}
	v, o, _, errno := d.node.openPinned(ctx)
	if errno != 0 {
		// A write-only mount cannot read the old content: EACCES.
		return keyErrno(errno)
	}
	if v.etag != d.etag {
		d.root.releaseObject(v, o)
		return fmt.Errorf("%w: %s was replaced in storage since it was opened for writing", blob.ErrChanged, d.node.logName())
	}
	if o.d.PlainSize() != d.baseSize {
		d.root.releaseObject(v, o)
		return fmt.Errorf("%w: %s: the size in its metadata (%d) is not its authenticated size (%d)", crypto.ErrUnauthenticated, d.node.logName(), d.baseSize, o.d.PlainSize())
	}
	d.base, d.baseV = o, v
	return nil
}

// readBase copies plaintext of the base version at off into dst.
func (d *dirtyFile) readBase(ctx context.Context, dst []byte, off int64) error {
	if err := d.ensureBase(ctx); err != nil {
		return err
	}
	return readPlain(ctx, d.base, dst, off)
}

// readPlain fills dst with the plaintext of o at off (all of dst must lie
// within the object).
func readPlain(ctx context.Context, o *objectState, dst []byte, off int64) error {
	for len(dst) > 0 {
		r, err := o.read(ctx, dst, off)
		if err != nil {
			return err
		}
		n := r.n
		if r.copying {
			r.wipe = nil // the copy is dst itself: keep it
		} else {
			k := 0
			for _, v := range r.vecs {
				k += copy(dst[k:], v)
			}
		}
		r.Done()
		if n == 0 {
			return io.ErrUnexpectedEOF
		}
		dst, off = dst[n:], off+int64(n)
	}
	return nil
}

// chunk returns chunk i's buffer, staging it first: from the spill file,
// or filled from the base and zeros.
func (d *dirtyFile) chunk(ctx context.Context, i int64) ([]byte, error) {
	c := d.chunks[i]
	if c != nil && c.mem != nil {
		return c.mem, nil
	}
	buf := d.alloc()
	if c != nil {
		if err := d.unspill(c, i, buf); err != nil {
			d.free(buf, len(buf))
			return nil, err
		}
		c.mem, c.used = buf, len(buf)
		d.inMem[i] = true
		return buf, nil
	}
	start := i * stageChunk
	used := 0
	if start < d.baseValid {
		n := min(d.baseValid-start, stageChunk)
		if err := d.readBase(ctx, buf[:n], start); err != nil {
			d.free(buf, len(buf))
			return nil, err
		}
		used = int(n)
	}
	d.chunks[i] = &stagedChunk{mem: buf, used: used, slot: -1}
	d.inMem[i] = true
	return buf, nil
}

// writeAt stages p at off and returns how many bytes it staged: all of p,
// or fewer with the error that stopped it (the old content could not be
// read, or the staging bound could not be kept because spilling failed).
func (d *dirtyFile) writeAt(ctx context.Context, p []byte, off int64) (int, error) {
	n := 0
	for len(p) > 0 {
		i := off / stageChunk
		buf, err := d.chunk(ctx, i)
		if err != nil {
			return n, err
		}
		if err := d.enforce(i); err != nil {
			return n, err
		}
		in := int(off - i*stageChunk)
		k := copy(buf[in:], p)
		if c := d.chunks[i]; in+k > c.used {
			c.used = in + k
		}
		p, off, n = p[k:], off+int64(k), n+k
		d.dirty = true
		if off > d.size {
			d.setSize(off)
		}
	}
	return n, nil
}

// readAt reads the staged content at off into dst, short at the end.
func (d *dirtyFile) readAt(ctx context.Context, dst []byte, off int64) (int, error) {
	if off >= d.size {
		return 0, nil
	}
	dst = dst[:min(int64(len(dst)), d.size-off)]
	n := 0
	for n < len(dst) {
		i := off / stageChunk
		in := off - i*stageChunk
		seg := dst[n:min(len(dst), n+int(stageChunk-in))]
		c := d.chunks[i]
		switch {
		case c != nil && c.mem != nil:
			copy(seg, c.mem[in:])
		case c != nil:
			tp := stageBuffers.Get().(*[stageChunk]byte)
			err := d.unspill(c, i, tp[:])
			if err == nil {
				copy(seg, tp[in:])
			}
			clear(tp[:])
			stageBuffers.Put(tp)
			if err != nil {
				return n, err
			}
		default:
			clear(seg)
			if b := min(d.baseValid-off, int64(len(seg))); b > 0 {
				if err := d.readBase(ctx, seg[:b], off); err != nil {
					return n, err
				}
			}
		}
		n += len(seg)
		off += int64(len(seg))
	}
	return n, nil
}

// truncate sets the size; bytes past it are gone, and a later growth reads
// zeros there.
func (d *dirtyFile) truncate(ctx context.Context, size int64) error {
	if size < d.size {
		last := size / stageChunk
		for i, c := range d.chunks {
			if i > last || (i == last && size%stageChunk == 0) {
				d.drop(i, c)
				delete(d.chunks, i)
			}
		}
		if size%stageChunk != 0 {
			if _, ok := d.chunks[last]; ok || size < d.baseValid {
				buf, err := d.chunk(ctx, last)
				if err != nil {
					return err
				}
				clear(buf[size%stageChunk:])
			}
		}
		d.baseValid = min(d.baseValid, size)
	}
	if size != d.size {
		d.dirty = true
	}
	d.setSize(size)
	return nil
}

// enforce spills this file's in-memory chunks, other than keep, while
// staged plaintext exceeds the budget. A spill that fails (the spill
// directory is full, say) fails the write rather than break the bound.
func (d *dirtyFile) enforce(keep int64) error {
	if d.root.staged.Load() <= d.root.opts.StagingBytes {
		return nil
	}
	idx := make([]int64, 0, len(d.inMem))
	for i := range d.inMem {
		if i != keep {
			idx = append(idx, i)
		}
	}
	sort.Slice(idx, func(a, b int) bool { return idx[a] < idx[b] })
	for _, i := range idx {
		if d.root.staged.Load() <= d.root.opts.StagingBytes {
			return nil
		}
		if err := d.spillChunk(d.chunks[i], i); err != nil {
			if !d.warned {
				d.warned = true
				d.root.log().Warn().Err(err).Str("object", d.node.logName()).Msg("cannot spill staged data past the staging bound; writes fail")
			}
			if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
				return fmt.Errorf("spilling staged data: %w", err) // the application sees a full disk
			}
			return fmt.Errorf("%w: spilling staged data: %v", syscall.EIO, err)
		}
	}
	return nil
}

// spillAD binds a spilled chunk to its index and to its generation (the
// file's count of sealings, kept in memory: unique per sealing), so that
// whoever can write to the spill file can neither move a sealed chunk nor
// put back any older sealing.
func spillAD(i int64, gen uint64) []byte {
	ad := binary.BigEndian.AppendUint64([]byte("skrfs staging chunk"), uint64(i))
	return binary.BigEndian.AppendUint64(ad, gen)
}

// openSpill creates the unlinked spill file and the staging key: random,
// in memory only, never written anywhere.
func (d *dirtyFile) openSpill() error {
	if d.spill != nil {
		return nil
	}
	dir := d.root.opts.SpillDir
	f, err := os.OpenFile(dir, os.O_RDWR|unix.O_TMPFILE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		// No O_TMPFILE (some filesystems): create and unlink at once.
		if f, err = os.CreateTemp(dir, ".skrfs-spill-*"); err != nil {
			return err
		}
		if err := os.Remove(f.Name()); err != nil {
			f.Close()
			return err
		}
	}
	key := make([]byte, 32)
	defer clear(key)
	if _, err := rand.Read(key); err != nil {
		f.Close()
		return err
	}
	blk, err := aes.NewCipher(key)
	if err != nil {
		f.Close()
		return err
	}
	aead, err := cipher.NewGCM(blk)
	if err != nil {
		f.Close()
		return err
	}
	d.spill, d.aead = f, aead
	return nil
}

// spillChunk seals chunk i under the staging key with a fresh random nonce
// and writes it to its slot; the plaintext buffer is wiped and freed.
func (d *dirtyFile) spillChunk(c *stagedChunk, i int64) error {
	if err := d.openSpill(); err != nil {
		return err
	}
	if c.slot < 0 {
		if n := len(d.freeSlots); n > 0 {
			c.slot, d.freeSlots = d.freeSlots[n-1], d.freeSlots[:n-1]
		} else {
			c.slot = d.slots
			d.slots++
		}
	}
	cp := spillBuffers.Get().(*[spillSlot]byte)
	defer spillBuffers.Put(cp) // ciphertext: not secret
	out := cp[:12]
	if _, err := rand.Read(out); err != nil {
		return err
	}
	d.sealings++
	c.gen = d.sealings
	out = d.aead.Seal(out, out[:12], c.mem, spillAD(i, c.gen))
	if _, err := d.spill.WriteAt(out, c.slot*spillSlot); err != nil {
		return err
	}
	d.free(c.mem, c.used)
	c.mem, c.used = nil, 0
	delete(d.inMem, i)
	d.root.counters.spilled.Add(1)
	return nil
}

// errSpillCorrupt: a spilled chunk failed authentication.
var errSpillCorrupt = errors.New("staged data in the spill file failed authentication")

// unspill decrypts chunk i from the spill file into dst.
func (d *dirtyFile) unspill(c *stagedChunk, i int64, dst []byte) error {
	cp := spillBuffers.Get().(*[spillSlot]byte)
	defer spillBuffers.Put(cp)
	ct := cp[:]
	if _, err := d.spill.ReadAt(ct, c.slot*spillSlot); err != nil {
		return fmt.Errorf("reading the spill file: %w", err)
	}
	if _, err := d.aead.Open(dst[:0], ct[:12], ct[12:], spillAD(i, c.gen)); err != nil {
		return fmt.Errorf("%w: %w", syscall.EIO, errSpillCorrupt)
	}
	return nil
}
