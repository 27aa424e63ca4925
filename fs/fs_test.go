package fs

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/blob/memblob"
	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/keyrelease"
)

// countingReleaser wraps a Static releaser, counts calls and can deny.
type countingReleaser struct {
	inner *keyrelease.Static
	calls atomic.Int64
	deny  map[string]bool
	// version, when set, is the version the released keys name for a ref
	// without one, as Key Vault's do.
	version atomic.Pointer[string]
}

func (c *countingReleaser) Release(ctx context.Context, ref keyrelease.KeyRef) (*keyrelease.Key, error) {
	c.calls.Add(1)
	if c.deny[ref.Name] {
		return nil, fmt.Errorf("%w: claim x-ms-sevsnpvm-hostdata", keyrelease.ErrDenied)
	}
	k, err := c.inner.Release(ctx, ref)
	if v := c.version.Load(); err == nil && v != nil && k.Ref.Version == "" {
		k.Ref.Version = *v
	}
	return k, err
}

type world struct {
	t      *testing.T
	rk     *rsa.PrivateKey
	mnt    string
	store  *memblob.Store
	rel    *countingReleaser
	root   *Root
	rsaKey *keyrelease.Key
	oct    *keyrelease.Key
	plain  map[string][]byte
	tune   func(*Options) // set by an extra func of newWorld: adjusts the options
	// debugOut: set by an extra func of newWorld: mount with the FUSE
	// debug log going there.
	debugOut io.Writer
	opts     Options // the options of the mount, for a second mount (mountAgain)
}

var (
	refRSA    = keyrelease.KeyRef{Vault: "v.vault.azure.net", Name: "demo-rsa"}
	refOct    = keyrelease.KeyRef{Vault: "v.vault.azure.net", Name: "demo-oct"}
	refDenied = keyrelease.KeyRef{Vault: "v.vault.azure.net", Name: "denied"}
	refOther  = keyrelease.KeyRef{Vault: "evil.vault.azure.net", Name: "demo-rsa"}
)

func pseudo(seed uint64, n int) []byte {
	b := make([]byte, n)
	mrand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 7}).Read(b)
	return b
}

func (w *world) put(name string, pt []byte, kek any, ref keyrelease.KeyRef, sealedFor string) {
	w.t.Helper()
	obj, err := crypto.Seal(pt, kek, crypto.SealOptions{Name: sealedFor, KeyRef: ref.String(), ChunkSize: 4096})
	if err != nil {
		w.t.Fatal(err)
	}
	if err := w.store.Put(name, obj); err != nil {
		w.t.Fatal(err)
	}
	w.plain[name] = pt
}

