package localdir_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/blob/blobtest"
	"github.com/skrfs/skrfs/blob/localdir"
)

func newStore(tb testing.TB) *localdir.Store {
	tb.Helper()
	s, err := localdir.New(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	blobtest.Suite{New: func(tb testing.TB) blobtest.Fixture {
		s := newStore(tb)
		return blobtest.Fixture{Store: s, Put: s.Put, Delete: s.Delete}
	}}.Run(t)
}

func TestInvalidNames(t *testing.T) {
	s := newStore(t)
	for _, name := range []string{"", "/etc/passwd", "../x", "a/../../x", "a//b", "a\\b", "a/./b", "nul\x00"} {
		if _, err := s.Stat(context.Background(), name); !errors.Is(err, blob.ErrInvalidName) {
			t.Errorf("Stat(%q) = %v, want ErrInvalidName", name, err)
		}
	}
}

func TestSymlinksAreNotObjects(t *testing.T) {
	s := newStore(t)
	outside := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(outside, []byte("outside the root"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(s.Root(), "link")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(context.Background(), "link"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Stat(symlink) = %v, want ErrNotFound", err)
	}
	if _, _, err := s.ReadHead(context.Background(), "link", make([]byte, 16)); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("ReadHead(symlink) = %v, want ErrNotFound", err)
	}
	var n int
	if err := s.List(context.Background(), blob.ListOptions{}, func(blob.Info) error { n++; return nil }); err != nil || n != 0 {
		t.Fatalf("List saw %d objects, err %v; want none", n, err)
	}
}

func TestInPlaceRewriteIsChanged(t *testing.T) {
	s := newStore(t)
	if err := s.Put("f", []byte("version one")); err != nil {
		t.Fatal(err)
	}
	info, err := s.Stat(context.Background(), "f")
	if err != nil {
		t.Fatal(err)
	}
	// Rewrite in place (same inode, same size), as a later write would.
	p, _ := s.Path("f")
	if err := os.WriteFile(p, []byte("version two"), 0o644); err != nil {
		t.Fatal(err)
	}
	later := info.ModTime.Add(time.Second)
	if err := os.Chtimes(p, later, later); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadAt(context.Background(), info.Ref(), make([]byte, 4), 0); !errors.Is(err, blob.ErrChanged) {
		t.Fatalf("ReadAt after in-place rewrite = %v, want ErrChanged", err)
	}
	if _, err := s.OpenRange(context.Background(), info.Ref(), 0, 4); !errors.Is(err, blob.ErrChanged) {
		t.Fatalf("OpenRange after in-place rewrite = %v, want ErrChanged", err)
	}
	// A rewrite while a range is being read shows at the range's end.
	info, err = s.Stat(context.Background(), "f")
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.OpenRange(context.Background(), info.Ref(), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	first := make([]byte, 4)
	if _, err := io.ReadFull(r, first); err != nil {
		t.Fatal(err)
	}
	later = later.Add(time.Second)
	if err := os.WriteFile(p, []byte("version 333"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(p, later, later)
	if _, err := io.ReadAll(r); !errors.Is(err, blob.ErrChanged) {
		t.Fatalf("reading a range across an in-place rewrite = %v, want ErrChanged", err)
	}
	r.Close()
	r.Close() // harmless
}

func TestMetadataRoundTrip(t *testing.T) {
	s := newStore(t)
	md := map[string]string{"skrfs_sha256": "abc", "Skrfs_KeyRef": "https://v/keys/k"}
	if err := s.Upload(context.Background(), "m", strings.NewReader("x"), md); err != nil {
		t.Fatal(err)
	}
	info, err := s.Stat(context.Background(), "m")
	if err != nil {
		t.Fatal(err)
	}
	if info.Metadata == nil {
		t.Skip("this filesystem has no user extended attributes")
	}
	if v, _ := blob.MetadataValue(info.Metadata, "skrfs_keyref"); v != "https://v/keys/k" || info.Metadata["skrfs_sha256"] != "abc" {
		t.Fatalf("metadata %v", info.Metadata)
	}
	// A listing carries the metadata only when asked for it; a long value
	// takes the slow path of readMetadata.
	long := strings.Repeat("v", 3000)
	if err := s.Upload(context.Background(), "n", strings.NewReader("y"), map[string]string{"long": long}); err != nil {
		t.Fatal(err)
	}
	for _, with := range []bool{false, true} {
		got := map[string]map[string]string{}
		err := s.List(context.Background(), blob.ListOptions{WithMetadata: with}, func(i blob.Info) error { got[i.Name] = i.Metadata; return nil })
		if err != nil {
			t.Fatal(err)
		}
		if with && (got["m"]["skrfs_sha256"] != "abc" || got["n"]["long"] != long) || !with && (got["m"] != nil || got["n"] != nil) {
			t.Fatalf("List(WithMetadata: %v) metadata = %v", with, got)
		}
	}
}

// A FIFO named like an object is not one, and reading it must not block.
func TestFIFOIsNotAnObject(t *testing.T) {
	s := newStore(t)
	if err := syscall.Mkfifo(filepath.Join(s.Root(), "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.ReadHead(context.Background(), "fifo", make([]byte, 16)); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("ReadHead(fifo) = %v, want ErrNotFound", err)
	}
	if _, err := s.ReadAt(context.Background(), blob.Ref{Name: "fifo", ETag: "x"}, make([]byte, 16), 0); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("ReadAt(fifo) = %v, want ErrNotFound", err)
	}
}
