package fs

import (
	"bytes"
	"context"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/crypto"
)

// writable makes the world's dataset writable, sealing with key (refOct
// by default).
func writable(w *world) {
	prev := w.tune
	w.tune = func(o *Options) {
		if prev != nil {
			prev(o)
		}
		o.Datasets[0].Write = &WriteSpec{Key: refOct}
	}
}

// stored decrypts the object name from the store with the world's keys,
// as sealed for name.
func (w *world) stored(name string) ([]byte, error) {
	w.t.Helper()
	info, err := w.store.Stat(context.Background(), name)
	if err != nil {
		return nil, err
	}
	obj := make([]byte, info.Size)
	if _, err := w.store.ReadAt(context.Background(), info.Ref(), obj, 0); err != nil && info.Size > 0 {
		return nil, err
	}
	h, err := crypto.ParseHeader(obj)
	if err != nil {
		return nil, err
	}
	var kek any = w.oct.Oct
	if h.Wrap == crypto.WrapRSAOAEP256 {
		kek = w.rk
	}
	return crypto.Open(obj, kek, name)
}

func TestWriteCreateReadBack(t *testing.T) {
	w := newWorld(t, writable)
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"new.txt", []byte("written through skrfs\n")},
		{"empty-new", nil},
		{"dir/sub/new.bin", pseudo(11, 3*stageChunk+17)},
		{"big-new.bin", pseudo(12, 2<<20+5)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(w.path("data/"+tc.name), tc.data, 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(w.path("data/" + tc.name))
			if err != nil || !bytes.Equal(got, tc.data) {
				t.Fatalf("read back: %v, %d bytes, want %d", err, len(got), len(tc.data))
			}
			pt, err := w.stored(tc.name)
			if err != nil || !bytes.Equal(pt, tc.data) {
				t.Fatalf("stored object: %v, %d bytes, want %d", err, len(pt), len(tc.data))
			}
			st, err := os.Stat(w.path("data/" + tc.name))
			if err != nil || st.Size() != int64(len(tc.data)) {
				t.Fatalf("stat: %v size %d", err, st.Size())
			}
			info, _ := w.store.Stat(context.Background(), tc.name)
			if v, _ := blob.MetadataValue(info.Metadata, "skrfs_version"); v != "2" {
				t.Fatalf("metadata %v", info.Metadata)
			}
		})
	}
}

func TestWriteReadOnlyDatasetEROFS(t *testing.T) {
	w := newWorld(t)
	err := os.WriteFile(w.path("data/new.txt"), []byte("x"), 0o644)
	if errnoOf(err) != syscall.EROFS {
		t.Fatalf("create on a read-only dataset: %v, want EROFS", err)
	}
	if _, err := os.OpenFile(w.path("data/hello.txt"), os.O_WRONLY, 0); errnoOf(err) != syscall.EROFS {
		t.Fatalf("open for writing: %v, want EROFS", err)
	}
	_ = filepath.Join
}

// mountAgain mounts a second filesystem over the world's store, with the
// same options, and returns its mountpoint.
func (w *world) mountAgain() string {
	w.t.Helper()
	root, err := NewRoot(w.opts)
	if err != nil {
		w.t.Fatal(err)
	}
	mnt := w.t.TempDir()
	srv, err := Mount(mnt, root, MountOptions{})
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			w.t.Errorf("unmount: %v", err)
		}
		root.Wipe()
	})
	return mnt
}

