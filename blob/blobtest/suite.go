// Package blobtest is the conformance suite that every blob.Store
// implementation runs: the local directory, the in-memory store, and Azure
// Blob Storage (against Azurite). A store that passes it can be used by the
// filesystem without special cases.
package blobtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/skrfs/skrfs/blob"
)

// Fixture is one fresh, empty store plus the means to change it behind the
// store's back, as a producer or an attacker would.
type Fixture struct {
	Store blob.Store
	// Put creates or replaces the object name with data.
	Put func(name string, data []byte) error
	// Delete removes the object name.
	Delete func(name string) error
}

// Suite runs the conformance tests. New must return an empty store each
// time it is called and register any cleanup with tb.Cleanup.
type Suite struct {
	New func(tb testing.TB) Fixture
}

// Run runs every conformance test as a subtest of t.
func (s Suite) Run(t *testing.T) {
	tests := []struct {
		name string
		fn   func(*testing.T, Fixture)
	}{
		{"StatMissing", testStatMissing},
		{"StatAfterPut", testStatAfterPut},
		{"ReadAtRanges", testReadAtRanges},
		{"ReadAtPastEnd", testReadAtPastEnd},
		{"ReadAtEmptyObject", testReadAtEmptyObject},
		{"ReadAtMissing", testReadAtMissing},
		{"ReplacedIsChanged", testReplacedIsChanged},
		{"DeletedIsNotFound", testDeletedIsNotFound},
		{"ListFlat", testListFlat},
		{"ListHierarchical", testListHierarchical},
		{"ListStopsOnError", testListStopsOnError},
		{"CanceledContext", testCanceledContext},
		{"ConcurrentReads", testConcurrentReads},
		{"OpenRange", testOpenRange},
		{"ReadHead", testReadHead},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, s.New(t))
		})
	}
}

// Data returns n deterministic pseudo-random bytes for seed.
func Data(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func put(t *testing.T, f Fixture, name string, data []byte) blob.Info {
	t.Helper()
	if err := f.Put(name, data); err != nil {
		t.Fatalf("put %q: %v", name, err)
	}
	info, err := f.Store.Stat(context.Background(), name)
	if err != nil {
		t.Fatalf("stat %q after put: %v", name, err)
	}
	return info
}

func testStatMissing(t *testing.T, f Fixture) {
	_, err := f.Store.Stat(context.Background(), "no/such/object")
	if !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Stat(missing) = %v, want ErrNotFound", err)
	}
}

func testStatAfterPut(t *testing.T, f Fixture) {
	data := Data(1, 1234)
	info := put(t, f, "dir/a.bin", data)
	if info.Name != "dir/a.bin" || info.Size != int64(len(data)) || info.ETag == "" || info.IsPrefix {
		t.Fatalf("Stat = %+v, want name dir/a.bin, size %d, an ETag, not a prefix", info, len(data))
	}
	again, err := f.Store.Stat(context.Background(), "dir/a.bin")
	if err != nil || again.ETag != info.ETag {
		t.Fatalf("second Stat = %+v, %v; want the same ETag %q", again, err, info.ETag)
	}
	if _, err := f.Store.Stat(context.Background(), "dir"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Stat(directory-like prefix) = %v, want ErrNotFound", err)
	}
}

func testReadAtRanges(t *testing.T, f Fixture) {
	const size = 3<<20 + 12345
	data := Data(2, size)
	info := put(t, f, "big.bin", data)
	ctx := context.Background()
	r := rand.New(rand.NewPCG(7, 7))
	cases := [][2]int64{{0, 1}, {0, size}, {size - 1, 1}, {1 << 20, 1 << 20}, {12345, 0}}
	for i := 0; i < 40; i++ {
		off := r.Int64N(size)
		n := r.Int64N(1<<20) + 1
		cases = append(cases, [2]int64{off, n})
	}
	for _, c := range cases {
		off, n := c[0], c[1]
		p := make([]byte, n)
		got, err := f.Store.ReadAt(ctx, info.Ref(), p, off)
		want := min(n, size-off)
		if int64(got) != want {
			t.Fatalf("ReadAt(off=%d, len=%d) = %d, %v; want %d bytes", off, n, got, err, want)
		}
		if want < n && err != io.EOF {
			t.Fatalf("ReadAt(off=%d, len=%d) short read error = %v, want io.EOF", off, n, err)
		}
		if want == n && err != nil && err != io.EOF {
			t.Fatalf("ReadAt(off=%d, len=%d) error = %v", off, n, err)
		}
		if !bytes.Equal(p[:got], data[off:off+want]) {
			t.Fatalf("ReadAt(off=%d, len=%d) returned wrong bytes", off, n)
		}
	}
}

