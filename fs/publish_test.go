package fs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/skrfs/skrfs/blob/memblob"
	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/keyrelease"
)

// storedManifest reads and verifies the dataset's manifest from storage.
func (mw *manifestWorld) storedManifest() *crypto.Manifest {
	mw.t.Helper()
	ctx := context.Background()
	info, err := mw.store.Stat(ctx, crypto.ManifestName)
	if err != nil {
		mw.t.Fatal(err)
	}
	buf := make([]byte, info.Size)
	if _, err := mw.store.ReadAt(ctx, info.Ref(), buf, 0); err != nil {
		mw.t.Fatal(err)
	}
	m, err := crypto.VerifyManifest(buf, mw.spec.Verifier)
	if err != nil {
		mw.t.Fatalf("stored manifest: %v", err)
	}
	return m
}

func entryNames(m *crypto.Manifest) []string {
	var out []string
	for _, e := range m.Entries {
		out = append(out, e.Name)
	}
	return out
}

// newPublishingWorld: a dataset with a required manifest (epoch 5) that
// this mount may write and sign.
func newPublishingWorld(t *testing.T) *manifestWorld {
	s := newSigner(t)
	return newManifestWorldSigned(t, s, true, nil, func(o *Options) {
		o.Datasets[0].Write = &WriteSpec{Key: refOct, Signer: s}
	})
}

// TestWritePublishesManifest: on a dataset whose manifest is enforced, a
// mount holding a pinned signing key publishes a new manifest (epoch + 1)
// with every commit, unlink and rename, before the operation returns; each
// lists exactly what storage holds, and a fresh mount serves it.
func TestWritePublishesManifest(t *testing.T) {
	mw := newPublishingWorld(t)
	w := mw.world
	epoch := uint64(5)
	step := func(what string, op func() error, want []string) {
		t.Helper()
		if err := op(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		epoch++
		m := mw.storedManifest()
		if m.Epoch != epoch || m.Dataset != "ds-test" {
			t.Fatalf("%s: manifest epoch %d of %q, want %d of ds-test", what, m.Epoch, m.Dataset, epoch)
		}
		if got := entryNames(m); !slices.Equal(got, want) {
			t.Fatalf("%s: manifest lists %v, want %v", what, got, want)
		}
		for _, e := range m.Entries {
			if got := mw.entry(e.Name); got != e {
				t.Fatalf("%s: entry %s does not match storage", what, e.Name)
			}
		}
		if got := w.root.ManifestEpoch("data"); got != epoch {
			t.Fatalf("%s: the mount serves epoch %d, want %d", what, got, epoch)
		}
	}
	newData := bytes.Repeat([]byte("new file\n"), 10000)
	step("create", func() error { return os.WriteFile(w.path("data/new.txt"), newData, 0o644) },
		[]string{"big.bin", "dir/sub/nested.txt", "empty", "hello.txt", "new.txt"})
	step("overwrite", func() error { return os.WriteFile(w.path("data/hello.txt"), []byte("hello again\n"), 0o644) },
		[]string{"big.bin", "dir/sub/nested.txt", "empty", "hello.txt", "new.txt"})
	step("append", func() error {
		return writeClose(w.path("data/dir/sub/nested.txt"), os.O_WRONLY|os.O_APPEND, []byte("more\n"))
	}, []string{"big.bin", "dir/sub/nested.txt", "empty", "hello.txt", "new.txt"})
	step("unlink", func() error { return os.Remove(w.path("data/big.bin")) },
		[]string{"dir/sub/nested.txt", "empty", "hello.txt", "new.txt"})
	step("rename", func() error { return os.Rename(w.path("data/new.txt"), w.path("data/dir/moved.txt")) },
		[]string{"dir/moved.txt", "dir/sub/nested.txt", "empty", "hello.txt"})
	if got := readDirNames(t, w.path("data")); !slices.Equal(got, []string{"dir", "empty", "hello.txt"}) {
		t.Fatalf("listing %v", got)
	}
	nested := append(append([]byte(nil), w.plain["dir/sub/nested.txt"]...), "more\n"...)
	for name, want := range map[string][]byte{"dir/moved.txt": newData, "hello.txt": []byte("hello again\n"), "dir/sub/nested.txt": nested} {
		if got, err := os.ReadFile(w.path("data/" + name)); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s through the mount: %v", name, err)
		}
	}
	// A fresh mount verifies the published manifest and serves the same.
	p := w.mountAgain()
	for name, want := range map[string][]byte{"dir/moved.txt": newData, "hello.txt": []byte("hello again\n")} {
		if got, err := os.ReadFile(p + "/data/" + name); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s through a fresh mount: %v", name, err)
		}
	}
	if _, err := os.Stat(p + "/data/big.bin"); !os.IsNotExist(err) {
		t.Fatalf("unlinked big.bin in a fresh mount: %v", err)
	}
	if s := w.root.Stats(); s.ManifestPublishes != 5 || s.ManifestPublishFailures != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// TestWritePublishMergesConcurrentWriter: another producer publishes
