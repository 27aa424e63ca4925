package upload_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/blob/localdir"
	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/internal/upload"
)

const ref = "https://v.vault.azure.net/keys/k"

func tree(t *testing.T, files map[string]string) []upload.File {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fs, err := upload.Collect([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

func run(t *testing.T, st *localdir.Store, files []upload.File, opts upload.Options) upload.Result {
	t.Helper()
	opts.KeyRef = ref
	res := upload.Run(context.Background(), st, files, opts)
	if len(res.Errors) > 0 {
		t.Fatalf("upload: %v", res.Errors)
	}
	return res
}

func metadata(t *testing.T, st *localdir.Store, name string) map[string]string {
	t.Helper()
	i, err := st.Stat(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return i.Metadata
}

// Storage must not learn which files are equal, nor be able to confirm a
// guessed plaintext: no metadata value is the unkeyed SHA-256 of the
// plaintext, equal files under different names have unrelated
// fingerprints, and the fingerprint depends on a key storage never sees.
func TestMetadataHoldsNoUnkeyedDigest(t *testing.T) {
	oct := make([]byte, 32)
	rand.Read(oct)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	secret := bytes.Repeat([]byte{7}, 32)
	const guess = "yes" // a low-entropy file
	sum := sha256.Sum256([]byte(guess))
	for _, tc := range []struct {
		what string
		opts upload.Options
	}{
		{"oct, derived key", upload.Options{KEK: oct}},
		{"EC, state-file key", upload.Options{KEK: &ec.PublicKey, FingerprintKey: secret}},
	} {
		t.Run(tc.what, func(t *testing.T) {
			st, _ := localdir.New(t.TempDir())
			run(t, st, tree(t, map[string]string{"a.txt": guess, "b.txt": guess}), tc.opts)
			fps := map[string]bool{}
			for _, name := range []string{"a.txt", "b.txt"} {
				md := metadata(t, st, name)
				for k, v := range md {
					if v == hex.EncodeToString(sum[:]) {
						t.Errorf("%s: metadata %s is the plaintext's SHA-256", name, k)
					}
				}
				if _, ok := blob.MetadataValue(md, "skrfs_sha256"); ok {
					t.Errorf("%s: skrfs_sha256 still written", name)
				}
				fp, ok := blob.MetadataValue(md, upload.MetaFingerprint)
				if !ok || len(fp) != 64 {
					t.Fatalf("%s: fingerprint %q", name, fp)
				}
				fps[fp] = true
			}
			if len(fps) != 2 {
				t.Errorf("equal files under two names share a fingerprint")
			}
		})
	}
	// The fingerprint is keyed: another key, another fingerprint.
	a, _ := upload.Fingerprint(secret, ref, "a.txt", crypto.DefaultChunkSize, bytes.NewReader([]byte(guess)))
	b, _ := upload.Fingerprint(bytes.Repeat([]byte{8}, 32), ref, "a.txt", crypto.DefaultChunkSize, bytes.NewReader([]byte(guess)))
	if a == b {
		t.Error("the fingerprint does not depend on its key")
	}
}

// Re-uploads skip unchanged files and upload changed ones; producers that
// share an oct key share its derived fingerprint key.
func TestIdempotentUpload(t *testing.T) {
	oct := make([]byte, 32)
	rand.Read(oct)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, tc := range []struct {
		what string
		opts upload.Options
	}{
		{"oct", upload.Options{KEK: oct}},
		{"oct, explicit key", upload.Options{KEK: oct, FingerprintKey: bytes.Repeat([]byte{1}, 32)}},
		{"EC", upload.Options{KEK: &ec.PublicKey, FingerprintKey: bytes.Repeat([]byte{2}, 32)}},
	} {
		t.Run(tc.what, func(t *testing.T) {
			st, _ := localdir.New(t.TempDir())
			files := tree(t, map[string]string{"a": "one", "d/b": "two", "d/c": ""})
			if r := run(t, st, files, tc.opts); r.Uploaded != 3 {
				t.Fatalf("first run: %+v", r.Progress)
			}
			if r := run(t, st, files, tc.opts); r.Uploaded != 0 || r.Skipped != 3 {
				t.Fatalf("second run: %+v", r.Progress)
			}
			os.WriteFile(files[0].Path, []byte("ONE"), 0o644)
			if r := run(t, st, files, tc.opts); r.Uploaded != 1 || r.Skipped != 2 {
				t.Fatalf("after a change: %+v", r.Progress)
			}
			other := tc.opts
			other.ChunkSize = crypto.MinChunkSize
			if r := run(t, st, files, other); r.Uploaded != 3 {
				t.Fatalf("another chunk size: %+v", r.Progress)
			}
			if tc.opts.FingerprintKey != nil {
				other := tc.opts
				other.FingerprintKey = bytes.Repeat([]byte{9}, 32)
				if r := run(t, st, files, other); r.Uploaded != 3 {
					t.Fatalf("another fingerprint key: %+v", r.Progress)
				}
			}
		})
	}
	// Without a fingerprint key an RSA/EC upload cannot tell: it uploads.
	st, _ := localdir.New(t.TempDir())
	files := tree(t, map[string]string{"a": "one"})
	for i := 0; i < 2; i++ {
		if r := run(t, st, files, upload.Options{KEK: &ec.PublicKey}); r.Uploaded != 1 {
			t.Fatalf("run %d without a fingerprint key: %+v", i, r.Progress)
		}
	}
	if r := upload.Run(context.Background(), st, files, upload.Options{KEK: oct, KeyRef: ref, FingerprintKey: []byte("short")}); r.Failed != 1 {
		t.Fatalf("a 5-byte fingerprint key was accepted: %+v", r.Progress)
	}
}

// An object written by an older skrfs carries only the unkeyed
// skrfs_sha256: it is treated as changed once, and then skipped.
func TestOldObjectsAreUploadedOnce(t *testing.T) {
	oct := make([]byte, 32)
	rand.Read(oct)
	st, _ := localdir.New(t.TempDir())
	files := tree(t, map[string]string{"a": "same"})
	obj, err := crypto.Seal([]byte("same"), oct, crypto.SealOptions{Name: "a", KeyRef: ref})
	if err != nil {
		t.Fatal(err)
	}
	h, _ := crypto.ParseHeader(obj)
	sum := sha256.Sum256([]byte("same"))
	old := map[string]string{"skrfs_sha256": hex.EncodeToString(sum[:]), "skrfs_keyref": ref,
		"skrfs_header_len": strconv.Itoa(h.Len()), "skrfs_chunk_size": strconv.Itoa(crypto.DefaultChunkSize), "skrfs_version": "1"}
	if err := st.Upload(context.Background(), "a", bytes.NewReader(obj), old); err != nil {
		t.Fatal(err)
	}
	if r := run(t, st, files, upload.Options{KEK: oct}); r.Uploaded != 1 {
		t.Fatalf("old object: %+v", r.Progress)
	}
	if _, ok := blob.MetadataValue(metadata(t, st, "a"), "skrfs_sha256"); ok {
		t.Fatal("the re-upload kept skrfs_sha256")
	}
	if r := run(t, st, files, upload.Options{KEK: oct}); r.Skipped != 1 {
		t.Fatalf("after the one re-upload: %+v", r.Progress)
	}
}
