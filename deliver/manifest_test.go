package deliver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/skrfs/skrfs/crypto"
)

// signWorld publishes a manifest of the world's objects (all but README)
// and returns the policy that pins its signer.
func signWorld(t *testing.T, w *world, epoch uint64) *Manifest {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, _ := crypto.NewLocalSigner(k)
	v, _ := crypto.NewManifestVerifier(s.Public())
	m := &crypto.Manifest{Dataset: "ds", Epoch: epoch, Created: time.Now().UTC().Truncate(time.Second)}
	for _, name := range []string{"hello.txt", "empty", "big.bin", "dir/sub/nested.txt"} {
		info, err := w.store.Stat(context.Background(), name+".enc")
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, info.Size)
		w.store.ReadAt(context.Background(), info.Ref(), buf, 0)
		h, _ := crypto.ParseHeader(buf)
		size, _ := h.PlainSize(info.Size)
		m.Entries = append(m.Entries, crypto.ManifestEntry{Name: name, Size: size, HeaderSHA256: crypto.HeaderDigest(h.Bytes())})
	}
	crypto.SortEntries(m.Entries)
	tok, err := crypto.SignManifest(m, s)
	if err != nil {
		t.Fatal(err)
	}
	w.store.Put(crypto.ManifestName, tok)
	return &Manifest{Require: true, Verifier: v, ID: "ds"}
}

// TestFetchEnforcesManifest: with a signed manifest, fetch delivers only
// listed objects, refuses (and wipes) on a forged or missing listed object,
// and refuses a manifest below min_epoch or a dataset without one.
func TestFetchEnforcesManifest(t *testing.T) {
	ctx := context.Background()
	fetch := func(w *world, p *Manifest) ([]string, error) {
		opts := w.opts()
		opts.Datasets[0].Manifest = p
		dir := filepath.Join(t.TempDir(), "out")
		_, err := Fetch(ctx, dir, opts)
		if err != nil {
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Fatalf("a failed fetch left %d entries", len(ents))
			}
			return nil, err
		}
		return listTree(t, filepath.Join(dir, "data")), nil
	}
	w := newWorld(t)
	p := signWorld(t, w, 3)
	w.put("planted.txt.enc", []byte("planted"), &w.rsa.PublicKey, refRSA, "planted.txt")
	got, err := fetch(w, p)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(got, "planted.txt") || !slices.Contains(got, "hello.txt") {
		t.Fatalf("delivered %v", got)
	}
	// min_epoch above the manifest's.
	p2 := *p
	p2.MinEpoch = 4
	if _, err := fetch(w, &p2); !errors.Is(err, ErrManifestPolicy) {
		t.Fatalf("min_epoch: %v", err)
	}
	// Forgery with the public key under a listed name.
	w.put("hello.txt.enc", []byte("forged"), &w.rsa.PublicKey, refRSA, "hello.txt")
	if _, err := fetch(w, p); !errors.Is(err, ErrManifestMismatch) {
		t.Fatalf("forged: %v", err)
	}
	// A listed object missing.
	w2 := newWorld(t)
	p3 := signWorld(t, w2, 1)
	w2.store.Delete("empty.enc")
	if _, err := fetch(w2, p3); !errors.Is(err, ErrManifestMissing) {
		t.Fatalf("missing: %v", err)
	}
	// require without a manifest; prefer without one delivers unsigned.
	w3 := newWorld(t)
	p4 := signWorld(t, w3, 1)
	w3.store.Delete(crypto.ManifestName)
	if _, err := fetch(w3, p4); err == nil {
		t.Fatal("require without a manifest delivered")
	}
	p4.Require = false
	if _, err := fetch(w3, p4); err != nil {
		t.Fatalf("prefer without a manifest: %v", err)
	}
}