func newWorld(t *testing.T, extra ...func(w *world)) *world {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the filesystem tests mount FUSE and need root (make test runs as root)")
	}
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsaKey, _ := keyrelease.FromCrypto(rk)
	rsaKey.Ref = refRSA
	oct, _ := keyrelease.ParseKey(pseudo(1, 32))
	oct.Ref = refOct
	denied, _ := keyrelease.ParseKey(pseudo(2, 32))
	denied.Ref = refDenied
	w := &world{t: t, rk: rk, store: memblob.New(), rsaKey: rsaKey, oct: oct, plain: map[string][]byte{},
		rel: &countingReleaser{inner: keyrelease.NewStatic(rsaKey.Clone(), oct.Clone(), denied), deny: map[string]bool{"denied": true}}}
	w.put("hello.txt", []byte("hello, skrfs\n"), &rk.PublicKey, refRSA, "hello.txt")
	w.put("empty", nil, oct.Oct, refOct, "empty")
	w.put("big.bin", pseudo(3, 3<<20+123), oct.Oct, refOct, "big.bin")
	w.put("dir/sub/nested.txt", []byte("nested file\n"), oct.Oct, refOct, "dir/sub/nested.txt")
	w.put("swapped.txt", []byte("I was sealed for another name"), oct.Oct, refOct, "other.txt")
	w.put("foreign-key.txt", []byte("names a key nobody configured"), oct.Oct, refOther, "foreign-key.txt")
	w.put("denied.txt", []byte("needs the denied key"), denied.Oct, refDenied, "denied.txt")
	tampered, _ := crypto.Seal(pseudo(4, 5*4096), oct.Oct, crypto.SealOptions{Name: "tampered.bin", KeyRef: refOct.String(), ChunkSize: 4096})
	tampered[len(tampered)/2] ^= 1 // inside chunk 2
	w.store.Put("tampered.bin", tampered)
	trunc, _ := crypto.Seal(pseudo(5, 5*4096), oct.Oct, crypto.SealOptions{Name: "truncated.bin", KeyRef: refOct.String(), ChunkSize: 4096})
	h, _ := crypto.ParseHeader(trunc)
	w.store.Put("truncated.bin", trunc[:h.Len()+3*(4096+16)])
	w.store.Put("not-an-object", []byte("plain text that is not sealed"))
	for _, f := range extra {
		f(w)
	}

	views := func(name string) []ViewSpec {
		return []ViewSpec{{File: name, Format: keyrelease.FormatDefault, Mode: 0o400},
			{File: name + ".jwk", Format: keyrelease.FormatJWK, Mode: 0o400},
			{File: name + ".pub.pem", Format: keyrelease.FormatPubPEM, Mode: 0o440}}
	}
	opts := Options{
		Releaser: w.rel,
		Keys: []KeySpec{{Name: "demo-rsa", Ref: refRSA, Views: views("demo-rsa")},
			{Name: "demo-oct", Ref: refOct, Views: views("demo-oct")},
			{Name: "denied", Ref: refDenied, Views: views("denied")}},
		Datasets:   []DatasetSpec{{Name: "data", Store: w.store, Keys: []keyrelease.KeyRef{refRSA, refOct, refDenied}}},
		CacheBytes: 1 << 20, // small, to exercise eviction
		RangeSize:  64 << 10,
		Logger:     zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel),
	}
	if w.tune != nil {
		w.tune(&opts)
	}
	w.opts = opts
	root, err := NewRoot(opts)
	if err != nil {
		t.Fatal(err)
	}
	w.root = root
	w.mnt = t.TempDir()
	srv, err := Mount(w.mnt, root, MountOptions{Debug: os.Getenv("FUSEDEBUG") != "" || w.debugOut != nil, DebugOut: w.debugOut})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
		root.Wipe()
	})
	return w
}

func (w *world) path(p string) string { return filepath.Join(w.mnt, filepath.FromSlash(p)) }

func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	errors.As(err, &e)
	return e
}

func TestListingNeedsNoRelease(t *testing.T) {
	w := newWorld(t)
	ents, err := os.ReadDir(w.path("keys"))
	if err != nil || len(ents) != 9 {
		t.Fatalf("keys/: %v, %d entries", err, len(ents))
	}
	for name, pt := range map[string][]byte{"hello.txt": w.plain["hello.txt"], "empty": nil, "big.bin": w.plain["big.bin"], "dir/sub/nested.txt": w.plain["dir/sub/nested.txt"]} {
		st, err := os.Stat(w.path("data/" + name))
		if err != nil || st.Size() != int64(len(pt)) || st.Mode().Perm() != 0o400 {
			t.Fatalf("stat %s: %v, size %d mode %v; want size %d mode 0400", name, err, st.Size(), st.Mode(), len(pt))
		}
	}
	names, _ := os.ReadDir(w.path("data"))
	if len(names) != 10 {
		t.Fatalf("data/ has %d entries", len(names))
	}
	if st, err := os.Stat(w.path("data/dir/sub")); err != nil || !st.IsDir() {
		t.Fatalf("nested directory: %v", err)
	}
	if n := w.rel.calls.Load(); n != 0 {
		t.Fatalf("listing and stat released %d keys; want 0", n)
	}
}

