package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAttestVerifySGXQuote: `skrfs attest verify --sgx-quote` on the
// genuine Azure SGX quotes prints MAA's SGX claims and says the TCB was not
// evaluated; a flipped bit or the wrong held data exits 21.
func TestAttestVerifySGXQuote(t *testing.T) {
	sgx := filepath.Join(repoRoot(t), "keyrelease", "evidence", "sgxquote", "testdata")
	quote := filepath.Join(sgx, "release.quote")
	held := filepath.Join(sgx, "release.held_data")
	r := run(t, skrfsBin(t), "attest", "verify", "--sgx-quote", quote, "--held-data", held)
	if r.code != 0 {
		t.Fatalf("attest verify --sgx-quote: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	var claims map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &claims); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, r.stdout)
	}
	for k, want := range map[string]any{
		"x-ms-attestation-type":  "sgx",
		"x-ms-sgx-mrenclave":     "d37d983a85d63fb49649610e2eba0930ecdbff6d113aca3ff3fc7261696c0134",
		"x-ms-sgx-mrsigner":      "feb995eb86c349ac98e5afbbb5732ca7376ec9979002702ea17ad476e0853a04",
		"x-ms-sgx-is-debuggable": false,
		"x-ms-sgx-product-id":    1.0,
		"x-ms-sgx-svn":           1.0,
		"x-ms-sgx-ehd":           "AQIDBAUG",
	} {
		if claims[k] != want {
			t.Errorf("%s = %v, want %v", k, claims[k], want)
		}
	}
	if !strings.Contains(r.stderr, "TCB status: not evaluated (no collateral)") || strings.Contains(r.stderr, "up to date") {
		t.Errorf("stderr must say the TCB is not evaluated:\n%s", r.stderr)
	}

	b, _ := os.ReadFile(quote)
	for _, off := range []int{0, 20, 48 + 64, 48 + 320, 436, 436 + 64, 436 + 128 + 200, 436 + 576 + 10} {
		bad := append([]byte(nil), b...)
		bad[off] ^= 0x10
		p := filepath.Join(t.TempDir(), "bad.quote")
		os.WriteFile(p, bad, 0o644)
		if r := run(t, skrfsBin(t), "attest", "verify", "--sgx-quote", p); r.code != 21 {
			t.Errorf("quote flipped at %d: exit %d\n%s", off, r.code, r.stderr)
		}
	}
	other := filepath.Join(t.TempDir(), "other")
	os.WriteFile(other, []byte("not the held data"), 0o644)
	if r := run(t, skrfsBin(t), "attest", "verify", "--sgx-quote", quote, "--held-data", other); r.code != 21 || !strings.Contains(r.stderr, "held data") {
		t.Errorf("wrong held data: exit %d\n%s", r.code, r.stderr)
	}
	if r := run(t, skrfsBin(t), "attest", "verify", "--sgx-quote", quote, "--report", quote); r.code != 2 {
		t.Errorf("--sgx-quote with --report: exit %d\n%s", r.code, r.stderr)
	}
}

// TestKeyCreateSGXPolicy: `skrfs key create --sgx-*` stores the SGX policy
// in the devstack's vault, and `skrfs explain` on that key, with the SNP
// devstack's token, names the SGX conditions that fail.
func TestKeyCreateSGXPolicy(t *testing.T) {
	s := startDevstack(t)
	env := devstackEnv(t, s)
	signer := "feb995eb86c349ac98e5afbbb5732ca7376ec9979002702ea17ad476e0853a04"
	r := runEnv(t, env, "key", "create", "--vault", s.VaultURL, "--name", "sgx-app", "--kty", "oct-HSM",
		"--sgx-mrsigner", signer, "--sgx-product-id", "1", "--sgx-min-svn", "1", "--authority", s.MAAURL)
	if r.code != 0 || !strings.HasPrefix(r.stdout, s.VaultURL+"/keys/sgx-app/") {
		t.Fatalf("key create --sgx-*: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := runEnv(t, env, "key", "create", "--vault", s.VaultURL, "--name", "x", "--kty", "oct-HSM",
		"--sgx-mrsigner", signer, "--sgx-min-svn", "1", "--authority", s.MAAURL); r.code != 2 || !strings.Contains(r.stderr, "--sgx-product-id") {
		t.Fatalf("missing --sgx-product-id: %d %s", r.code, r.stderr)
	}
	b, err := os.ReadFile(filepath.Join(s.Dir, "skrfs.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "skrfs.yaml")
	os.WriteFile(cfg, []byte(strings.Replace(string(b), "keys:\n", "keys:\n  - name: sgx-app\n    ref: "+s.VaultURL+"/keys/sgx-app\n", 1)), 0o600)
	r = runEnv(t, env, "explain", "--config", cfg, "sgx-app")
	for _, want := range []string{"RELEASE WOULD BE DENIED", `FAIL claim x-ms-attestation-type: want equals "sgx", have "sevsnpvm"`,
		`FAIL claim x-ms-sgx-mrsigner: want equals "` + signer + `", have missing`, "the token has no SGX claims",
		`FAIL claim x-ms-sgx-svn: want greater 0, have missing`} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("explain lacks %q", want)
		}
	}
	if r.code != 20 {
		t.Fatalf("explain: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := runEnv(t, env, "key", "release", "--config", cfg, "sgx-app"); r.code != 20 {
		t.Fatalf("release of the SGX key from SNP: %d\n%s", r.code, r.stderr)
	}
}