func testReadAtPastEnd(t *testing.T, f Fixture) {
	info := put(t, f, "small", []byte("hello"))
	ctx := context.Background()
	p := make([]byte, 10)
	if n, err := f.Store.ReadAt(ctx, info.Ref(), p, 5); n != 0 || err != io.EOF {
		t.Fatalf("ReadAt(off=size) = %d, %v; want 0, io.EOF", n, err)
	}
	if n, err := f.Store.ReadAt(ctx, info.Ref(), p, 6); n != 0 || !errors.Is(err, blob.ErrOutOfRange) {
		t.Fatalf("ReadAt(off>size) = %d, %v; want 0, ErrOutOfRange", n, err)
	}
	if n, err := f.Store.ReadAt(ctx, info.Ref(), p, 3); n != 2 || err != io.EOF || string(p[:2]) != "lo" {
		t.Fatalf("ReadAt(off=3,len=10) = %d, %v, %q; want 2, io.EOF, \"lo\"", n, err, p[:n])
	}
	if n, err := f.Store.ReadAt(ctx, info.Ref(), p[:0], 2); n != 0 || (err != nil && err != io.EOF) {
		t.Fatalf("ReadAt(len=0) = %d, %v; want 0, nil", n, err)
	}
}

func testReadAtEmptyObject(t *testing.T, f Fixture) {
	info := put(t, f, "empty", nil)
	if info.Size != 0 {
		t.Fatalf("empty object size %d", info.Size)
	}
	p := make([]byte, 4)
	if n, err := f.Store.ReadAt(context.Background(), info.Ref(), p, 0); n != 0 || err != io.EOF {
		t.Fatalf("ReadAt(empty) = %d, %v; want 0, io.EOF", n, err)
	}
}

func testReadAtMissing(t *testing.T, f Fixture) {
	p := make([]byte, 4)
	_, err := f.Store.ReadAt(context.Background(), blob.Ref{Name: "missing", ETag: "\"x\""}, p, 0)
	if !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("ReadAt(missing) = %v, want ErrNotFound", err)
	}
}

func testReplacedIsChanged(t *testing.T, f Fixture) {
	old := put(t, f, "obj", Data(3, 4096))
	newer := put(t, f, "obj", Data(4, 4096)) // same size, new content
	if newer.ETag == old.ETag {
		t.Fatalf("replaced object kept its ETag %q", old.ETag)
	}
	p := make([]byte, 100)
	n, err := f.Store.ReadAt(context.Background(), old.Ref(), p, 0)
	if !errors.Is(err, blob.ErrChanged) || n != 0 {
		t.Fatalf("ReadAt(stale ref) = %d, %v; want 0, ErrChanged", n, err)
	}
	if _, err := f.Store.ReadAt(context.Background(), newer.Ref(), p, 0); err != nil {
		t.Fatalf("ReadAt(current ref) = %v", err)
	}
	if !bytes.Equal(p, Data(4, 4096)[:100]) {
		t.Fatalf("ReadAt(current ref) returned old bytes")
	}
}

func testDeletedIsNotFound(t *testing.T, f Fixture) {
	info := put(t, f, "gone", []byte("soon gone"))
	if err := f.Delete("gone"); err != nil {
		t.Fatal(err)
	}
	_, err := f.Store.ReadAt(context.Background(), info.Ref(), make([]byte, 4), 0)
	if !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("ReadAt(deleted) = %v, want ErrNotFound", err)
	}
	if _, err := f.Store.Stat(context.Background(), "gone"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Stat(deleted) = %v, want ErrNotFound", err)
	}
}

var listNames = []string{"a.txt", "a/b", "a/c/d", "a/c/e", "ab", "b/x", "b/y/z", "c"}

func collect(t *testing.T, s blob.Store, opts blob.ListOptions) []blob.Info {
	t.Helper()
	var out []blob.Info
	if err := s.List(context.Background(), opts, func(i blob.Info) error {
		out = append(out, i)
		return nil
	}); err != nil {
		t.Fatalf("List(%+v): %v", opts, err)
	}
	return out
}

func names(infos []blob.Info) string {
	var s []string
	for _, i := range infos {
		s = append(s, i.Name)
	}
	return strings.Join(s, " ")
}