func TestKeyFiles(t *testing.T) {
	w := newWorld(t)
	for _, tc := range []struct {
		file string
		want func(k *keyrelease.Key) bool
	}{
		{"keys/demo-rsa", func(k *keyrelease.Key) bool { return k.Type == keyrelease.KeyTypeRSA && k.IsPrivate() }},
		{"keys/demo-rsa.jwk", func(k *keyrelease.Key) bool { return k.Type == keyrelease.KeyTypeRSA && k.Ref == refRSA }},
		{"keys/demo-rsa.pub.pem", func(k *keyrelease.Key) bool { return k.Type == keyrelease.KeyTypeRSA && !k.IsPrivate() }},
		{"keys/demo-oct", func(k *keyrelease.Key) bool { return bytes.Equal(k.Oct, w.oct.Oct) }},
		{"keys/demo-oct.jwk", func(k *keyrelease.Key) bool { return bytes.Equal(k.Oct, w.oct.Oct) }},
	} {
		b, err := os.ReadFile(w.path(tc.file))
		if err != nil {
			t.Fatalf("read %s: %v", tc.file, err)
		}
		k, err := keyrelease.ParseKey(b)
		if err != nil || !tc.want(k) {
			t.Fatalf("%s: parsed %v, %v", tc.file, k, err)
		}
		if st, _ := os.Stat(w.path(tc.file)); st.Size() != int64(len(b)) {
			t.Fatalf("%s: stat size %d after open, want %d", tc.file, st.Size(), len(b))
		}
	}
	if _, err := os.ReadFile(w.path("keys/demo-oct.pub.pem")); errnoOf(err) != syscall.ENOENT {
		t.Fatalf("oct pub.pem: %v, want ENOENT", err)
	}
	if _, err := os.ReadFile(w.path("keys/denied")); errnoOf(err) != syscall.EACCES {
		t.Fatalf("denied key: %v, want EACCES", err)
	}
	if _, err := os.OpenFile(w.path("keys/demo-oct"), os.O_WRONLY, 0); errnoOf(err) != syscall.EROFS {
		t.Fatalf("open for write: %v, want EROFS", err)
	}
}

