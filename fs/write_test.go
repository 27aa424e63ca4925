package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
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
	if f, err := os.OpenFile(w.path("data/hello.txt"), os.O_WRONLY, 0); errnoOf(err) != syscall.EROFS {
		if err == nil {
			f.Close()
		}
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
				if err == nil {
					f.Close()
				}
				t.Fatalf("open: %v, want errno %v", err, tc.errno)
			}
			if err == nil {
				defer f.Close()
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
	defer f.Close() // a no-op after the close below; a failure must not leave it open at unmount
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
	defer f.Close()
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

// TestWriteConcurrentWritersOneWins: two mounts write one name; exactly
// one commit wins, the other's close or fsync gets EIO, and storage holds
// the winner's bytes.
func TestWriteConcurrentWritersOneWins(t *testing.T) {
	w := newWorld(t, writable)
	other := w.mountAgain()
	for _, tc := range []struct {
		name, file string
		flags      int
		loserSyncs bool
	}{
		{"both create", "race-new.txt", os.O_WRONLY | os.O_CREATE, false},
		{"both rewrite", "hello.txt", os.O_RDWR, false},
		{"loser fsyncs", "dir/sub/nested.txt", os.O_RDWR, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := os.OpenFile(w.path("data/"+tc.file), tc.flags, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close() // a failing test must not leave files open on the mount it unmounts
			b, err := os.OpenFile(filepath.Join(other, "data", tc.file), tc.flags, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if _, err := a.WriteAt([]byte("winner A"), 0); err != nil {
				t.Fatal(err)
			}
			if _, err := b.WriteAt([]byte("loser B!"), 0); err != nil {
				t.Fatal(err)
			}
			if err := a.Close(); err != nil {
				t.Fatalf("first close: %v", err)
			}
			if tc.loserSyncs {
				if err := b.Sync(); errnoOf(err) != syscall.EIO {
					t.Fatalf("losing fsync: %v, want EIO", err)
				}
			}
			if err := b.Close(); errnoOf(err) != syscall.EIO {
				t.Fatalf("losing close: %v, want EIO", err)
			}
			pt, err := w.stored(tc.file)
			if err != nil || !bytes.HasPrefix(pt, []byte("winner A")) {
				t.Fatalf("stored %q (%v), want the winner's", pt, err)
			}
			// The loser's dropped state is not what new opens there see.
			if got, err := os.ReadFile(filepath.Join(other, "data", tc.file)); err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("the losing mount reads %q (%v) after the conflict, want the winner's %q", got, err, pt)
			}
		})
	}
	if st := w.root.Stats(); st.CommitConflicts != 0 || st.Commits < 3 {
		t.Fatalf("the winning mount's stats: %+v", st)
	}
}

// TestWriteReaderKeepsOldVersion: a reader of the old version in another
// mount gets old bytes or ESTALE once the object is replaced, never the
// new bytes.
func TestWriteReaderKeepsOldVersion(t *testing.T) {
	w := newWorld(t, writable)
	other := w.mountAgain()
	old := w.plain["big.bin"]
	r, err := os.Open(filepath.Join(other, "data", "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	buf := make([]byte, 64<<10)
	if _, err := r.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, old[:len(buf)]) {
		t.Fatal(err)
	}
	repl := bytes.Repeat([]byte{0xAB}, len(old))
	if err := os.WriteFile(w.path("data/big.bin"), repl, 0o644); err != nil {
		t.Fatal(err)
	}
	stale := 0
	for off := 0; off < len(old); off += len(buf) {
		k, err := r.ReadAt(buf, int64(off))
		if errnoOf(err) == syscall.ESTALE {
			stale++
			continue
		}
		if err != nil && err != io.EOF {
			t.Fatalf("read at %d: %v", off, err)
		}
		if !bytes.Equal(buf[:k], old[off:off+k]) {
			t.Fatalf("read at %d: bytes that are not the old version's", off)
		}
	}
	if stale == 0 {
		t.Fatal("every read was served after the replacement: the test did not exercise the replaced version")
	}
	got, err := os.ReadFile(filepath.Join(other, "data", "big.bin"))
	if err != nil || !bytes.Equal(got, repl) {
		t.Fatalf("a new open in the other mount: %v", err)
	}
}

func TestWriteNamespace(t *testing.T) {
	other := memblob.New()
	w := newWorld(t, writable, func(w *world) {
		prev := w.tune
		w.tune = func(o *Options) {
			prev(o)
			o.Datasets = append(o.Datasets, DatasetSpec{Name: "other", Store: other, Keys: []keyrelease.KeyRef{refOct}, Write: &WriteSpec{Key: refOct}})
		}
	})
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(w.path("data/a.txt"), []byte("A"), 0o644))
	must(os.WriteFile(w.path("data/b.txt"), []byte("B"), 0o644))
	for _, tc := range []struct {
		name  string
		op    func() error
		errno syscall.Errno
		check func() error
	}{
		{"unlink", func() error { return os.Remove(w.path("data/hello.txt")) }, 0, func() error {
			if _, err := w.store.Stat(ctx, "hello.txt"); err == nil {
				return errors.New("still in storage")
			}
			if _, err := os.Stat(w.path("data/hello.txt")); !os.IsNotExist(err) {
				return fmt.Errorf("stat after unlink: %v", err)
			}
			return nil
		}},
		{"unlink missing", func() error { return os.Remove(w.path("data/nope.txt")) }, syscall.ENOENT, nil},
		{"rename", func() error { return os.Rename(w.path("data/a.txt"), w.path("data/dir/renamed.txt")) }, 0, func() error {
			if _, err := w.store.Stat(ctx, "a.txt"); err == nil {
				return errors.New("old name still in storage")
			}
			if pt, err := w.stored("dir/renamed.txt"); err != nil || string(pt) != "A" {
				return fmt.Errorf("new name: %q %v", pt, err)
			}
			if got, err := os.ReadFile(w.path("data/dir/renamed.txt")); err != nil || string(got) != "A" {
				return fmt.Errorf("read new name: %q %v", got, err)
			}
			if _, err := os.Stat(w.path("data/a.txt")); !os.IsNotExist(err) {
				return fmt.Errorf("old name: %v", err)
			}
			return nil
		}},
		{"rename over existing", func() error { return os.Rename(w.path("data/b.txt"), w.path("data/empty")) }, 0, func() error {
			if pt, err := w.stored("empty"); err != nil || string(pt) != "B" {
				return fmt.Errorf("replaced target: %q %v", pt, err)
			}
			return nil
		}},
		{"rename noreplace", func() error {
			return unix.Renameat2(unix.AT_FDCWD, w.path("data/empty"), unix.AT_FDCWD, w.path("data/big.bin"), unix.RENAME_NOREPLACE)
		}, syscall.EEXIST, nil},
		{"rename exchange", func() error {
			return unix.Renameat2(unix.AT_FDCWD, w.path("data/empty"), unix.AT_FDCWD, w.path("data/big.bin"), unix.RENAME_EXCHANGE)
		}, syscall.EINVAL, nil},
		{"rename across datasets", func() error { return os.Rename(w.path("data/empty"), w.path("other/x")) }, syscall.EXDEV, nil},
		{"mkdir", func() error { return os.Mkdir(w.path("data/newdir"), 0o755) }, 0, func() error {
			if st, err := os.Stat(w.path("data/newdir")); err != nil || !st.IsDir() {
				return fmt.Errorf("stat: %v", err)
			}
			ents, _ := os.ReadDir(w.path("data"))
			for _, e := range ents {
				if e.Name() == "newdir" && e.IsDir() {
					return nil
				}
			}
			return errors.New("not listed")
		}},
		{"mkdir existing", func() error { return os.Mkdir(w.path("data/dir"), 0o755) }, syscall.EEXIST, nil},
		{"create control character", func() error { return os.WriteFile(w.path("data/bad\x01name"), nil, 0o644) }, syscall.EINVAL, nil},
		{"create bidi override", func() error { return os.WriteFile(w.path("data/evil\u202etxt.exe"), nil, 0o644) }, syscall.EINVAL, nil},
		{"rename to control character", func() error { return os.Rename(w.path("data/big.bin"), w.path("data/x\x7f")) }, syscall.EINVAL, nil},
		{"mkdir control character", func() error { return os.Mkdir(w.path("data/d\x1b"), 0o755) }, syscall.EINVAL, nil},
		{"file in new dir", func() error { return os.WriteFile(w.path("data/newdir/f"), []byte("f"), 0o644) }, 0, func() error {
			_, err := w.stored("newdir/f")
			return err
		}},
		{"rmdir not empty", func() error { return os.Remove(w.path("data/newdir")) }, syscall.ENOTEMPTY, nil},
		{"rmdir after unlink", func() error {
			if err := os.Remove(w.path("data/newdir/f")); err != nil {
				return err
			}
			return os.Remove(w.path("data/newdir"))
		}, 0, func() error {
			if _, err := os.Stat(w.path("data/newdir")); !os.IsNotExist(err) {
				return fmt.Errorf("stat after rmdir: %v", err)
			}
			return nil
		}},
		{"mkdir rmdir empty", func() error {
			if err := os.Mkdir(w.path("data/d2"), 0o700); err != nil {
				return err
			}
			return os.Remove(w.path("data/d2"))
		}, 0, nil},
		{"chmod ignored", func() error { return os.Chmod(w.path("data/big.bin"), 0o777) }, 0, func() error {
			if st, _ := os.Stat(w.path("data/big.bin")); st.Mode().Perm() != 0o600 {
				return fmt.Errorf("mode %v, want the configured 0600", st.Mode())
			}
			return nil
		}},
		{"chown ignored", func() error { return os.Chown(w.path("data/big.bin"), 123, 456) }, 0, func() error {
			st, _ := os.Stat(w.path("data/big.bin"))
			if s := st.Sys().(*syscall.Stat_t); s.Uid != 0 || s.Gid != 0 {
				return fmt.Errorf("owner %d:%d", s.Uid, s.Gid)
			}
			return nil
		}},
		{"utimens ignored", func() error { return os.Chtimes(w.path("data/big.bin"), time.Unix(5, 0), time.Unix(5, 0)) }, 0, nil},
		{"chmod dir ignored", func() error { return os.Chmod(w.path("data/dir"), 0o755) }, 0, nil},
		{"symlink", func() error { return os.Symlink("big.bin", w.path("data/link")) }, syscall.EPERM, nil},
		{"hard link", func() error { return os.Link(w.path("data/big.bin"), w.path("data/link")) }, syscall.EPERM, nil},
		{"mknod", func() error { return unix.Mkfifo(w.path("data/fifo"), 0o600) }, syscall.EPERM, nil},
		{"statfs", func() error {
			var st unix.Statfs_t
			if err := unix.Statfs(w.path("data"), &st); err != nil {
				return err
			}
			if st.Bavail < 1<<20 {
				return fmt.Errorf("statfs: %d blocks available", st.Bavail)
			}
			return nil
		}, 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.op()
			if errnoOf(err) != tc.errno || (tc.errno == 0 && err != nil) {
				t.Fatalf("%v, want errno %v", err, tc.errno)
			}
			if tc.check != nil {
				if err := tc.check(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestWriteManifestRequiredEROFS: a dataset whose manifest is enforced
// refuses writes, even when configured writable.
func TestWriteManifestRequiredEROFS(t *testing.T) {
	mw := newManifestWorld(t, true, nil, func(o *Options) { o.Datasets[0].Write = &WriteSpec{Key: refOct} })
	w := mw.world
	for _, tc := range []struct {
		name string
		op   func() error
	}{
		{"create", func() error { return os.WriteFile(w.path("data/new.txt"), []byte("x"), 0o644) }},
		{"open for write", func() error {
			f, err := os.OpenFile(w.path("data/hello.txt"), os.O_WRONLY, 0)
			if err == nil {
				f.Close()
			}
			return err
		}},
		{"unlink", func() error { return os.Remove(w.path("data/hello.txt")) }},
		{"mkdir", func() error { return os.Mkdir(w.path("data/d"), 0o755) }},
		{"truncate", func() error { return os.Truncate(w.path("data/hello.txt"), 0) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.op(); errnoOf(err) != syscall.EROFS {
				t.Fatalf("%v, want EROFS", err)
			}
		})
	}
	if got, err := os.ReadFile(w.path("data/hello.txt")); err != nil || !bytes.Equal(got, w.plain["hello.txt"]) {
		t.Fatalf("reads still work: %v", err)
	}
}

// writeClose opens p with flags, writes data and closes: the first error.
func writeClose(p string, flags int, data []byte) error {
	f, err := os.OpenFile(p, flags, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// TestWriteOnlyMount: with an RSA write key whose release is denied, new
// files are sealed with the public key alone (no release at all); what
// needs old plaintext gets EACCES, rename EXDEV.
func TestWriteOnlyMount(t *testing.T) {
	w := newWorld(t, func(w *world) {
		w.rel.deny["demo-rsa"] = true
		w.tune = func(o *Options) {
			o.Datasets[0].Write = &WriteSpec{Key: refRSA, PublicKey: func(context.Context) (any, string, error) {
				return &w.rk.PublicKey, "", nil
			}}
		}
	})
	data := pseudo(21, 700<<10)
	f, err := os.Create(w.path("data/produced.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1000)
	if _, err := f.ReadAt(buf, 5000); err != nil || !bytes.Equal(buf, data[5000:6000]) {
		t.Fatalf("read-your-writes while open: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(w.path("data/hello.txt"), []byte("replaced"), 0o644); err != nil {
		t.Fatalf("O_TRUNC of an existing object: %v", err)
	}
	if n := w.rel.calls.Load(); n != 0 {
		t.Fatalf("writing released %d keys, want 0", n)
	}
	if pt, err := w.stored("produced.bin"); err != nil || !bytes.Equal(pt, data) {
		t.Fatalf("stored: %v", err)
	}
	if pt, err := w.stored("hello.txt"); err != nil || string(pt) != "replaced" {
		t.Fatalf("stored: %q %v", pt, err)
	}
	if st, err := os.Stat(w.path("data/produced.bin")); err != nil || st.Size() != int64(len(data)) {
		t.Fatalf("stat: %v", err)
	}
	for _, tc := range []struct {
		name  string
		op    func() error
		errno syscall.Errno
	}{
		{"read what it wrote", func() error { _, err := os.ReadFile(w.path("data/produced.bin")); return err }, syscall.EACCES},
		{"partial overwrite", func() error { return writeClose(w.path("data/produced.bin"), os.O_WRONLY, []byte("0123456789")) }, syscall.EACCES},
		{"O_APPEND", func() error { return writeClose(w.path("data/produced.bin"), os.O_WRONLY|os.O_APPEND, []byte("more")) }, syscall.EACCES},
		{"truncate to non-zero", func() error { return os.Truncate(w.path("data/produced.bin"), 10) }, syscall.EACCES},
		{"rename", func() error { return os.Rename(w.path("data/produced.bin"), w.path("data/moved.bin")) }, syscall.EXDEV},
		{"failed writes left the object intact", func() error {
			if pt, err := w.stored("produced.bin"); err != nil || !bytes.Equal(pt, data) {
				return fmt.Errorf("stored object changed: %v", err)
			}
			return nil
		}, 0},
		{"unlink", func() error { return os.Remove(w.path("data/produced.bin")) }, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.op(); errnoOf(err) != tc.errno || (tc.errno == 0 && err != nil) {
				t.Fatalf("%v, want errno %v", err, tc.errno)
			}
		})
	}
}

// TestWriteRenameHeaderOnly: renaming a version 2 object writes a new
// header before the same body bytes (docs/format.md 11.4); a version 1
// object is re-sealed.
func TestWriteRenameHeaderOnly(t *testing.T) {
	w := newWorld(t, writable)
	ctx := context.Background()
	raw := func(name string) []byte {
		info, err := w.store.Stat(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, info.Size)
		w.store.ReadAt(ctx, info.Ref(), b, 0)
		return b
	}
	data := pseudo(41, 200<<10+3)
	if err := os.WriteFile(w.path("data/v2.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	before := raw("v2.bin")
	h, _ := crypto.ParseHeader(before)
	if err := os.Rename(w.path("data/v2.bin"), w.path("data/dir/v2-renamed.bin")); err != nil {
		t.Fatal(err)
	}
	after := raw("dir/v2-renamed.bin")
	nh, err := crypto.ParseHeader(after)
	if err != nil || nh.ObjectID != h.ObjectID || !bytes.Equal(after[nh.Len():], before[h.Len():]) {
		t.Fatalf("not a header-only rename: %v, same object ID %v", err, nh != nil && nh.ObjectID == h.ObjectID)
	}
	if pt, err := w.stored("dir/v2-renamed.bin"); err != nil || !bytes.Equal(pt, data) {
		t.Fatalf("renamed object: %v", err)
	}
	if got, err := os.ReadFile(w.path("data/dir/v2-renamed.bin")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read through the mount: %v", err)
	}
	// A version 1 object is re-sealed as version 2.
	if err := os.Rename(w.path("data/dir/sub/nested.txt"), w.path("data/nested-v2.txt")); err != nil {
		t.Fatal(err)
	}
	if v1h, err := crypto.ParseHeader(raw("nested-v2.txt")); err != nil || v1h.Version != crypto.VersionV2 {
		t.Fatalf("renamed version 1 object: %v", err)
	}
	if pt, err := w.stored("nested-v2.txt"); err != nil || !bytes.Equal(pt, w.plain["dir/sub/nested.txt"]) {
		t.Fatalf("renamed version 1 object: %v", err)
	}
}

// TestWriteHandleSemantics: what other handles, listings and a second
// mount see of staged and committed content.
func TestWriteHandleSemantics(t *testing.T) {
	w := newWorld(t, writable)
	ctx := context.Background()
	inStore := func(name string) bool {
		_, err := w.store.Stat(ctx, name)
		return err == nil
	}
	for _, tc := range []struct {
		name string
		run  func(t *testing.T)
	}{
		{"uncommitted file is listed and sized", func(t *testing.T) {
			f, err := os.Create(w.path("data/dir/pending.txt"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			f.Write([]byte("12345"))
			ents, _ := os.ReadDir(w.path("data/dir"))
			found := false
			for _, e := range ents {
				found = found || e.Name() == "pending.txt"
			}
			st, err := os.Stat(w.path("data/dir/pending.txt"))
			if !found || err != nil || st.Size() != 5 || inStore("dir/pending.txt") {
				t.Fatalf("listed %v, stat %v size %d, in store %v", found, err, st.Size(), inStore("dir/pending.txt"))
			}
		}},
		{"close of one of two writers does not commit", func(t *testing.T) {
			a, _ := os.Create(w.path("data/two.txt"))
			defer a.Close()
			b, err := os.OpenFile(w.path("data/two.txt"), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			a.WriteAt([]byte("aaaa"), 0)
			b.WriteAt([]byte("bb"), 4)
			// A reader through a third handle sees both writes.
			if got, err := os.ReadFile(w.path("data/two.txt")); err != nil || string(got) != "aaaabb" {
				t.Fatalf("third handle reads %q, %v", got, err)
			}
			if err := a.Close(); err != nil || inStore("two.txt") {
				t.Fatalf("first close: %v, committed %v", err, inStore("two.txt"))
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			if pt, err := w.stored("two.txt"); err != nil || string(pt) != "aaaabb" {
				t.Fatalf("after the last close: %q %v", pt, err)
			}
		}},
		{"unlinked while open is never committed", func(t *testing.T) {
			f, _ := os.Create(w.path("data/doomed.txt"))
			defer f.Close()
			f.Write([]byte("x"))
			if err := os.Remove(w.path("data/doomed.txt")); err != nil {
				t.Fatal(err)
			}
			if _, err := f.Write([]byte("more")); err != nil {
				t.Fatalf("write after unlink: %v", err)
			}
			if err := f.Close(); err != nil || inStore("doomed.txt") {
				t.Fatalf("close: %v, in store %v", err, inStore("doomed.txt"))
			}
		}},
		{"empty directory vanishes at remount", func(t *testing.T) {
			if err := os.Mkdir(w.path("data/ephemeral"), 0o755); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(w.mountAgain(), "data/ephemeral")); !os.IsNotExist(err) {
				t.Fatalf("a remount sees the empty directory: %v", err)
			}
			if err := os.WriteFile(w.path("data/ephemeral/f"), []byte("f"), 0o644); err != nil {
				t.Fatal(err)
			}
			if st, err := os.Stat(filepath.Join(w.mountAgain(), "data/ephemeral/f")); err != nil || st.Size() != 1 {
				t.Fatalf("once it holds an object: %v", err)
			}
		}},
		{"write to a read-only handle", func(t *testing.T) {
			f, err := os.Open(w.path("data/empty"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.Write([]byte("x")); err == nil {
				t.Fatal("write through a read-only descriptor")
			}
		}},
	} {
		t.Run(tc.name, tc.run)
	}
}

// spillFD returns a read-write descriptor of the one spill file open in
// dir (through /proc, as anyone with access to the disk could write it).
func spillFD(t *testing.T, dir string) *os.File {
	t.Helper()
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(target, dir+"/") {
			f, err := os.OpenFile("/proc/self/fd/"+e.Name(), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatal("no spill file open")
	return nil
}

// TestWriteSpillTamper: whoever can write to the spill directory's disk
// cannot change staged data: a flipped byte, or an older sealing of the
// same chunk put back in its slot, fails authentication (EIO), and nothing
// is committed.
func TestWriteSpillTamper(t *testing.T) {
	spill := t.TempDir()
	w := newWorld(t, writable, func(w *world) {
		prev := w.tune
		w.tune = func(o *Options) {
			prev(o)
			o.StagingBytes, o.SpillDir = 1<<20, spill
		}
	})
	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, f *os.File, old []byte)
	}{
		{"flipped byte", func(t *testing.T, f *os.File, old []byte) {
			b := make([]byte, 1)
			f.ReadAt(b, 100)
			b[0] ^= 1
			f.WriteAt(b, 100)
		}},
		{"older sealing replayed", func(t *testing.T, f *os.File, old []byte) {
			if _, err := f.WriteAt(old[:spillSlot], 0); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "tamper-" + strings.ReplaceAll(tc.name, " ", "-")
			f, err := os.Create(w.path("data/" + name))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.Write(pseudo(1, 4<<20)); err != nil { // chunk 0 is spilled to slot 0
				t.Fatal(err)
			}
			sf := spillFD(t, spill)
			defer sf.Close()
			old := make([]byte, spillSlot)
			if _, err := sf.ReadAt(old, 0); err != nil {
				t.Fatal(err)
			}
			// Rewrite chunk 0, then push it out to its slot again.
			if _, err := f.WriteAt(pseudo(2, 4096), 0); err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(pseudo(3, 2<<20), 4<<20); err != nil {
				t.Fatal(err)
			}
			now := make([]byte, spillSlot)
			sf.ReadAt(now, 0)
			if bytes.Equal(now, old) {
				t.Fatal("chunk 0 was not sealed again into its slot")
			}
			tc.tamper(t, sf, old)
			// A new descriptor: the kernel's page cache is dropped at its open.
			r, err := os.Open(w.path("data/" + name))
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4096)
			_, err = r.ReadAt(buf, 0)
			r.Close()
			if errnoOf(err) != syscall.EIO {
				t.Fatalf("read of the tampered chunk: %v, want EIO", err)
			}
			if err := f.Close(); errnoOf(err) != syscall.EIO {
				t.Fatalf("close: %v, want EIO", err)
			}
			if _, err := w.store.Stat(context.Background(), name); err == nil {
				t.Fatal("committed despite tampered staging")
			}
		})
	}
}

// cleaningStore records CleanTemp calls.
type cleaningStore struct {
	*memblob.Store
	calls chan time.Duration
}

func (c cleaningStore) CleanTemp(ctx context.Context, olderThan time.Duration) (int, error) {
	c.calls <- olderThan
	return 0, nil
}

// TestWriteCleansTempAtMount: a writable dataset's store that can remove
// leftovers of interrupted commits is asked to at mount; a read-only one
// is not.
func TestWriteCleansTempAtMount(t *testing.T) {
	for _, tc := range []struct {
		name     string
		writable bool
	}{{"writable", true}, {"read-only", false}} {
		t.Run(tc.name, func(t *testing.T) {
			calls := make(chan time.Duration, 4)
			newWorld(t, func(w *world) {
				w.tune = func(o *Options) {
					o.Datasets[0].Store = cleaningStore{w.store, calls}
					if tc.writable {
						o.Datasets[0].Write = &WriteSpec{Key: refOct}
					}
				}
			})
			select {
			case d := <-calls:
				if !tc.writable || d != time.Minute {
					t.Fatalf("CleanTemp(%v) on a writable=%v dataset", d, tc.writable)
				}
			case <-time.After(2 * time.Second):
				if tc.writable {
					t.Fatal("CleanTemp not called at mount")
				}
			}
		})
	}
}

// TestWriteAudit: commits, unlinks and renames are audited with the
// caller, the path, the write key and the outcome.
func TestWriteAudit(t *testing.T) {
	audit := &lockedBuf{}
	w := newWorld(t, func(w *world) {
		w.tune = func(o *Options) {
			o.Audit = zerolog.New(audit)
			o.Datasets[0].Write = &WriteSpec{Key: refOct}
		}
	})
	other := w.mountAgain()
	if err := os.WriteFile(w.path("data/audited.txt"), []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(w.path("data/audited.txt"), w.path("data/moved.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(w.path("data/moved.txt")); err != nil {
		t.Fatal(err)
	}
	a, _ := os.Create(w.path("data/race.txt"))
	defer a.Close()
	b, _ := os.Create(filepath.Join(other, "data/race.txt"))
	defer b.Close()
	a.Write([]byte("a"))
	b.Write([]byte("b"))
	a.Close()
	b.Close() // the other mount's events go to the same log (same options)
	type ev struct{ event, path, outcome, errno string }
	var got []ev
	for _, e := range audit.lines() {
		if s, _ := e["event"].(string); strings.HasPrefix(s, "object_") && s != "object_open" {
			if _, ok := e["uid"]; !ok {
				t.Errorf("event without caller: %v", e)
			}
			errno, _ := e["errno"].(string)
			got = append(got, ev{s, e["path"].(string), e["outcome"].(string), errno})
			if s == "object_commit" && e["key"] != refOct.String() {
				t.Errorf("commit event key %v", e["key"])
			}
		}
	}
	want := []ev{
		{"object_commit", "data/audited.txt", "allowed", ""},
		{"object_rename", "data/audited.txt -> data/moved.txt", "allowed", ""},
		{"object_unlink", "data/moved.txt", "allowed", ""},
		{"object_commit", "data/race.txt", "allowed", ""},
		{"object_commit", "data/race.txt", "denied", "EIO"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("audit events\n got %v\nwant %v", got, want)
	}
}

// TestWriteSpillFailureFailsWrites: when spilling fails, writes past the
// staging bound fail (EIO) instead of growing memory, and the stored
// object is unchanged.
func TestWriteSpillFailureFailsWrites(t *testing.T) {
	spill := t.TempDir()
	w := newWorld(t, writable, func(w *world) {
		prev := w.tune
		w.tune = func(o *Options) {
			prev(o)
			o.StagingBytes, o.SpillDir = 1<<20, spill
		}
	})
	if err := os.Remove(spill); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(w.path("data/nospill.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = f.Write(pseudo(1, 4<<20))
	if errnoOf(err) != syscall.EIO {
		t.Fatalf("write past the bound with no spill directory: %v, want EIO", err)
	}
	if n := w.root.staged.Load(); n > 1<<20+2*stageChunk {
		t.Fatalf("%d bytes staged, bound 1 MiB", n)
	}
	if _, err := NewRoot(w.opts); err == nil {
		t.Fatal("NewRoot accepted a writable dataset without a spill directory")
	}
}

// TestCommitErr: a commit that fails in storage reaches the app as EIO,
// whatever errno the transport carried; a key that cannot be had keeps its
// errno.
func TestCommitErr(t *testing.T) {
	reset := &os.SyscallError{Syscall: "read", Err: syscall.ECONNRESET}
	for _, tc := range []struct {
		name string
		err  error
		want syscall.Errno
	}{
		{"connection reset", fmt.Errorf("put block list: %w", reset), syscall.EIO},
		{"storage unavailable", errors.New("put block: 503 ServerBusy after 4 attempts"), syscall.EIO},
		{"deadline", context.DeadlineExceeded, syscall.EIO},
		{"object vanished", blob.ErrNotFound, syscall.EIO},
		{"storage denies", fmt.Errorf("%w: 403", blob.ErrPermission), syscall.EACCES},
		{"release denied", fmt.Errorf("%w: policy", keyrelease.ErrDenied), syscall.EACCES},
		{"no such key", keyrelease.ErrNotFound, syscall.ENOKEY},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := toErrno(commitErr("a/b", tc.err)); got != tc.want {
				t.Fatalf("errno %v, want %v", got, tc.want)
			}
		})
	}
}

// TestStagingBuffersReturnZeroed: staging buffers go back to the pool
// wiped, though only the bytes a chunk may have held are cleared (random
// writes, a truncation, a spill and a commit in between).
func TestStagingBuffersReturnZeroed(t *testing.T) {
	w := newWorld(t, writable, func(w *world) {
		prev := w.tune
		w.tune = func(o *Options) { prev(o); o.StagingBytes = 2 * stageChunk }
	})
	f, err := os.OpenFile(w.path("data/z.bin"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	rnd := mrand.New(mrand.NewPCG(1, 2))
	for range 64 {
		p := make([]byte, 1+rnd.IntN(9000))
		for i := range p {
			p[i] = byte(1 + rnd.IntN(255))
		}
		if _, err := f.WriteAt(p, rnd.Int64N(6*stageChunk)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(3*stageChunk + 77); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	var held []*[stageChunk]byte
	for range 16 {
		b := stageBuffers.Get().(*[stageChunk]byte)
		held = append(held, b)
		if i := bytes.IndexFunc(b[:], func(r rune) bool { return r != 0 }); i >= 0 {
			t.Fatalf("a pooled staging buffer holds a non-zero byte at %d", i)
		}
	}
	for _, b := range held {
		stageBuffers.Put(b)
	}
}