func testListFlat(t *testing.T, f Fixture) {
	sizes := map[string]int64{}
	for i, n := range listNames {
		info := put(t, f, n, Data(uint64(i), i*10))
		sizes[n] = info.Size
	}
	all := collect(t, f.Store, blob.ListOptions{})
	if got, want := names(all), strings.Join(listNames, " "); got != want {
		t.Fatalf("List() = %q, want %q", got, want)
	}
	if !sort.SliceIsSorted(all, func(i, j int) bool { return all[i].Name < all[j].Name }) {
		t.Fatalf("List() not sorted")
	}
	for _, i := range all {
		if i.Size != sizes[i.Name] || i.ETag == "" || i.IsPrefix {
			t.Fatalf("List() entry %+v: want size %d, an ETag, not a prefix", i, sizes[i.Name])
		}
		// A Ref from a listing pins the same version as one from Stat.
		st, err := f.Store.Stat(context.Background(), i.Name)
		if err != nil || st.ETag != i.ETag {
			t.Fatalf("Stat(%q) = %+v, %v; List gave ETag %q", i.Name, st, err, i.ETag)
		}
		if _, err := f.Store.ReadAt(context.Background(), i.Ref(), make([]byte, 1), 0); err != nil && err != io.EOF {
			t.Fatalf("ReadAt with the Ref from List(%q): %v", i.Name, err)
		}
	}
	for prefix, want := range map[string]string{
		"a":    "a.txt a/b a/c/d a/c/e ab",
		"a/":   "a/b a/c/d a/c/e",
		"a/c/": "a/c/d a/c/e",
		"b/y":  "b/y/z",
		"zz":   "",
	} {
		if got := names(collect(t, f.Store, blob.ListOptions{Prefix: prefix})); got != want {
			t.Errorf("List(prefix %q) = %q, want %q", prefix, got, want)
		}
	}
}

func testListHierarchical(t *testing.T, f Fixture) {
	for i, n := range listNames {
		put(t, f, n, Data(uint64(i), 3))
	}
	for prefix, want := range map[string]string{
		"":     "a.txt a/ ab b/ c",
		"a/":   "a/b a/c/",
		"a/c/": "a/c/d a/c/e",
		"b/":   "b/x b/y/",
	} {
		got := collect(t, f.Store, blob.ListOptions{Prefix: prefix, Delimiter: "/"})
		if names(got) != want {
			t.Errorf("List(prefix %q, delimiter /) = %q, want %q", prefix, names(got), want)
		}
		for _, i := range got {
			if i.IsPrefix != strings.HasSuffix(i.Name, "/") {
				t.Errorf("List(prefix %q): %+v has IsPrefix=%v", prefix, i, i.IsPrefix)
			}
		}
	}
}

