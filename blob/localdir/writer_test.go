package localdir_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/blob/localdir"
)

// TestCleanTemp: leftovers of interrupted commits are removed when old
// enough, anywhere beneath the root; objects, the lock file, young
// leftovers, locked (in-progress) ones and files behind symbolic links
// are not.
func TestCleanTemp(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if _, err := s.Commit(ctx, "a/b/obj", strings.NewReader("object"), nil, blob.Condition{}); err != nil {
		t.Fatal(err)
	}
	root := s.Root()
	old := time.Now().Add(-time.Hour)
	write := func(rel string, mtime time.Time) string {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("leftover"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		return p
	}
	stale := []string{
		write(".skrfs-tmp-0123456789abcdef", old),
		write("a/b/.skrfs-tmp-00000000000000aa", old),
		write("z/.skrfs-tmp-00000000000000bb", old),
	}
	young := write("a/.skrfs-tmp-00000000000000cc", time.Now())
	locked := write("a/.skrfs-tmp-00000000000000dd", old)
	f, err := os.Open(locked)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	// A leftover reached through a symbolic link lies outside the root.
	outside := t.TempDir()
	outsideTmp := filepath.Join(outside, ".skrfs-tmp-00000000000000ee")
	if err := os.WriteFile(outsideTmp, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(outsideTmp, old, old)
	if err := os.Symlink(outside, filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(filepath.Join(root, ".skrfs-tmp-lock"), old, old)

	n, err := s.CleanTemp(ctx, 10*time.Minute)
	if err != nil || n != len(stale) {
		t.Fatalf("CleanTemp = %d, %v; want %d", n, err, len(stale))
	}
	for _, p := range stale {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s survived: %v", p, err)
		}
	}
	for _, p := range []string{young, locked, outsideTmp, filepath.Join(root, ".skrfs-tmp-lock"), filepath.Join(root, "a/b/obj")} {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s was removed: %v", p, err)
		}
	}
	// With no age limit, the young one goes too; the locked one stays.
	if n, err := s.CleanTemp(ctx, 0); err != nil || n != 1 {
		t.Fatalf("CleanTemp(0) = %d, %v; want 1", n, err)
	}
	if _, err := os.Lstat(locked); err != nil {
		t.Fatalf("a locked (in-progress) temporary file was removed: %v", err)
	}
}

// TestCommitLeavesNoTemp: neither a successful commit nor a failed one
// (condition, reader error) leaves a temporary file.
func TestCommitLeavesNoTemp(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if _, err := s.Commit(ctx, "d/obj", strings.NewReader("one"), nil, blob.Condition{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Commit(ctx, "d/obj", strings.NewReader("two"), nil, blob.Condition{IfNoneMatch: true}); !errors.Is(err, blob.ErrConditionNotMet) {
		t.Fatal(err)
	}
	if n, err := s.CleanTemp(ctx, 0); err != nil || n != 0 {
		t.Fatalf("CleanTemp after commits = %d, %v; want 0 (a commit left a temporary file)", n, err)
	}
}

// TestCommitAcrossStores: two stores on one directory (as two daemons
// would have) exclude each other's commits: of writers conditioned on
// one version, spread over both stores, exactly one wins.
func TestCommitAcrossStores(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var stores []*localdir.Store
	for range 2 {
		s, err := localdir.New(dir)
		if err != nil {
			t.Fatal(err)
		}
		stores = append(stores, s)
	}
	for round := range 20 {
		name := fmt.Sprintf("obj%d", round)
		base, err := stores[0].Commit(ctx, name, strings.NewReader("base"), nil, blob.Condition{})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wins := make([]bool, 4)
		for i := range wins {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := stores[i%2].Commit(ctx, name, bytes.NewReader([]byte{byte(i)}), nil, blob.Condition{IfMatch: base.ETag})
				wins[i] = err == nil
				if err != nil && !errors.Is(err, blob.ErrConditionNotMet) {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		n := 0
		for _, w := range wins {
			if w {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("round %d: %d winners", round, n)
		}
	}
}

// TestRemovePrunesEmptyDirectories: removing the last object under a
// directory removes the directory, so the name can become an object.
func TestRemovePrunesEmptyDirectories(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	for _, n := range []string{"a/b/c", "a/x"} {
		if _, err := s.Commit(ctx, n, strings.NewReader(n), nil, blob.Condition{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Remove(ctx, "a/b/c", blob.Condition{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(s.Root(), "a/b")); !os.IsNotExist(err) {
		t.Fatalf("a/b not pruned: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(s.Root(), "a/x")); err != nil {
		t.Fatalf("a/x: %v", err)
	}
	if _, err := s.Commit(ctx, "a/b", strings.NewReader("now a file"), nil, blob.Condition{IfNoneMatch: true}); err != nil {
		t.Fatal(err)
	}
}

// TestCommitThroughSymlinkedDirectory: a commit never writes through a
// symbolic link to a directory outside the root.
func TestCommitThroughSymlinkedDirectory(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(s.Root(), "link")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Commit(ctx, "link/obj", strings.NewReader("x"), nil, blob.Condition{}); err == nil {
		t.Fatal("Commit through a symbolic link succeeded")
	}
	ents, _ := os.ReadDir(outside)
	if len(ents) != 0 {
		t.Fatalf("a commit wrote %d entries outside the root", len(ents))
	}
}
