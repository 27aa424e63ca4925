package fs

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
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
