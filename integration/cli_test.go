package integration

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// keyFiles writes a private and a public PEM file for each key type, and a
// raw AES key, and returns their paths by name.
func keyFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	paths := map[string]string{}
	writePEM := func(name, typ string, der []byte) {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		paths[name] = p
	}
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for name, k := range map[string]any{"rsa": rk, "ec": ek} {
		der, _ := x509.MarshalPKCS8PrivateKey(k)
		writePEM(name+".pem", "PRIVATE KEY", der)
		var pub any = &rk.PublicKey
		if name == "ec" {
			pub = &ek.PublicKey
		}
		pder, _ := x509.MarshalPKIXPublicKey(pub)
		writePEM(name+".pub.pem", "PUBLIC KEY", pder)
	}
	oct := make([]byte, 32)
	rand.Read(oct)
	paths["oct"] = filepath.Join(dir, "oct.key")
	os.WriteFile(paths["oct"], oct, 0o600)
	return paths
}

func TestCLIRoundTripAndFailures(t *testing.T) {
	bin := skrfsBin(t)
	dir := t.TempDir()
	keys := keyFiles(t, dir)
	plain := filepath.Join(dir, "report.csv")
	data := bytes.Repeat([]byte("id,value\n1,2\n"), 50000) // ~650 KB, 10 chunks
	os.WriteFile(plain, data, 0o644)
	ref := "https://myvault.vault.azure.net/keys/data-key"

	for _, kc := range []struct{ seal, open string }{
		{keys["rsa.pub.pem"], keys["rsa.pem"]},
		{keys["ec.pub.pem"], keys["ec.pem"]},
		{keys["oct"], keys["oct"]},
	} {
		obj := filepath.Join(dir, "report.csv.skrfs")
		if r := run(t, bin, "encrypt", "--key", kc.seal, "--key-ref", ref, plain, obj); r.code != 0 {
			t.Fatalf("encrypt: %d %s", r.code, r.stderr)
		}
		r := run(t, bin, "inspect", "--json", obj)
		var info map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &info); err != nil || r.code != 0 {
			t.Fatalf("inspect: %v %s", err, r.stderr)
		}
		if info["name"] != "report.csv" || info["key_ref"] != ref || info["plaintext_size"] != float64(len(data)) {
			t.Fatalf("inspect: %v", info)
		}
		out := filepath.Join(dir, "out.csv")
		if r := run(t, bin, "decrypt", "--key", kc.open, "--name", "report.csv", obj, out); r.code != 0 {
			t.Fatalf("decrypt: %d %s", r.code, r.stderr)
		}
		if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
			t.Fatal("decrypted bytes differ")
		}
		if st, _ := os.Stat(out); st.Mode().Perm() != 0o600 {
			t.Fatalf("plaintext written with mode %v, want 0600", st.Mode().Perm())
		}
	}

	// Failures: clear message, specific exit code, OUT untouched, no temp files.
	obj := filepath.Join(dir, "report.csv.skrfs") // sealed with the oct key last
	raw, _ := os.ReadFile(obj)
	tampered := filepath.Join(dir, "tampered.skrfs")
	bad := bytes.Clone(raw)
	bad[len(bad)/2] ^= 1
	os.WriteFile(tampered, bad, 0o644)
	truncated := filepath.Join(dir, "truncated.skrfs")
	os.WriteFile(truncated, raw[:len(raw)-(65536+16)], 0o644)
	notObj := filepath.Join(dir, "plain.txt")
	os.WriteFile(notObj, []byte("just some text that is long enough"), 0o644)
	existing := filepath.Join(dir, "existing.out")
	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		inStderr string
	}{
		{"tampered chunk", []string{"decrypt", "--key", keys["oct"], tampered, existing}, 11, "chunk 4: skrfs object: authentication failed: chunk tag mismatch"},
		{"truncated", []string{"decrypt", "--key", keys["oct"], truncated, existing}, 11, "truncated"},
		{"wrong name", []string{"decrypt", "--key", keys["oct"], "--name", "other.csv", obj, existing}, 11, `sealed for "report.csv", expected "other.csv"`},
		{"wrong key", []string{"decrypt", "--key", keys["rsa.pem"], obj, existing}, 12, "object is wrapped with A256KW, have an RSA key"},
		{"public key", []string{"decrypt", "--key", keys["rsa.pub.pem"], obj, existing}, 12, "decrypting needs the private key"},
		{"not an object", []string{"decrypt", "--key", keys["oct"], notObj, existing}, 10, "not an skrfs object"},
		{"inspect not an object", []string{"inspect", notObj}, 10, "bad magic"},
		{"missing key flag", []string{"decrypt", obj, existing}, 2, "--key is required"},
		{"bad key ref", []string{"encrypt", "--key", keys["oct"], "--key-ref", "https://v/secrets/x", plain, existing}, 2, "path must be /keys/"},
		{"bad key file", []string{"encrypt", "--key", notObj, plain, existing}, 12, "neither PEM, JWK"},
		{"unknown flag", []string{"decrypt", "--nope"}, 2, "unknown flag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.WriteFile(existing, []byte("previous contents"), 0o644)
			r := run(t, bin, tc.args...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.inStderr) {
				t.Fatalf("exit %d, stderr %q; want exit %d and %q", r.code, r.stderr, tc.code, tc.inStderr)
			}
			if got, _ := os.ReadFile(existing); string(got) != "previous contents" {
				t.Fatalf("OUT was modified on failure: %q", got)
			}
			if m, _ := filepath.Glob(filepath.Join(dir, ".skrfs-tmp-*")); len(m) != 0 {
				t.Fatalf("temporary files left behind: %v", m)
			}
		})
	}

	// Tampered object to stdout: nothing at all is written.
	r := run(t, bin, "decrypt", "--key", keys["oct"], tampered, "-")
	if r.code != 11 || r.stdout != "" {
		t.Fatalf("decrypt tampered to stdout: exit %d, %d bytes written", r.code, len(r.stdout))
	}
}

func TestCLIStdinStdout(t *testing.T) {
	bin := skrfsBin(t)
	dir := t.TempDir()
	keys := keyFiles(t, dir)
	obj := filepath.Join(dir, "obj")
	in := filepath.Join(dir, "in")
	os.WriteFile(in, []byte("through a pipe"), 0o644)
	// encrypt - needs --name.
	if r := run(t, "sh", "-c", bin+" encrypt --key "+keys["oct"]+" - "+obj+" < "+in); r.code != 2 || !strings.Contains(r.stderr, "--name is required") {
		t.Fatalf("encrypt from stdin without --name: %d %s", r.code, r.stderr)
	}
	if r := run(t, "sh", "-c", bin+" encrypt --key "+keys["oct"]+" --name piped - - < "+in+" > "+obj); r.code != 0 {
		t.Fatalf("encrypt stdin->stdout: %d %s", r.code, r.stderr)
	}
	r := run(t, bin, "decrypt", "--key", keys["oct"], "--name", "piped", obj, "-")
	if r.code != 0 || r.stdout != "through a pipe" {
		t.Fatalf("decrypt to stdout: %d %q %s", r.code, r.stdout, r.stderr)
	}
}