// while the mount writes; the mount's conditional publish loses, re-reads
// the newer manifest, keeps its entries and adds its own.
func TestWritePublishMergesConcurrentWriter(t *testing.T) {
	mw := newPublishingWorld(t)
	w := mw.world
	if _, err := os.ReadDir(w.path("data")); err != nil { // epoch 5 loaded
		t.Fatal(err)
	}
	// The other producer drops big.bin from the listing at epoch 20.
	mw.publish(20, time.Now().UTC().Truncate(time.Second), "ds-test", "dir/sub/nested.txt", "empty", "hello.txt")
	if err := os.WriteFile(w.path("data/mine.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := mw.storedManifest()
	if m.Epoch != 21 || !slices.Equal(entryNames(m), []string{"dir/sub/nested.txt", "empty", "hello.txt", "mine.txt"}) {
		t.Fatalf("after the merge: epoch %d, %v", m.Epoch, entryNames(m))
	}
	if s := w.root.Stats(); s.ManifestPublishConflicts != 1 {
		t.Fatalf("conflicts %d, want 1", s.ManifestPublishConflicts)
	}
	// Concurrent writers of this mount: every file is listed, whatever
	// the batching.
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Go(func() {
			errs <- os.WriteFile(w.path(fmt.Sprintf("data/c%02d", i)), []byte{byte(i)}, 0o644)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	m = mw.storedManifest()
	if len(m.Entries) != 20 {
		t.Fatalf("after 16 concurrent writes: %d entries %v", len(m.Entries), entryNames(m))
	}
	s := w.root.Stats()
	t.Logf("16 concurrent commits: %d publishes", s.ManifestPublishes-1)
	if m.Epoch != 21+uint64(s.ManifestPublishes-1) {
		t.Fatalf("epoch %d after %d publishes", m.Epoch, s.ManifestPublishes)
	}
}

// TestWritePublishNeverOverwritesBadManifest: a manifest in storage that
// does not verify is never built on nor replaced; the commit's close gets
// EIO, and the change is listed by the next publish once a good manifest
// is back.
func TestWritePublishNeverOverwritesBadManifest(t *testing.T) {
	mw := newPublishingWorld(t)
	w := mw.world
	if _, err := os.ReadDir(w.path("data")); err != nil {
		t.Fatal(err)
	}
	forged := mw.sign(9, time.Now().UTC().Truncate(time.Second), "ds-test", newSigner(t), "hello.txt")
	if err := mw.store.Put(crypto.ManifestName, forged); err != nil {
		t.Fatal(err)
	}
	err := os.WriteFile(w.path("data/first.txt"), []byte("first"), 0o644)
	if errnoOf(err) != syscall.EIO {
		t.Fatalf("write with a forged manifest in storage: %v, want EIO", err)
	}
	if got := mw.getRaw(crypto.ManifestName); !bytes.Equal(got, forged) {
		t.Fatal("the forged manifest was replaced")
	}
	mw.publish(10, time.Now().UTC().Truncate(time.Second), "ds-test", listedNames...)
	if err := os.WriteFile(w.path("data/second.txt"), []byte("second"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := mw.storedManifest()
	if m.Epoch != 11 || !slices.Contains(entryNames(m), "first.txt") || !slices.Contains(entryNames(m), "second.txt") {
		t.Fatalf("epoch %d %v: want 11 listing first.txt (carried over) and second.txt", m.Epoch, entryNames(m))
	}
}

// TestWriteSignerMustBePinned: a signing key that readers would refuse is
// refused when the mount is made.
func TestWriteSignerMustBePinned(t *testing.T) {
	v, err := crypto.NewManifestVerifier(newSigner(t).Public())
	if err != nil {
		t.Fatal(err)
	}
	_, err = NewRoot(Options{SpillDir: t.TempDir(), Releaser: keyrelease.NewStatic(), Datasets: []DatasetSpec{{
		Name: "data", Store: memblob.New(), Keys: []keyrelease.KeyRef{refOct},
		Manifest: &ManifestSpec{Mode: ManifestRequire, Verifier: v},
		Write:    &WriteSpec{Key: refOct, Signer: newSigner(t)},
	}}})
	if err == nil || !strings.Contains(err.Error(), "not one of the dataset's pinned signers") {
		t.Fatalf("NewRoot: %v", err)
	}
}

// TestWritePublishFirstManifest: a required manifest that storage lacks is
// started by a mount that may publish (the dataset is served empty until
// its first write), unless something says the dataset had one.
func TestWritePublishFirstManifest(t *testing.T) {
	s := newSigner(t)
	mw := newManifestWorldSigned(t, s, false, func(ms *ManifestSpec) { ms.ID = "ds-new" }, func(o *Options) {
		o.Datasets[0].Write = &WriteSpec{Key: refOct, Signer: s}
	})
	w := mw.world
	if got := readDirNames(t, w.path("data")); len(got) != 0 {
		t.Fatalf("before the first write: %v", got)
	}
	if err := os.WriteFile(w.path("data/first.txt"), []byte("first"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := mw.storedManifest()
	if m.Epoch != 1 || m.Dataset != "ds-new" || !slices.Equal(entryNames(m), []string{"first.txt"}) {
		t.Fatalf("first manifest: epoch %d of %q, %v", m.Epoch, m.Dataset, entryNames(m))
	}
	if got := readDirNames(t, w.path("data")); !slices.Equal(got, []string{"first.txt"}) {
		t.Fatalf("after the first write: %v", got)
	}

	for _, tc := range []struct {
		name string
		tune func(*ManifestSpec)
	}{
		{"min_epoch", func(ms *ManifestSpec) { ms.MinEpoch = 3 }},
		{"anchor", func(ms *ManifestSpec) { ms.Anchor = fixedAnchor(4) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mw := newManifestWorldSigned(t, s, false, tc.tune, func(o *Options) {
				o.Datasets[0].Write = &WriteSpec{Key: refOct, Signer: s}
			})
			if _, err := os.ReadDir(mw.path("data")); errnoOf(err) != syscall.EIO {
				t.Fatalf("listing a dataset whose manifest was deleted: %v, want EIO", err)
			}
			if err := os.WriteFile(mw.path("data/x"), []byte("x"), 0o644); err == nil {
				t.Fatal("a write started a new manifest although the dataset had one")
			}
			if _, err := mw.store.Stat(context.Background(), crypto.ManifestName); err == nil {
				t.Fatal("a manifest was published")
			}
		})
	}
}

// TestWritePublishConflictInsideUnlink: an unlink whose publish meets
// another writer's newer manifest re-reads it while the kernel holds the
// directory; names the newer manifest changed in that directory are
// invalidated after the unlink returns, not inside it (which deadlocked).
func TestWritePublishConflictInsideUnlink(t *testing.T) {
	mw := newPublishingWorld(t)
	w := mw.world
	if _, err := os.Stat(w.path("data/big.bin")); err != nil { // cached by the kernel
		t.Fatal(err)
	}
	mw.publish(20, time.Now().UTC().Truncate(time.Second), "ds-test", "dir/sub/nested.txt", "empty", "hello.txt")
	done := make(chan error, 1)
	go func() { done <- os.Remove(w.path("data/hello.txt")) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("unlink did not return in 30 s: the publish's re-read invalidated names inside it")
	}
	m := mw.storedManifest()
	if m.Epoch != 21 || !slices.Equal(entryNames(m), []string{"dir/sub/nested.txt", "empty"}) {
		t.Fatalf("epoch %d %v", m.Epoch, entryNames(m))
	}
	pollUntil(t, "big.bin gone from the kernel's cache", func() bool {
		_, err := os.Stat(w.path("data/big.bin"))
		return os.IsNotExist(err)
	})
}
