package upload_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"io"
	"testing"

	"github.com/skrfs/skrfs/blob/localdir"
	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/internal/upload"
)

// readObject returns the stored object and its parsed header.
func readObject(t *testing.T, st *localdir.Store, name string) ([]byte, *crypto.Header) {
	t.Helper()
	info, err := st.Stat(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	obj := make([]byte, info.Size)
	if _, err := st.ReadAt(context.Background(), info.Ref(), obj, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	h, err := crypto.ParseHeader(obj)
	if err != nil {
		t.Fatal(err)
	}
	return obj, h
}

// Uploads default to format version 2 with one batch per run; BatchSize
// bounds batches; FormatVersion 1 still writes version 1; a second run of
// the same files skips them all.
func TestUploadV2Batches(t *testing.T) {
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	files := map[string]string{}
	for i := range 10 {
		files[fmt.Sprintf("d/f%02d", i)] = fmt.Sprintf("file %d", i)
	}
	files["big"] = string(bytes.Repeat([]byte("x"), 200000))
	for _, tc := range []struct {
		name     string
		opts     upload.Options
		version  int
		nBatches int
	}{
		{"default", upload.Options{}, 2, 1},
		{"batch size 3", upload.Options{BatchSize: 3}, 2, 4},
		{"version 1", upload.Options{FormatVersion: 1}, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, _ := localdir.New(t.TempDir())
			tc.opts.KEK = &rk.PublicKey
			tc.opts.FingerprintKey = bytes.Repeat([]byte{1}, 32)
			fs := tree(t, files)
			if res := run(t, st, fs, tc.opts); res.Uploaded != len(files) {
				t.Fatalf("uploaded %d", res.Uploaded)
			}
			batches := map[[32]byte]int{}
			for name, pt := range files {
				obj, h := readObject(t, st, name)
				if h.Version != tc.version {
					t.Fatalf("%s: version %d, want %d", name, h.Version, tc.version)
				}
				if md := metadata(t, st, name); md[upload.MetaVersion] != fmt.Sprint(tc.version) || md[upload.MetaHeaderLen] != fmt.Sprint(h.Len()) {
					t.Fatalf("%s: metadata %v", name, md)
				}
				if h.Version == 2 {
					batches[crypto.BatchKeyID(h)]++
				}
				got, err := crypto.Open(obj, rk, name)
				if err != nil || string(got) != pt {
					t.Fatalf("%s: %v", name, err)
				}
			}
			if len(batches) != tc.nBatches {
				t.Fatalf("%d batches, want %d (%v)", len(batches), tc.nBatches, batches)
			}
			if res := run(t, st, fs, tc.opts); res.Skipped != len(files) {
				t.Fatalf("re-upload: skipped %d of %d", res.Skipped, len(files))
			}
		})
	}
}