func TestWriteOpenFlags(t *testing.T) {
	w := newWorld(t, writable)
	hello := w.plain["hello.txt"]
	for _, tc := range []struct {
		name  string
		file  string
		flags int
		write []byte
		errno syscall.Errno
		want  []byte // content after close
	}{
		{"excl on existing", "hello.txt", os.O_WRONLY | os.O_CREATE | os.O_EXCL, nil, syscall.EEXIST, hello},
		{"excl on new", "excl-new.txt", os.O_WRONLY | os.O_CREATE | os.O_EXCL, []byte("fresh"), 0, []byte("fresh")},
		{"trunc existing", "big.bin", os.O_WRONLY | os.O_TRUNC, []byte("short now"), 0, []byte("short now")},
		{"append existing", "hello.txt", os.O_WRONLY | os.O_APPEND, []byte("appended\n"), 0, append(append([]byte{}, hello...), "appended\n"...)},
		{"append again", "hello.txt", os.O_WRONLY | os.O_APPEND, []byte("twice\n"), 0, append(append([]byte{}, hello...), "appended\ntwice\n"...)},
		{"overwrite start of v1 object", "dir/sub/nested.txt", os.O_RDWR, []byte("NEST"), 0, []byte("NESTed file\n")},
		{"create without excl on existing", "empty", os.O_WRONLY | os.O_CREATE, []byte("not empty"), 0, []byte("not empty")},
		{"excl on file created here", "excl-new.txt", os.O_WRONLY | os.O_CREATE | os.O_EXCL, nil, syscall.EEXIST, []byte("fresh")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := os.OpenFile(w.path("data/"+tc.file), tc.flags, 0o644)
			if errnoOf(err) != tc.errno {
				t.Fatalf("open: %v, want errno %v", err, tc.errno)
			}
			if err == nil {
				if _, err := f.Write(tc.write); err != nil {
					t.Fatal(err)
				}
				if err := f.Close(); err != nil {
					t.Fatal(err)
				}
			}
			got, err := os.ReadFile(w.path("data/" + tc.file))
			if err != nil || !bytes.Equal(got, tc.want) {
				t.Fatalf("content %q (%v), want %q", got, err, tc.want)
			}
			if pt, err := w.stored(tc.file); tc.errno == 0 && (err != nil || !bytes.Equal(pt, tc.want)) {
				t.Fatalf("stored %q (%v), want %q", pt, err, tc.want)
			}
		})
	}
}

