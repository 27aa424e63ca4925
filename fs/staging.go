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
	slot int64  // spill slot, -1 if none yet
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
	baseValid int64        // unstaged bytes below this come from the base
	baseSize  int64        // the base's size as seen at open, checked when it is opened
	base      *objectState // the version etag, opened for reading; nil until needed
	baseV     objectVersion
	etag      string      // the version this content replaces; "" = none in storage
	dirty     bool        // changed since the last commit
	failed    error       // a commit lost to another writer: every later operation fails
	deleted   atomic.Bool // unlinked or replaced by a rename: never committed
	handles   int         // open handles; guarded by node.mu
	writers   int         // handles open for writing and not closed (flushed) since
	warned    bool

	spill *os.File
	aead  cipher.AEAD
	slots int64 // slots used in the spill file
	free  []int64
}

func newDirtyFile(r *Root, n *objectNode, etag string) *dirtyFile {
	return &dirtyFile{root: r, node: n, etag: etag, chunks: map[int64]*stagedChunk{}}
}

func (d *dirtyFile) setSize(s int64) {
	d.size = s
	d.sizeA.Store(s)
}

// alloc takes a zeroed chunk buffer from the staging budget.
func (d *dirtyFile) alloc() []byte {
	d.root.staged.Add(stageChunk)
	return make([]byte, stageChunk)
}

// drop wipes and frees chunk c.
func (d *dirtyFile) drop(c *stagedChunk) {
	if c.mem != nil {
		clear(c.mem)
		c.mem = nil
		d.root.staged.Add(-stageChunk)
	}
	if c.slot >= 0 {
		d.free = append(d.free, c.slot)
		c.slot = -1
	}
}

// wipe drops every staged chunk, the base and the spill file.
func (d *dirtyFile) wipe() {
	for i, c := range d.chunks {
		d.drop(c)
		delete(d.chunks, i)
	}
	if d.spill != nil {
		d.spill.Close() // unlinked: its blocks are freed
		d.spill, d.aead, d.slots, d.free = nil, nil, 0, nil
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
			clear(buf)
			d.root.staged.Add(-stageChunk)
			return nil, err
		}
		c.mem = buf
		return buf, nil
	}
	start := i * stageChunk
	if start < d.baseValid {
		n := min(d.baseValid-start, stageChunk)
		if err := d.readBase(ctx, buf[:n], start); err != nil {
			clear(buf)
			d.root.staged.Add(-stageChunk)
			return nil, err
		}
	}
	d.chunks[i] = &stagedChunk{mem: buf, slot: -1}
	return buf, nil
}

// writeAt stages p at off.
func (d *dirtyFile) writeAt(ctx context.Context, p []byte, off int64) error {
	for len(p) > 0 {
		i := off / stageChunk
		buf, err := d.chunk(ctx, i)
		if err != nil {
			return err
		}
		k := copy(buf[off-i*stageChunk:], p)
		p, off = p[k:], off+int64(k)
		d.dirty = true
		if off > d.size {
			d.setSize(off)
		}
		d.enforce(i)
	}
	return nil
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
			tmp := make([]byte, stageChunk)
			err := d.unspill(c, i, tmp)
			if err == nil {
				copy(seg, tmp[in:])
			}
			clear(tmp)
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
				d.drop(c)
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
// staged plaintext exceeds the budget.
func (d *dirtyFile) enforce(keep int64) {
	if d.root.staged.Load() <= d.root.opts.StagingBytes {
		return
	}
	idx := make([]int64, 0, len(d.chunks))
	for i, c := range d.chunks {
		if c.mem != nil && i != keep {
			idx = append(idx, i)
		}
	}
	sort.Slice(idx, func(a, b int) bool { return idx[a] < idx[b] })
	for _, i := range idx {
		if d.root.staged.Load() <= d.root.opts.StagingBytes {
			return
		}
		if err := d.spillChunk(d.chunks[i], i); err != nil {
			if !d.warned {
				d.warned = true
				d.root.log().Warn().Err(err).Str("object", d.node.logName()).Msg("cannot spill staged data; keeping it in memory")
			}
			return
		}
	}
}

// spillAD binds a spilled chunk to its index.
func spillAD(i int64) []byte {
	return binary.BigEndian.AppendUint64([]byte("skrfs staging chunk"), uint64(i))
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
		if n := len(d.free); n > 0 {
			c.slot, d.free = d.free[n-1], d.free[:n-1]
		} else {
			c.slot = d.slots
			d.slots++
		}
	}
	out := make([]byte, 12, spillSlot)
	if _, err := rand.Read(out); err != nil {
		return err
	}
	out = d.aead.Seal(out, out[:12], c.mem, spillAD(i))
	if _, err := d.spill.WriteAt(out, c.slot*spillSlot); err != nil {
		return err
	}
	clear(c.mem)
	c.mem = nil
	d.root.staged.Add(-stageChunk)
	d.root.counters.spilled.Add(1)
	return nil
}

// errSpillCorrupt: a spilled chunk failed authentication.
var errSpillCorrupt = errors.New("staged data in the spill file failed authentication")

// unspill decrypts chunk i from the spill file into dst.
func (d *dirtyFile) unspill(c *stagedChunk, i int64, dst []byte) error {
	ct := make([]byte, spillSlot)
	if _, err := d.spill.ReadAt(ct, c.slot*spillSlot); err != nil {
		return fmt.Errorf("reading the spill file: %w", err)
	}
	if _, err := d.aead.Open(dst[:0], ct[:12], ct[12:], spillAD(i)); err != nil {
		return fmt.Errorf("%w: %w", syscall.EIO, errSpillCorrupt)
	}
	return nil
}
