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
