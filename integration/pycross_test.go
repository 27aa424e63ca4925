package integration

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	skrfscrypto "github.com/skrfs/skrfs/crypto"
)

// The Python implementation in integration/pydecrypt was written from
// docs/format.md alone. Objects sealed by either implementation must open
// with the other, with the same errors for the same damage.

const python = "/usr/bin/python3"

func pyScript(t *testing.T) string {
	t.Helper()
	if err := exec.Command(python, "-c", "import cryptography").Run(); err != nil {
		t.Fatalf("%s with the cryptography module is required (make test installs python3-cryptography): %v", python, err)
	}
	return filepath.Join(repoRoot(t), "integration", "pydecrypt", "skrfs_object.py")
}

func TestCrossImplementation(t *testing.T) {
	bin, py := skrfsBin(t), pyScript(t)
	dir := t.TempDir()
	type kp struct{ name, priv, pub string }
	var keys []kp
	for _, gen := range []struct {
		name string
		key  any
	}{
		{"rsa3072", must(rsa.GenerateKey(rand.Reader, 3072))},
		{"p256", must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))},
		{"p384", must(ecdsa.GenerateKey(elliptic.P384(), rand.Reader))},
	} {
		der, _ := x509.MarshalPKCS8PrivateKey(gen.key)
		priv := filepath.Join(dir, gen.name+".pem")
		os.WriteFile(priv, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
		pub := gen.key.(crypto.Signer).Public()
		pder, _ := x509.MarshalPKIXPublicKey(pub)
		pubPath := filepath.Join(dir, gen.name+".pub.pem")
		os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pder}), 0o644)
		keys = append(keys, kp{gen.name, priv, pubPath})
	}
	oct := filepath.Join(dir, "oct.key")
	ob := make([]byte, 32)
	rand.Read(ob)
	os.WriteFile(oct, ob, 0o600)
	keys = append(keys, kp{"oct", oct, oct})

	sizes := []int{0, 256, 3*256 + 7, 200000}
	for _, k := range keys {
		for _, size := range sizes {
			t.Run(fmt.Sprintf("%s/%d", k.name, size), func(t *testing.T) {
				t.Parallel()
				plain := filepath.Join(dir, fmt.Sprintf("p-%s-%d", k.name, size))
				data := make([]byte, size)
				rand.Read(data)
				os.WriteFile(plain, data, 0o644)
				chunk := "256"
				if size == 200000 {
					chunk = "65536"
				}
				// Python seals, Go opens.
				pyObj := plain + ".py.skrfs"
				if r := run(t, python, py, "encrypt", "--key", k.pub, "--key-ref", "https://v.vault.azure.net/keys/k", "--chunk-size", chunk, "--name", "n", plain, pyObj); r.code != 0 {
					t.Fatalf("python encrypt: %s", r.stderr)
				}
				goOut := plain + ".go.out"
				if r := run(t, bin, "decrypt", "--key", k.priv, "--name", "n", pyObj, goOut); r.code != 0 {
					t.Fatalf("go decrypt of python object: %s", r.stderr)
				}
				if got, _ := os.ReadFile(goOut); !bytes.Equal(got, data) {
					t.Fatal("go decrypt of python object: wrong bytes")
				}
				// Go seals, Python opens.
				goObj := plain + ".go.skrfs"
				if r := run(t, bin, "encrypt", "--key", k.pub, "--chunk-size", chunk, "--name", "n", plain, goObj); r.code != 0 {
					t.Fatalf("go encrypt: %s", r.stderr)
				}
				pyOut := plain + ".py.out"
				if r := run(t, python, py, "decrypt", "--key", k.priv, "--name", "n", goObj, pyOut); r.code != 0 {
					t.Fatalf("python decrypt of go object: %s", r.stderr)
				}
				if got, _ := os.ReadFile(pyOut); !bytes.Equal(got, data) {
					t.Fatal("python decrypt of go object: wrong bytes")
				}
				// Same damage, same verdict.
				obj, _ := os.ReadFile(goObj)
				for _, dmg := range []struct {
					name   string
					mutate func([]byte) []byte
					goErr  string
					pyErr  string
				}{
					// skrfs encrypt writes format version 2: the last bytes
					// are the nonce table, pinned by the header (docs/format.md 11.2).
					{"flip last byte", func(b []byte) []byte { b = bytes.Clone(b); b[len(b)-1] ^= 1; return b }, "nonce table digest mismatch", "ErrHeaderAuth"},
					{"flip a chunk byte", func(b []byte) []byte {
						h := must(skrfscrypto.ParseHeader(b))
						b = bytes.Clone(b)
						b[h.Len()] ^= 1
						return b
					}, "chunk tag mismatch", "ErrChunkAuth"},
					{"truncate 5 bytes", func(b []byte) []byte { return b[:len(b)-5] }, "skrfs object", "Err"},
					{"bad magic", func(b []byte) []byte { b = bytes.Clone(b); b[0] = 'X'; return b }, "bad magic", "ErrBadMagic"},
				} {
					bad := plain + ".bad.skrfs"
					os.WriteFile(bad, dmg.mutate(obj), 0o644)
					rg := run(t, bin, "decrypt", "--key", k.priv, "--name", "n", bad, plain+".bad.out")
					rp := run(t, python, py, "decrypt", "--key", k.priv, "--name", "n", bad, plain+".bad.out")
					if rg.code == 0 || rp.code == 0 || !strings.Contains(rg.stderr, dmg.goErr) || !strings.Contains(rp.stderr, dmg.pyErr) {
						t.Fatalf("%s: go %d %q, python %d %q", dmg.name, rg.code, rg.stderr, rp.code, rp.stderr)
					}
				}
			})
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