// TestWriteRandomOffsets mirrors random writes, reads and truncations of an
// existing object into a reference buffer, across an fsync and a reopen.
func TestWriteRandomOffsets(t *testing.T) {
	w := newWorld(t, writable)
	ref := append([]byte{}, w.plain["big.bin"]...)
	f, err := os.OpenFile(w.path("data/big.bin"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	rnd := mrand.New(mrand.NewPCG(1, 2))
	check := func(step int) {
		t.Helper()
		st, err := f.Stat()
		if err != nil || st.Size() != int64(len(ref)) {
			t.Fatalf("step %d: size %d (%v), want %d", step, st.Size(), err, len(ref))
		}
		for range 4 {
			off := rnd.IntN(len(ref) + 1)
			n := rnd.IntN(300 << 10)
			buf := make([]byte, n)
			k, err := f.ReadAt(buf, int64(off))
			want := ref[off:min(len(ref), off+n)]
			if (err != nil && err != io.EOF) || !bytes.Equal(buf[:k], want) {
				t.Fatalf("step %d: read %d at %d: %d bytes, %v; differs from the reference", step, n, off, k, err)
			}
		}
	}
	for step := range 60 {
		switch op := rnd.IntN(10); {
		case op < 7: // write, sometimes past the end (a sparse gap)
			off := rnd.IntN(len(ref) + 600<<10)
			data := pseudo(uint64(1000+step), 1+rnd.IntN(200<<10))
			if _, err := f.WriteAt(data, int64(off)); err != nil {
				t.Fatal(err)
			}
			if end := off + len(data); end > len(ref) {
				ref = append(ref, make([]byte, end-len(ref))...)
			}
			copy(ref[off:], data)
		case op < 9: // truncate up or down
			size := rnd.IntN(len(ref) + 400<<10)
			if err := f.Truncate(int64(size)); err != nil {
				t.Fatal(err)
			}
			if size < len(ref) {
				ref = ref[:size]
			} else {
				ref = append(ref, make([]byte, size-len(ref))...)
			}
		default:
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			if pt, err := w.stored("big.bin"); err != nil || !bytes.Equal(pt, ref) {
				t.Fatalf("step %d: stored after fsync differs (%v)", step, err)
			}
		}
		check(step)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(w.path("data/big.bin"))
	if err != nil || !bytes.Equal(got, ref) {
		t.Fatalf("after reopen: %v, %d bytes, want %d", err, len(got), len(ref))
	}
	if pt, err := w.stored("big.bin"); err != nil || !bytes.Equal(pt, ref) {
		t.Fatalf("stored: %v", err)
	}
	// truncate(2) by path, without an open file.
	if err := os.Truncate(w.path("data/big.bin"), 1000); err != nil {
		t.Fatal(err)
	}
	if pt, err := w.stored("big.bin"); err != nil || !bytes.Equal(pt, ref[:1000]) {
		t.Fatalf("stored after truncate(2): %v", err)
	}
}

// TestWriteFsyncCommits: fsync makes the object visible in storage, sealed
// for its name, while the file stays open.
func TestWriteFsyncCommits(t *testing.T) {
	w := newWorld(t, writable)
	f, err := os.Create(w.path("data/dir/synced.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := w.store.Stat(context.Background(), "dir/synced.log"); err == nil {
		t.Fatal("object committed before any fsync or close")
	}
	var want []byte
	for i := range 3 {
		line := []byte(strings.Repeat("line ", i+1) + "\n")
		want = append(want, line...)
		if _, err := f.Write(line); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		pt, err := w.stored("dir/synced.log")
		if err != nil || !bytes.Equal(pt, want) {
			t.Fatalf("after fsync %d: %q, %v; want %q", i, pt, err, want)
		}
	}
	info, _ := w.store.Stat(context.Background(), "dir/synced.log")
	obj := make([]byte, info.Size)
	w.store.ReadAt(context.Background(), info.Ref(), obj, 0)
	if _, err := crypto.Open(obj, w.oct.Oct, "dir/other.log"); err == nil {
		t.Fatal("the object opens under another name: not bound to its name")
	}
	// The listing shows the committed size.
	if st, err := os.Stat(w.path("data/dir/synced.log")); err != nil || st.Size() != int64(len(want)) {
		t.Fatalf("stat: %v", err)
	}
}

// spillFiles returns the contents of this process's open files in dir
// (the unlinked spill files).
func spillFiles(t *testing.T, dir string) [][]byte {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || !strings.HasPrefix(target, dir+"/") {
			continue
		}
		b, err := os.ReadFile("/proc/self/fd/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// TestWriteSpillsEncrypted: past the staging bound, staged chunks go to an
// unlinked spill file, sealed: no plaintext there, and all of it reads
// back.
func TestWriteSpillsEncrypted(t *testing.T) {
	spill := t.TempDir()
	w := newWorld(t, writable, func(w *world) {
		prev := w.tune
		w.tune = func(o *Options) {
			prev(o)
			o.StagingBytes, o.SpillDir = 1<<20, spill
		}
	})
	data := pseudo(77, 6<<20+99)
	f, err := os.Create(w.path("data/spilled.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if w.root.counters.spilled.Load() == 0 {
		t.Fatal("nothing spilled past the staging bound")
	}
	if n := w.root.staged.Load(); n > 1<<20+stageChunk {
		t.Fatalf("%d bytes staged in memory, bound 1 MiB", n)
	}
	files := spillFiles(t, spill)
	if len(files) == 0 || len(files[0]) < 4<<20 {
		t.Fatalf("no spill file found (%d)", len(files))
	}
	if ents, _ := os.ReadDir(spill); len(ents) != 0 {
		t.Fatalf("spill directory lists %d files; spill files are unlinked", len(ents))
	}
	for _, b := range files {
		for off := 0; off+64 <= len(data); off += 4096 {
			if bytes.Contains(b, data[off:off+64]) {
				t.Fatalf("plaintext at offset %d found in the spill file", off)
			}
		}
	}
	buf := make([]byte, len(data))
	if _, err := f.ReadAt(buf, 0); err != nil && err != io.EOF || !bytes.Equal(buf, data) {
		t.Fatalf("read of spilled content differs (%v)", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if pt, err := w.stored("spilled.bin"); err != nil || !bytes.Equal(pt, data) {
		t.Fatalf("stored: %v", err)
	}
	if n := w.root.staged.Load(); n != 0 {
		t.Fatalf("%d bytes still staged after the last close", n)
	}
	if len(spillFiles(t, spill)) != 0 {
		t.Fatal("spill file still open after the last close")
	}
}
