package integration

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"io"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/skrfs/skrfs/blob/azblob"
	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/fs"
	"github.com/skrfs/skrfs/integration/azurite"
	"github.com/skrfs/skrfs/keyrelease"
)

// TestManifestAzurite: a signed manifest enforced on an Azure dataset
// (Azurite), through a real FUSE mount: forgery with the RSA public key
// under a listed name gives EIO, a planted object is invisible, an older
// genuine version put back gives EIO, and a manifest replaced while a
// reader streams a file leaves that reader with the right bytes.
func TestManifestAzurite(t *testing.T) {
	requireFUSE(t)
	ctx := context.Background()
	az := azurite.Start(t, azurite.Options{})
	az.CreateContainer(t, "enc")
	st, err := azblob.Open(ctx, azblob.Config{ContainerURL: az.ContainerURL("enc"), AccountKey: az.AccountKey, Transport: az.HTTPClient})
	if err != nil {
		t.Fatal(err)
	}
	rk := rsaKeyForTest(t)
	key, err := keyrelease.FromCrypto(rk)
	if err != nil {
		t.Fatal(err)
	}
	key.Ref = keyrelease.KeyRef{Vault: "az.vault.azure.net", Name: "rsa"}
	sk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	signer, _ := crypto.NewLocalSigner(sk)
	v, _ := crypto.NewManifestVerifier(signer.Public())

	plain := map[string][]byte{"a.csv": pseudoBytes(1, 1000), "big.bin": pseudoBytes(2, 6<<20+5), "dir/c.txt": []byte("c\n")}
	entries := map[string]crypto.ManifestEntry{}
	sealPut := func(name string, pt []byte) []byte {
		t.Helper()
		obj, err := crypto.Seal(pt, &rk.PublicKey, crypto.SealOptions{Name: name, KeyRef: key.Ref.String()})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Put(ctx, name, obj, nil); err != nil {
			t.Fatal(err)
		}
		h, _ := crypto.ParseHeader(obj)
		entries[name] = crypto.ManifestEntry{Name: name, Size: int64(len(pt)), HeaderSHA256: crypto.HeaderDigest(h.Bytes())}
		return obj
	}
	publish := func(epoch uint64, names ...string) {
		t.Helper()
		m := &crypto.Manifest{Dataset: "az", Epoch: epoch, Created: time.Now().UTC().Truncate(time.Second)}
		for _, n := range names {
			m.Entries = append(m.Entries, entries[n])
		}
		crypto.SortEntries(m.Entries)
		tok, err := crypto.SignManifest(m, signer)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Put(ctx, crypto.ManifestName, tok, nil); err != nil {
			t.Fatal(err)
		}
	}
	oldA := sealPut("a.csv", []byte("an older genuine version"))
	for n, pt := range plain {
		sealPut(n, pt)
	}
	publish(1, "a.csv", "big.bin", "dir/c.txt")

	root, err := fs.NewRoot(fs.Options{Releaser: keyrelease.NewStatic(key.Clone()),
		Datasets: []fs.DatasetSpec{{Name: "data", Store: st, Keys: []keyrelease.KeyRef{key.Ref},
			Manifest: &fs.ManifestSpec{Mode: fs.ManifestRequire, Verifier: v, ID: "az", Refresh: time.Hour}}},
		CacheBytes: 1 << 20, RangeSize: 256 << 10, Logger: zerolog.New(newRigLog(t)).Level(zerolog.WarnLevel)})
	if err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(t.TempDir(), "mnt")
	os.Mkdir(mnt, 0o755)
	srv, err := fs.Mount(mnt, root, fs.MountOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Unmount(); root.Wipe() })
	p := func(n string) string { return filepath.Join(mnt, "data", n) }

	if got := listTree(t, filepath.Join(mnt, "data")); !slices.Equal(got, []string{"a.csv", "big.bin", "dir/c.txt"}) {
		t.Fatalf("listing %v", got)
	}
	for n, pt := range plain {
		if got, err := os.ReadFile(p(n)); err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("%s: %v", n, err)
		}
	}
	// Forgery with the public key under a listed name.
	forged, _ := crypto.Seal([]byte("forged"), &rk.PublicKey, crypto.SealOptions{Name: "dir/c.txt", KeyRef: key.Ref.String()})
	st.Put(ctx, "dir/c.txt", forged, nil)
	if _, err := os.ReadFile(p("dir/c.txt")); errnoOf(err) != syscall.EIO {
		t.Fatalf("forged: %v, want EIO", err)
	}
	// Planted under a new name.
	planted, _ := crypto.Seal([]byte("planted"), &rk.PublicKey, crypto.SealOptions{Name: "new.csv", KeyRef: key.Ref.String()})
	st.Put(ctx, "new.csv", planted, nil)
	if _, err := os.Stat(p("new.csv")); errnoOf(err) != syscall.ENOENT {
		t.Fatalf("planted: %v, want ENOENT", err)
	}
	// The saved older genuine version put back.
	st.Put(ctx, "a.csv", oldA, nil)
	if _, err := os.ReadFile(p("a.csv")); errnoOf(err) != syscall.EIO {
		t.Fatalf("rolled back: %v, want EIO", err)
	}
	// The manifest replaced (by one that no longer lists big.bin) while a
	// reader streams big.bin: it finishes with the right bytes.
	f, err := os.Open(p("big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, 1<<20)
	if _, err := io.ReadFull(f, head); err != nil {
		t.Fatal(err)
	}
	publish(2, "dir/c.txt")
	if err := root.ReloadManifests(ctx); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(append(head, rest...), plain["big.bin"]) {
		t.Fatalf("reader across the manifest swap: %v", err)
	}
	if _, err := os.Stat(p("big.bin")); errnoOf(err) != syscall.ENOENT {
		t.Fatalf("after the swap: %v, want ENOENT", err)
	}
	if root.ManifestEpoch("data") != 2 {
		t.Fatal("epoch")
	}
}

func rsaKeyForTest(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
