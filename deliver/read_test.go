package deliver

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/keyrelease"
)

// countReleases counts the releases of the releaser it wraps.
type countReleases struct {
	keyrelease.Releaser
	n int
}

func (c *countReleases) Release(ctx context.Context, ref keyrelease.KeyRef) (*keyrelease.Key, error) {
	c.n++
	return c.Releaser.Release(ctx, ref)
}

// TestReadObject: one object read in memory with Fetch's checks: every
// kind of object of the world (RSA and oct keys, empty, multi-chunk,
// nested, version 2), and the refusals: a tampered chunk (nothing
// returned), a key the dataset may not use (nothing released), an object
// sealed for another name, a missing object, unsafe and reserved names,
// the size bound.
func TestReadObject(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	ob, err := crypto.NewBatch(w.oct.Oct, refOct.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	v2 := pseudo(8, 70_000)
	obj, err := crypto.SealV2(v2, ob, crypto.SealOptions{Name: "v2.bin", ChunkSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	w.store.Put("v2.bin.enc", obj)
	w.plain["v2.bin"] = v2
	d := w.opts().Datasets[0]
	for name, want := range w.plain {
		got, err := ReadObject(ctx, w.rel, d, name, 0)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %v, %d bytes, want %d", name, err, len(got), len(want))
		}
	}

	big := w.plain["big.bin"]
	if _, err := ReadObject(ctx, w.rel, d, "big.bin", int64(len(big)-1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("size bound: %v", err)
	}
	if got, err := ReadObject(ctx, w.rel, d, "big.bin", int64(len(big))); err != nil || !bytes.Equal(got, big) {
		t.Errorf("at the size bound: %v", err)
	}

	tampered := w.put("tampered.bin.enc", pseudo(4, 50_000), w.oct.Oct, refOct, "tampered.bin")
	tampered[len(tampered)-100] ^= 1 // in the last chunk
	w.store.Put("tampered.bin.enc", tampered)
	if got, err := ReadObject(ctx, w.rel, d, "tampered.bin", 0); !errors.Is(err, crypto.ErrUnauthenticated) || got != nil {
		t.Errorf("tampered last chunk: %v, %d bytes", err, len(got))
	}

	w.put("other.txt.enc", []byte("x"), w.oct.Oct, refOther, "other.txt")
	c := &countReleases{Releaser: w.rel}
	if _, err := ReadObject(ctx, c, d, "other.txt", 0); !errors.Is(err, ErrKeyNotAllowed) || c.n != 0 {
		t.Errorf("a key the dataset may not use: %v, %d releases", err, c.n)
	}

	w.put("renamed.txt.enc", []byte("x"), w.oct.Oct, refOct, "original.txt")
	if _, err := ReadObject(ctx, w.rel, d, "renamed.txt", 0); !errors.Is(err, crypto.ErrNameMismatch) {
		t.Errorf("object sealed for another name: %v", err)
	}
	if _, err := ReadObject(ctx, w.rel, d, "absent.txt", 0); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("missing object: %v", err)
	}
	for _, name := range []string{"../hello.txt", "", "a//b", ".skrfs/manifest"} {
		if _, err := ReadObject(ctx, w.rel, d, name, 0); !errors.Is(err, ErrUnsafeName) {
			t.Errorf("%q: %v", name, err)
		}
	}
}

// TestReadObjectManifest: with a signed manifest, only listed objects are
// read, and a forged listed object is refused before any release.
func TestReadObjectManifest(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	d := w.opts().Datasets[0]
	d.Manifest = signWorld(t, w, 3)
	if got, err := ReadObject(ctx, w.rel, d, "hello.txt", 0); err != nil || !bytes.Equal(got, w.plain["hello.txt"]) {
		t.Fatalf("listed object: %v", err)
	}
	w.put("planted.txt.enc", []byte("planted"), &w.rsa.PublicKey, refRSA, "planted.txt")
	if _, err := ReadObject(ctx, w.rel, d, "planted.txt", 0); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("unlisted object: %v", err)
	}
	w.put("hello.txt.enc", []byte("forged with the public key"), &w.rsa.PublicKey, refRSA, "hello.txt")
	c := &countReleases{Releaser: w.rel}
	if _, err := ReadObject(ctx, c, d, "hello.txt", 0); !errors.Is(err, ErrManifestMismatch) || c.n != 0 {
		t.Errorf("forged listed object: %v, %d releases", err, c.n)
	}
	w.store.Delete("empty.enc")
	if _, err := ReadObject(ctx, w.rel, d, "empty", 0); !errors.Is(err, ErrManifestMissing) {
		t.Errorf("listed object missing from storage: %v", err)
	}
}
