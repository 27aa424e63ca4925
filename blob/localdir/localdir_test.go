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

// A symbolic link to a directory, as an intermediate component of a name,
// must not lead reads out of the root: stat, open (ReadHead), ReadAt,
// ranges and listings all refuse it, with openat2 and with the openat walk
// of older kernels. Links to directories inside the root are refused too.
func TestSymlinkedDirectoriesAreNotFollowed(t *testing.T) {
	for _, walk := range []bool{false, true} {
		t.Run(map[bool]string{false: "openat2", true: "openat-walk"}[walk], func(t *testing.T) {
			defer localdir.SetNoOpenat2(walk)()
			ctx := context.Background()
			outside := t.TempDir()
			if err := os.MkdirAll(filepath.Join(outside, "deep"), 0o755); err != nil {
				t.Fatal(err)
			}
			secret := []byte("outside the root: never served")
			for _, p := range []string{"secret", "deep/secret"} {
				if err := os.WriteFile(filepath.Join(outside, p), secret, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			out, err := localdir.New(outside)
			if err != nil {
				t.Fatal(err)
			}
			pinned, err := out.Stat(ctx, "secret") // a valid ETag for the outside file
			if err != nil {
				t.Fatal(err)
			}
			s := newStore(t)
			if err := s.Put("real/inside", []byte("inside")); err != nil {
				t.Fatal(err)
			}
			for _, l := range []struct{ link, target string }{
				{"link", outside}, {"real/link", outside}, {"inlink", filepath.Join(s.Root(), "real")},
			} {
				if err := os.Symlink(l.target, filepath.Join(s.Root(), filepath.FromSlash(l.link))); err != nil {
					t.Fatal(err)
				}
			}
			for _, name := range []string{"link/secret", "link/deep/secret", "real/link/secret", "inlink/inside"} {
				if _, err := s.Stat(ctx, name); !errors.Is(err, blob.ErrNotFound) {
					t.Errorf("Stat(%s) = %v, want ErrNotFound", name, err)
				}
				if _, _, err := s.ReadHead(ctx, name, make([]byte, 64)); !errors.Is(err, blob.ErrNotFound) {
					t.Errorf("ReadHead(%s) = %v, want ErrNotFound", name, err)
				}
				ref := blob.Ref{Name: name, ETag: pinned.ETag}
				if n, err := s.ReadAt(ctx, ref, make([]byte, 8), 0); !errors.Is(err, blob.ErrNotFound) {
					t.Errorf("ReadAt(%s) = %d, %v, want ErrNotFound", name, n, err)
				}
				if rc, err := s.OpenRange(ctx, ref, 0, 8); !errors.Is(err, blob.ErrNotFound) {
					if err == nil {
						b, _ := io.ReadAll(rc)
						rc.Close()
						t.Errorf("OpenRange(%s) read %q", name, b)
					}
					t.Errorf("OpenRange(%s) = %v, want ErrNotFound", name, err)
				}
			}
			for _, o := range []blob.ListOptions{
				{}, {Delimiter: "/"}, {Prefix: "link/"}, {Prefix: "link/", Delimiter: "/"},
				{Prefix: "link/deep/"}, {Prefix: "real/"}, {Prefix: "real/link/"}, {Prefix: "inlink/", Delimiter: "/"},
			} {
				var names []string
				err := s.List(ctx, o, func(i blob.Info) error { names = append(names, i.Name); return nil })
				if err != nil {
					t.Errorf("List(%+v): %v", o, err)
				}
				for _, n := range names {
					if strings.Contains(n, "link") {
						t.Errorf("List(%+v) = %v: names a path through a link", o, names)
					}
				}
			}
			// Writes stay beneath the root too.
			if err := s.Put("link/planted", []byte("x")); err == nil {
				t.Errorf("Put through a link to outside the root succeeded")
			}
			if _, err := os.Stat(filepath.Join(outside, "planted")); err == nil {
				t.Errorf("Put wrote outside the root")
			}
			// The real object is still served.
			if i, err := s.Stat(ctx, "real/inside"); err != nil || i.Size != 6 {
				t.Errorf("Stat(real/inside) = %+v, %v", i, err)
			}
			var got []string
			s.List(ctx, blob.ListOptions{Prefix: "real/"}, func(i blob.Info) error { got = append(got, i.Name); return nil })
			if len(got) != 1 || got[0] != "real/inside" {
				t.Errorf("List(real/) = %v, want [real/inside]", got)
			}
		})
	}
}

// Metadata is read through the descriptor of the file found beneath the
// root, with /proc/self/fd or, without /proc, an open of its own.
func TestMetadataWithoutProc(t *testing.T) {
	for _, proc := range []bool{true, false} {
		s := newStore(t)
		s.SetProcFD(proc)
		if err := s.Upload(context.Background(), "d/m", strings.NewReader("x"), map[string]string{"K": "v"}); err != nil {
			t.Fatal(err)
		}
		i, err := s.Stat(context.Background(), "d/m")
		if err != nil || i.Metadata["k"] != "v" {
			t.Errorf("proc=%v: Stat = %+v, %v", proc, i, err)
		}
		var got map[string]string
		s.List(context.Background(), blob.ListOptions{Prefix: "d/", WithMetadata: true}, func(i blob.Info) error { got = i.Metadata; return nil })
		if got["k"] != "v" {
			t.Errorf("proc=%v: List metadata %v", proc, got)
		}
	}
}

func TestWriterConformance(t *testing.T) {
	blobtest.Suite{New: func(tb testing.TB) blobtest.Fixture {
		s := newStore(tb)
		return blobtest.Fixture{Store: s, Put: s.Put, Delete: s.Delete}
	}}.RunWriter(t)
}

// A hierarchical listing rolls each directory one level below the prefix
// into a common prefix when it holds an object at any depth (found by a
// search that stops at the first, not a walk of the subtree), and leaves
// out directories that hold none: empty ones, or only temporary files.
func TestListRollsUpDirectories(t *testing.T) {
	root := t.TempDir()
	for _, p := range []string{"deep/a/b/c/obj", "flat/obj", "top", "mixed/x/obj", "mixed/y/z/obj"} {
		os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(root, p), []byte("x"), 0o644)
	}
	os.MkdirAll(filepath.Join(root, "empty/a/b"), 0o755)
	os.MkdirAll(filepath.Join(root, "tmponly/a"), 0o755)
	os.WriteFile(filepath.Join(root, "tmponly/a/.skrfs-tmp-0123"), []byte("x"), 0o600)
	s, err := localdir.New(root)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		prefix string
		want   []string
	}{
		{"", []string{"deep/", "flat/", "mixed/", "top"}},
		{"mixed/", []string{"mixed/x/", "mixed/y/"}},
		{"mixed/y/", []string{"mixed/y/z/"}},
		{"de", []string{"deep/"}},
		{"empty/", nil},
		{"tmponly/", nil},
	}
	for _, tc := range tests {
		var got []string
		err := s.List(context.Background(), blob.ListOptions{Prefix: tc.prefix, Delimiter: "/"}, func(i blob.Info) error {
			got = append(got, i.Name)
			return nil
		})
		if err != nil || strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("prefix %q: %v, %v; want %v", tc.prefix, got, err, tc.want)
		}
	}
}
