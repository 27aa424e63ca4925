package writes

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// signerFiles writes a new P-256 manifest signing key: the private PEM
// (the writer's sign_key) and the public PEM (every reader's signers).
func signerFiles(t *testing.T) (priv, pub string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	pubDER, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	dir := t.TempDir()
	priv, pub = filepath.Join(dir, "signer.pem"), filepath.Join(dir, "signer.pub.pem")
	if err := os.WriteFile(priv, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	return priv, pub
}

// TestSignedWritableDataset: a writable dataset whose manifest is required
// and whose mount holds the signing key (datasets[].sign_key). The first
// commit publishes the dataset's first manifest; every commit, unlink and
// rename publishes the next. A reader mount pinning only the public key
// sees exactly what was written; `skrfs manifest verify` agrees; an object
// that storage gains behind the manifest's back stays invisible, and one
// replaced behind its back gives EIO.
func TestSignedWritableDataset(t *testing.T) {
	priv, pub := signerFiles(t)
	ds := localDataset(t)
	ds.extra = "    manifest: require\n    signers: [" + pub + "]\n    sign_key: " + priv + "\n"
	w := mount(t, config(t, ds))
	src := t.TempDir()
	makeTree(t, src)
	sh(t, `cp -a "$1/." "$2/"`, src, w.dir())
	old, err := os.ReadFile(filepath.Join(ds.local, "a", "small.txt"))
	if err != nil {
		t.Fatal(err)
	}
	sh(t, `printf 'scratch\n' > "$1/scratch.txt" && rm "$1/scratch.txt" && mv "$1/one" "$1/a/one-moved" && printf 'version 2\n' > "$1/a/small.txt"`, w.dir())
	if err := os.Rename(filepath.Join(src, "one"), filepath.Join(src, "a", "one-moved")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "a", "small.txt"), []byte("version 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(w.out.String(), "manifest published") {
		t.Fatalf("no manifest published:\n%s", w.out)
	}
	w.unmount()

	out, err := exec.Command(skrfsBin(t), "manifest", "verify", "--signer", pub, ds.local).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "signature ok") {
		t.Fatalf("skrfs manifest verify: %v\n%s", err, out)
	}
	t.Logf("%s", bytes.TrimSpace(out))

	// A reader of the same dataset: read-only, pinning the public key.
	rd := ds
	rd.extra = "    manifest: require\n    signers: [" + pub + "]\n"
	b, err := os.ReadFile(config(t, rd))
	if err != nil {
		t.Fatal(err)
	}
	b = bytes.Replace(b, []byte("    writable: true\n    write_key: "+rd.writeKey+"\n"), nil, 1)
	cfg := filepath.Join(t.TempDir(), "reader.yaml")
	if err := os.WriteFile(cfg, b, 0o600); err != nil {
		t.Fatal(err)
	}
	// Storage gains an object that the manifest does not list.
	if err := os.WriteFile(filepath.Join(ds.local, "planted.txt"), []byte("not listed"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := mount(t, cfg)
	defer r.unmount()
	diffTree(t, src, r.dir()) // planted.txt is not there
	// The first version of a/small.txt, genuinely sealed for its name, is
	// put back behind the manifest's back: a rollback, refused.
	if err := os.WriteFile(filepath.Join(ds.local, "a", "small.txt"), old, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadFile(filepath.Join(r.dir(), "a", "small.txt")); err == nil || !strings.Contains(err.Error(), "input/output error") {
		t.Fatalf("rolled-back object: %v, want EIO", err)
	}
}