func TestReadObjects(t *testing.T) {
	w := newWorld(t)
	for _, name := range []string{"hello.txt", "empty", "big.bin", "dir/sub/nested.txt"} {
		got, err := os.ReadFile(w.path("data/" + name))
		if err != nil || !bytes.Equal(got, w.plain[name]) {
			t.Fatalf("read %s: %v (equal %v)", name, err, bytes.Equal(got, w.plain[name]))
		}
	}
	// Random reads through one descriptor, and many concurrent readers.
	f, err := os.Open(w.path("data/big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	big := w.plain["big.bin"]
	r := mrand.New(mrand.NewPCG(1, 1))
	for i := 0; i < 200; i++ {
		off := r.Int64N(int64(len(big)))
		p := make([]byte, r.IntN(20000)+1)
		n, err := f.ReadAt(p, off)
		if (err != nil && err != io.EOF) || !bytes.Equal(p[:n], big[off:off+int64(n)]) || n == 0 {
			t.Fatalf("ReadAt(%d, %d) = %d, %v", off, len(p), n, err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 64; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			name := []string{"big.bin", "hello.txt", "dir/sub/nested.txt"}[g%3]
			got, err := os.ReadFile(w.path("data/" + name))
			if err != nil || !bytes.Equal(got, w.plain[name]) {
				errs <- fmt.Errorf("reader %d of %s: %v", g, name, err)
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestRefusals(t *testing.T) {
	w := newWorld(t)
	for _, tc := range []struct {
		name string
		want syscall.Errno
	}{
		{"swapped.txt", syscall.EIO},        // sealed for another name
		{"foreign-key.txt", syscall.EACCES}, // header names an unconfigured vault
		{"denied.txt", syscall.EACCES},      // release denied
		{"truncated.bin", syscall.EIO},      // final chunk proves the size
		{"not-an-object", syscall.EIO},      // no skrfs header
	} {
		_, err := os.ReadFile(w.path("data/" + tc.name))
		if errnoOf(err) != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// A tampered chunk fails exactly the reads that touch it.
	f, err := os.Open(w.path("data/tampered.bin"))
	if err != nil {
		t.Fatalf("open tampered: %v", err)
	}
	defer f.Close()
	p := make([]byte, 4096)
	if _, err := f.ReadAt(p, 0); err != nil {
		t.Fatalf("read of an intact chunk: %v", err)
	}
	if _, err := f.ReadAt(p, 2*4096); errnoOf(err) != syscall.EIO {
		t.Fatalf("read of the tampered chunk: %v, want EIO", err)
	}
	if _, err := os.OpenFile(w.path("data/hello.txt"), os.O_RDWR, 0); errnoOf(err) != syscall.EROFS {
		t.Fatalf("open for write: %v, want EROFS", err)
	}
}

func TestReplacedObject(t *testing.T) {
	w := newWorld(t)
	f, err := os.Open(w.path("data/big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := make([]byte, 4096)
	if _, err := f.ReadAt(p, 0); err != nil {
		t.Fatal(err)
	}
	w.put("big.bin", []byte("version two"), w.oct.Oct, refOct, "big.bin")
	// The open handle never mixes versions: uncached chunks of the old
	// version are gone.
	if _, err := f.ReadAt(p, 2<<20); errnoOf(err) != syscall.ESTALE {
		t.Fatalf("read of the replaced version: %v, want ESTALE", err)
	}
	got, err := os.ReadFile(w.path("data/big.bin"))
	if err != nil || string(got) != "version two" {
		t.Fatalf("new open: %q, %v", got, err)
	}
}

// TestReadAmplification counts what storage returns per byte read: random
// 4 KiB reads cost at most one chunk each, a sequential read about one
// byte per byte.
func TestReadAmplification(t *testing.T) {
	const chunk = 64 << 10
	w := newWorld(t, func(w *world) {
		pt := pseudo(9, 4<<20+321)
		obj, err := crypto.Seal(pt, w.oct.Oct, crypto.SealOptions{Name: "amp.bin", KeyRef: refOct.String(), ChunkSize: chunk})
		if err != nil {
			t.Fatal(err)
		}
		w.store.Put("amp.bin", obj)
		w.plain["amp.bin"] = pt
		w.tune = func(o *Options) {
			o.CacheBytes, o.RangeSize = 0, 0 // the defaults
			// Storage with a round trip, as remote storage has: a reader
			// that outruns read-ahead shows up as many small fetches.
			o.Datasets[0].Store = slowStore{w.store, 3 * time.Millisecond}
		}
	})
	pt := w.plain["amp.bin"]
	f, err := os.OpenFile(w.path("data/amp.bin"), os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	before := w.root.Stats()
	r := mrand.New(mrand.NewPCG(2, 2))
	p := make([]byte, 4096)
	const reads = 300
	for i := 0; i < reads; i++ {
		off := r.Int64N(int64(len(pt))/4096) * 4096
		n, err := f.ReadAt(p, off)
		if (err != nil && err != io.EOF) || !bytes.Equal(p[:n], pt[off:off+int64(n)]) {
			t.Fatalf("ReadAt(%d) = %d, %v", off, n, err)
		}
	}
	d := w.root.Stats()
	fetched, served := d.BytesFetched-before.BytesFetched, d.BytesServed-before.BytesServed
	if served != reads*4096 {
		t.Fatalf("served %d bytes for %d reads of 4 KiB", served, reads)
	}
	if max := int64(reads) * (chunk + crypto.TagSize); fetched > max {
		t.Fatalf("random 4 KiB reads fetched %d bytes, more than one chunk per read (%d)", fetched, max)
	}
	if fetched == 0 {
		t.Fatal("nothing fetched: the counters do not count")
	}
	t.Logf("random 4 KiB: %d reads, %d bytes fetched, amplification %.1f (one chunk = %d)", reads, fetched, float64(fetched)/float64(served), chunk/4096)

	// A whole sequential read of a fresh object version fetches each byte
	// about once (header, tags and the final chunk read at open aside).
	pt2 := pseudo(10, 64<<20+321)
	obj, err := crypto.Seal(pt2, w.oct.Oct, crypto.SealOptions{Name: "amp.bin", KeyRef: refOct.String(), ChunkSize: chunk})
	if err != nil {
		t.Fatal(err)
	}
	w.store.Put("amp.bin", obj)
	w.plain["amp.bin"] = pt2
	before = w.root.Stats()
	got, err := os.ReadFile(w.path("data/amp.bin"))
	if err != nil || !bytes.Equal(got, w.plain["amp.bin"]) {
		t.Fatalf("sequential read: %v (got %d bytes, want %d, equal %v)", err, len(got), len(w.plain["amp.bin"]), bytes.Equal(got, w.plain["amp.bin"]))
	}
	d = w.root.Stats()
	amp := float64(d.BytesFetched-before.BytesFetched) / float64(d.BytesServed-before.BytesServed)
	if amp < 1 || amp > 1.05 {
		t.Fatalf("sequential read amplification %.3f, want 1-1.05", amp)
	}
	// Read-ahead fetches whole 8 MiB ranges, not the sliver each read
	// uncovers: a 64 MiB object takes 8, plus the header, the final chunk and the
	// reader's first request (about 24 when each read fetched its sliver).
	fetches := d.Fetches - before.Fetches
	t.Logf("sequential: %d storage reads for %d bytes", fetches, len(got))
	if fetches > 16 {
		t.Fatalf("sequential read of 64 MiB made %d storage reads; want few whole ranges", fetches)
	}
}

// TestReadAheadManyStreams: with many objects open, each stream's share of
// the cache is smaller than a storage range; read-ahead must still fetch
// (a window at a time) instead of leaving every chunk to the reader.
func TestReadAheadManyStreams(t *testing.T) {
	const chunk, objs = 64 << 10, 64
	w := newWorld(t, func(w *world) {
		for i := 0; i < objs; i++ {
			name := fmt.Sprintf("s%02d.bin", i)
			pt := pseudo(uint64(20+i), 2<<20)
			obj, err := crypto.Seal(pt, w.oct.Oct, crypto.SealOptions{Name: name, KeyRef: refOct.String(), ChunkSize: chunk})
			if err != nil {
				t.Fatal(err)
			}
			w.store.Put(name, obj)
			w.plain[name] = pt
		}
		w.tune = func(o *Options) {
			o.CacheBytes, o.RangeSize, o.MaxReadAhead = 0, 0, 0 // the defaults
			o.Datasets[0].Store = slowStore{w.store, 3 * time.Millisecond}
		}
	})
	var files []*os.File
	for i := 0; i < objs; i++ {
		f, err := os.OpenFile(w.path(fmt.Sprintf("data/s%02d.bin", i)), os.O_RDONLY|syscall.O_DIRECT, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files = append(files, f)
	}
	pt := w.plain["s00.bin"]
	before := w.root.Stats()
	p := make([]byte, chunk)
	for off := int64(0); off < int64(len(pt)); off += chunk {
		if n, err := files[0].ReadAt(p, off); err != nil || !bytes.Equal(p[:n], pt[off:off+int64(n)]) {
			t.Fatalf("ReadAt(%d) = %d, %v", off, n, err)
		}
	}
	d := w.root.Stats()
	hits, misses := d.ChunkHits-before.ChunkHits, d.ChunkMisses-before.ChunkMisses
	t.Logf("%d objects open, sequential 64 KiB reads: %d chunks found cached, %d waited for", objs, hits, misses)
	if hits < misses {
		t.Fatalf("read-ahead did not keep ahead of one of %d streams: %d hits, %d misses", objs, hits, misses)
	}
}

// TestReplacedObjectGrows: a new open of a replaced, larger object reads
// all of the new version while a handle of the old one is still open
// (go-fuse answers attribute requests with that old handle).
func TestReplacedObjectGrows(t *testing.T) {
	w := newWorld(t)
	f, err := os.Open(w.path("data/hello.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.ReadAll(f); err != nil {
		t.Fatal(err)
	}
	bigger := pseudo(11, 300<<10)
	w.put("hello.txt", bigger, w.oct.Oct, refOct, "hello.txt")
	got, err := os.ReadFile(w.path("data/hello.txt"))
	if err != nil || !bytes.Equal(got, bigger) {
		t.Fatalf("read of the grown version: %d bytes, %v; want %d bytes", len(got), err, len(bigger))
	}
	if st, err := os.Stat(w.path("data/hello.txt")); err != nil || st.Size() != int64(len(bigger)) {
		t.Fatalf("stat after the new open: %v, %v", st.Size(), err)
	}
}

// slowStore delays every storage read by a fixed round trip.
type slowStore struct {
	*memblob.Store
	rtt time.Duration
}

func (s slowStore) ReadAt(ctx context.Context, ref blob.Ref, p []byte, off int64) (int, error) {
	time.Sleep(s.rtt)
	return s.Store.ReadAt(ctx, ref, p, off)
}

func (s slowStore) OpenRange(ctx context.Context, ref blob.Ref, off, n int64) (io.ReadCloser, error) {
	time.Sleep(s.rtt)
	return s.Store.OpenRange(ctx, ref, off, n)
}

// callStore counts a store's calls by method; it reads heads itself, as
// localdir and azblob do.
type callStore struct {
	blob.Store
	stats, readAts, heads, ranges *atomic.Int64
}

func (s callStore) Stat(ctx context.Context, name string) (blob.Info, error) {
	s.stats.Add(1)
	return s.Store.Stat(ctx, name)
}

func (s callStore) ReadAt(ctx context.Context, ref blob.Ref, p []byte, off int64) (int, error) {
	s.readAts.Add(1)
	return s.Store.ReadAt(ctx, ref, p, off)
}

func (s callStore) ReadHead(ctx context.Context, name string, p []byte) (blob.Info, int, error) {
	s.heads.Add(1)
	return blob.ReadHead(ctx, s.Store, name, p)
}

func (s callStore) OpenRange(ctx context.Context, ref blob.Ref, off, n int64) (io.ReadCloser, error) {
	s.ranges.Add(1)
	return blob.OpenRange(ctx, s.Store, ref, off, n)
}

// TestOpenIsOneStorageRequest: opening and reading a small object costs
// one storage request (one ranged GET on Azure), which finds the version
// and brings the header and the whole object; a large one adds the final
// chunk's read at open.
func TestOpenIsOneStorageRequest(t *testing.T) {
	var stats, readAts, heads, ranges atomic.Int64
	w := newWorld(t, func(w *world) {
		w.tune = func(o *Options) {
			o.Datasets[0].Store = callStore{w.store, &stats, &readAts, &heads, &ranges}
		}
	})
	calls := func() [4]int64 { return [4]int64{stats.Load(), readAts.Load(), heads.Load(), ranges.Load()} }
	for _, tc := range []struct {
		name string
		want [4]int64 // Stat, ReadAt, ReadHead, OpenRange
	}{
		{"hello.txt", [4]int64{0, 0, 1, 0}},
		{"dir/sub/nested.txt", [4]int64{0, 0, 1, 0}},
		{"big.bin", [4]int64{0, 0, 1, 1}}, // the final chunk, then read-ahead
	} {
		if _, err := os.Stat(w.path("data/" + tc.name)); err != nil { // the lookup, not counted
			t.Fatal(err)
		}
		before := calls()
		f, err := os.Open(w.path("data/" + tc.name))
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 100)
		n, err := f.Read(buf)
		f.Close()
		if err != nil || !bytes.Equal(buf[:n], w.plain[tc.name][:n]) {
			t.Fatalf("%s: read %d bytes, %v", tc.name, n, err)
		}
		after := calls()
		var got [4]int64
		for i := range got {
			got[i] = after[i] - before[i]
		}
		if tc.name == "big.bin" {
			got[3] = min(got[3], 1) // read-ahead may add ranges; the open adds one
		}
		if got != tc.want {
			t.Errorf("open and read of %s: Stat, ReadAt, ReadHead, OpenRange = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestKeyFileSizeRightAfterOpen: a path stat straight after the first read
// of a key file shows the rendered size (issue: `stat` after `head -c 64
// keys/demo-oct` showed 0 until the kernel's cached attributes expired).
// Nothing here fstats the open file, which would refresh them by itself.
func TestKeyFileSizeRightAfterOpen(t *testing.T) {
	w := newWorld(t)
	for _, name := range []string{"keys/demo-oct", "keys/demo-rsa.jwk"} {
		p := w.path(name)
		if st, err := os.Stat(p); err != nil || st.Size() != 0 { // cached by the kernel: size 0 before any release
			t.Fatalf("%s before open: %v, %v", name, st, err)
		}
		fd, err := syscall.Open(p, syscall.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		n, err := syscall.Read(fd, buf)
		syscall.Close(fd)
		if err != nil || n == 0 {
			t.Fatalf("read %s: %d, %v", name, n, err)
		}
		// Like coreutils' `stat -c %s`: statx asking for the size only. A
		// full stat(2) also asks for the atime that the read invalidated,
		// and so would refresh the attributes by itself.
		var stx unix.Statx_t
		err = unix.Statx(unix.AT_FDCWD, p, 0, unix.STATX_SIZE, &stx)
		b, _ := os.ReadFile(p)
		if err != nil || stx.Size != uint64(len(b)) || len(b) == 0 {
			t.Fatalf("%s: stat size %d right after the first read, want %d (%v)", name, stx.Size, len(b), err)
		}
	}
}

// TestOctPublicViewVanishes: keys/ lists the pub.pem view of every key
// before anything is released (listing never attests); once a release
// shows that a key is oct, its pub.pem view is gone (ENOENT, not listed,
// not even from the kernel's cached entry), and the daemon says why once.
func TestOctPublicViewVanishes(t *testing.T) {
	var logs syncBuffer
	w := newWorld(t, func(w *world) {
		w.tune = func(o *Options) { o.Logger = zerolog.New(&logs).Level(zerolog.InfoLevel) }
	})
	names := func() []string {
		ents, err := os.ReadDir(w.path("keys"))
		if err != nil {
			t.Fatal(err)
		}
		var n []string
		for _, e := range ents {
			n = append(n, e.Name())
		}
		return n
	}
	if n := names(); !slices.Contains(n, "demo-oct.pub.pem") || len(n) != 9 {
		t.Fatalf("before any release: %v", n)
	}
	// The kernel has a cached entry for the file now.
	if _, err := os.Stat(w.path("keys/demo-oct.pub.pem")); err != nil {
		t.Fatal(err)
	}
	// The first release of the key, through the pub.pem view itself.
	if _, err := os.ReadFile(w.path("keys/demo-oct.pub.pem")); errnoOf(err) != syscall.ENOENT {
		t.Fatalf("oct pub.pem: %v, want ENOENT", err)
	}
	for i := 0; i < 2; i++ {
		if _, err := os.Stat(w.path("keys/demo-oct.pub.pem")); errnoOf(err) != syscall.ENOENT {
			t.Fatalf("stat of the oct pub.pem after a release: %v, want ENOENT", err)
		}
		if _, err := os.ReadFile(w.path("keys/demo-oct.pub.pem")); errnoOf(err) != syscall.ENOENT {
			t.Fatalf("oct pub.pem after a release: %v, want ENOENT", err)
		}
		if n := names(); slices.Contains(n, "demo-oct.pub.pem") || len(n) != 8 {
			t.Fatalf("after the release: %v", n)
		}
	}
	// The other views of the key, and the RSA key's pub.pem, are served.
	for _, f := range []string{"keys/demo-oct", "keys/demo-oct.jwk", "keys/demo-rsa.pub.pem"} {
		if b, err := os.ReadFile(w.path(f)); err != nil || len(b) == 0 {
			t.Fatalf("%s: %v", f, err)
		}
	}
	if n := strings.Count(logs.String(), "its pub.pem views are removed"); n != 1 ||
		!strings.Contains(logs.String(), "keys/demo-oct.pub.pem") {
		t.Fatalf("want the reason logged once, got %d times:\n%s", n, logs.String())
	}
}

// syncBuffer is a bytes.Buffer safe for the daemon's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// listStore counts List calls and the entries they produce, besides
// callStore's counters.
type listStore struct {
	callStore
	lists, listed *atomic.Int64
}

func (s listStore) List(ctx context.Context, opts blob.ListOptions, fn func(blob.Info) error) error {
	s.lists.Add(1)
	return s.Store.List(ctx, opts, func(i blob.Info) error { s.listed.Add(1); return fn(i) })
}

// TestLookupCounters guards, by counters, the lookups of a 1,000-entry
// directory (issue 20: no O(n) work per lookup): a cold stat deep in the
// tree lists nothing whole (a stat per name; a listing cut at its first
// entry per directory on the path), and `ls -l` of the directory is one
// listing and no request per entry.
func TestLookupCounters(t *testing.T) {
	const n = 1000
	var stats, readAts, heads, ranges, lists, listed atomic.Int64
	w := newWorld(t, func(w *world) {
		for i := range n {
			// With the upload metadata, as skrfs upload stores objects:
			// the listing gives every size.
			name := fmt.Sprintf("tree/leaf/f%04d", i)
			obj, err := crypto.Seal([]byte(name), w.oct.Oct, crypto.SealOptions{Name: name, KeyRef: refOct.String()})
			if err != nil {
				t.Fatal(err)
			}
			h, _ := crypto.ParseHeader(obj)
			w.store.PutMetadata(name, obj, map[string]string{"skrfs_header_len": fmt.Sprint(h.Len()),
				"skrfs_chunk_size": fmt.Sprint(h.ChunkSize), "skrfs_version": fmt.Sprint(h.Version)})
		}
		w.tune = func(o *Options) {
			o.Datasets[0].Store = listStore{callStore{w.store, &stats, &readAts, &heads, &ranges}, &lists, &listed}
		}
	})
	if _, err := os.Stat(w.path("data/tree/leaf/f0999")); err != nil {
		t.Fatal(err)
	}
	// tree and leaf: a stat that misses and a listing cut at one entry
	// each; f0999: one stat.
	if s, l, e := stats.Load(), lists.Load(), listed.Load(); s != 3 || l != 2 || e != 2 {
		t.Fatalf("cold deep stat: %d stats, %d listings of %d entries; want 3, 2, 2", s, l, e)
	}
	s0, l0, h0, r0 := stats.Load(), lists.Load(), heads.Load(), readAts.Load()
	ents, err := os.ReadDir(w.path("data/tree/leaf"))
	if err != nil || len(ents) != n {
		t.Fatalf("readdir: %d entries, %v", len(ents), err)
	}
	for _, e := range ents {
		st, err := os.Lstat(w.path("data/tree/leaf/" + e.Name()))
		if err != nil || st.Size() != int64(len("tree/leaf/"+e.Name())) {
			t.Fatalf("%s: %v, %v", e.Name(), st, err)
		}
	}
	if s, l, h, r := stats.Load()-s0, lists.Load()-l0, heads.Load()-h0, readAts.Load()-r0; s != 0 || l != 1 || h != 0 || r != 0 {
		t.Fatalf("ls -l of %d objects: %d stats, %d listings, %d head reads, %d reads; want 0, 1, 0, 0", n, s, l, h, r)
	}
}

// TestForgetReleasesMemory: when the kernel forgets many inodes
// (drop_caches here, memory pressure in production), the daemon returns
// the memory of their nodes to the OS soon after, instead of keeping it
// until the heap next grows (an idle daemon: minutes).
func TestForgetReleasesMemory(t *testing.T) {
	var frees atomic.Int64
	w := newWorld(t, func(w *world) {
		for i := range 300 {
			name := fmt.Sprintf("many/f%03d", i)
			w.put(name, []byte(name), w.oct.Oct, refOct, name)
		}
		w.tune = func(o *Options) {
			o.forgetBurst = 100
			o.freeMemory = func() { frees.Add(1) }
		}
	})
	ents, err := os.ReadDir(w.path("data/many"))
	if err != nil || len(ents) != 300 {
		t.Fatalf("readdir: %d, %v", len(ents), err)
	}
	for _, e := range ents {
		if _, err := os.Stat(w.path("data/many/" + e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	if f := frees.Load(); f != 0 {
		t.Fatalf("%d releases before any forget", f)
	}
	deadline := time.Now().Add(20 * time.Second)
	for frees.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the kernel forgot the inodes, and no release of memory followed")
		}
		// Dentries and inodes; the kernel sends FORGET for each.
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0); err != nil {
			t.Skipf("cannot drop caches: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