func testListStopsOnError(t *testing.T, f Fixture) {
	for i, n := range listNames {
		put(t, f, n, Data(uint64(i), 3))
	}
	stop := errors.New("stop here")
	calls := 0
	err := f.Store.List(context.Background(), blob.ListOptions{}, func(blob.Info) error {
		calls++
		if calls == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 2 {
		t.Fatalf("List with failing callback: err %v after %d calls, want %v after 2", err, calls, stop)
	}
}

func testCanceledContext(t *testing.T, f Fixture) {
	info := put(t, f, "c", Data(5, 1000))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.Store.ReadAt(ctx, info.Ref(), make([]byte, 10), 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("ReadAt(canceled ctx) = %v, want context.Canceled", err)
	}
	if _, err := f.Store.Stat(ctx, "c"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Stat(canceled ctx) = %v, want context.Canceled", err)
	}
}

func testConcurrentReads(t *testing.T, f Fixture) {
	const size = 1 << 20
	objs := make([]blob.Info, 4)
	datas := make([][]byte, len(objs))
	for i := range objs {
		datas[i] = Data(uint64(100+i), size)
		objs[i] = put(t, f, fmt.Sprintf("par/%d", i), datas[i])
	}
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for k := 0; k < 20; k++ {
				o := r.IntN(len(objs))
				off := r.Int64N(size)
				p := make([]byte, r.IntN(64<<10)+1)
				n, err := f.Store.ReadAt(context.Background(), objs[o].Ref(), p, off)
				if err != nil && err != io.EOF {
					errs <- err
					return
				}
				if !bytes.Equal(p[:n], datas[o][off:off+int64(n)]) {
					errs <- fmt.Errorf("object %d off %d: wrong bytes", o, off)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// testOpenRange checks blob.OpenRange: the store's own RangeOpener when it
// has one, else the ReadAt fallback. Ranges are read in odd-sized pieces.
func testOpenRange(t *testing.T, f Fixture) {
	const size = 1<<20 + 777
	data := Data(5, size)
	info := put(t, f, "ranged", data)
	ctx := context.Background()
	for _, c := range [][2]int64{{0, size}, {0, 1}, {size - 1, 1}, {4096, 65536 + 16}, {size - 100, 1000}, {size, 10}, {12345, 0}} {
		off, n := c[0], c[1]
		r, err := blob.OpenRange(ctx, f.Store, info.Ref(), off, n)
		if err != nil {
			t.Fatalf("OpenRange(off=%d, n=%d): %v", off, n, err)
		}
		var got []byte
		buf := make([]byte, 7777)
		for {
			k, err := r.Read(buf)
			got = append(got, buf[:k]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("OpenRange(off=%d, n=%d): read: %v", off, n, err)
			}
		}
		r.Close()
		if want := data[off:min(size, off+n)]; !bytes.Equal(got, want) {
			t.Fatalf("OpenRange(off=%d, n=%d): %d bytes, want %d (equal %v)", off, n, len(got), len(want), bytes.Equal(got, want))
		}
	}
	if _, err := blob.OpenRange(ctx, f.Store, info.Ref(), size+1, 10); !errors.Is(err, blob.ErrOutOfRange) {
		t.Fatalf("OpenRange(off>size) = %v, want ErrOutOfRange", err)
	}
	put(t, f, "ranged", Data(6, size))
	if r, err := blob.OpenRange(ctx, f.Store, info.Ref(), 0, 100); !errors.Is(err, blob.ErrChanged) {
		if err == nil {
			_, err = io.ReadAll(r)
			r.Close()
		}
		if !errors.Is(err, blob.ErrChanged) {
			t.Fatalf("OpenRange(stale ref) = %v, want ErrChanged", err)
		}
	}
	if _, err := blob.OpenRange(ctx, f.Store, blob.Ref{Name: "missing", ETag: "\"x\""}, 0, 4); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("OpenRange(missing) = %v, want ErrNotFound", err)
	}
}

// testReadHead checks blob.ReadHead, through the store's own HeadReader
// when it has one: the current version and its first bytes, short only
// when the object is, and a version that ReadAt accepts.
func testReadHead(t *testing.T, f Fixture) {
	ctx := context.Background()
	for _, size := range []int{0, 1, 100, 8192, 8193, 70000} {
		name := fmt.Sprintf("head/%d", size)
		data := Data(uint64(size)+7, size)
		want := put(t, f, name, data)
		for _, n := range []int{0, 16, 8192} {
			p := make([]byte, n)
			info, k, err := blob.ReadHead(ctx, f.Store, name, p)
			if err != nil {
				t.Fatalf("ReadHead(%d-byte object, %d bytes): %v", size, n, err)
			}
			if info.Name != name || info.Size != int64(size) || info.ETag != want.ETag || info.IsPrefix {
				t.Fatalf("ReadHead(%d-byte object) info = %+v, want name %s, size %d, ETag %s", size, info, name, size, want.ETag)
			}
			if k != min(n, size) || !bytes.Equal(p[:k], data[:k]) {
				t.Fatalf("ReadHead(%d-byte object, %d bytes) read %d bytes (equal %v), want %d", size, n, k, bytes.Equal(p[:k], data[:k]), min(n, size))
			}
			if _, err := f.Store.ReadAt(ctx, info.Ref(), make([]byte, min(4, size)), 0); err != nil {
				t.Fatalf("ReadAt with ReadHead's version: %v", err)
			}
		}
	}
	// A replaced object: the new version and its bytes.
	put(t, f, "head/r", Data(1, 5000))
	newer := Data(2, 6000)
	want := put(t, f, "head/r", newer)
	p := make([]byte, 8192)
	info, k, err := blob.ReadHead(ctx, f.Store, "head/r", p)
	if err != nil || info.ETag != want.ETag || !bytes.Equal(p[:k], newer) {
		t.Fatalf("ReadHead(replaced) = %+v, %d bytes (equal %v), %v; want ETag %s and the new bytes", info, k, bytes.Equal(p[:k], newer), err, want.ETag)
	}
	if _, _, err := blob.ReadHead(ctx, f.Store, "head/missing", p); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("ReadHead(missing) = %v, want ErrNotFound", err)
	}
	if _, _, err := blob.ReadHead(ctx, f.Store, "../escape", p); !errors.Is(err, blob.ErrInvalidName) {
		t.Fatalf("ReadHead(../escape) = %v, want ErrInvalidName", err)
	}
}
