package integration

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/skrfs/skrfs/internal/azauth"
	"github.com/skrfs/skrfs/internal/devstack"
)

// TestKeyCreateOps: `skrfs key create --ops` sets the key's operations in
// the vault (which then copies them into release payloads, and skrfs onto
// released JWKs); an unknown operation is a usage error.
func TestKeyCreateOps(t *testing.T) {
	s := startDevstack(t)
	env := devstackEnv(t, s)
	r := runEnv(t, env, "key", "create", "--vault", s.VaultURL, "--name", "with-ops", "--kty", "oct-HSM",
		"--cce-policy", s.Dir+"/cce-policy.rego", "--authority", s.MAAURL, "--ops", "wrapKey,unwrapKey")
	if r.code != 0 || !strings.HasPrefix(r.stdout, s.VaultURL+"/keys/with-ops/") {
		t.Fatalf("key create --ops: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	tok, _, err := s.Identity.Mint("https://vault.azure.net", devstack.ClientID)
	if err != nil {
		t.Fatal(err)
	}
	hc, _, err := azauth.HTTPClient([]string{s.CAFile})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", s.VaultURL+"/keys/with-ops?api-version=7.4", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var bundle struct {
		Key struct {
			KeyOps []string `json:"key_ops"`
		} `json:"key"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&bundle); err != nil || !slices.Equal(bundle.Key.KeyOps, []string{"wrapKey", "unwrapKey"}) {
		t.Fatalf("the created key has key_ops %v (%v)", bundle.Key.KeyOps, err)
	}
	r = runEnv(t, env, "key", "create", "--vault", s.VaultURL, "--name", "bad-ops", "--kty", "oct-HSM",
		"--cce-policy", s.Dir+"/cce-policy.rego", "--authority", s.MAAURL, "--ops", "encrypt,frobnicate")
	if r.code != 2 || !strings.Contains(r.stderr, `"frobnicate" is not a key operation`) {
		t.Fatalf("key create with an unknown op: %d %s", r.code, r.stderr)
	}
}

// TestKeyFileJWKCarriesKeyOps: the mount's <name>.jwk view carries the
// key_ops of the release payload (the devstack's keys were created without
// --ops, so they hold all their type permits, as in Key Vault).
func TestKeyFileJWKCarriesKeyOps(t *testing.T) {
	mnt, _ := mountDevstack(t, nil)
	for name, want := range map[string][]string{
		"demo-oct": {"encrypt", "decrypt", "wrapKey", "unwrapKey"},
		"demo-rsa": {"encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"},
	} {
		b, err := os.ReadFile(filepath.Join(mnt, "keys", name+".jwk"))
		if err != nil {
			t.Fatal(err)
		}
		var jwk struct {
			KeyOps []string `json:"key_ops"`
			Kid    string   `json:"kid"`
		}
		if err := json.Unmarshal(b, &jwk); err != nil || !slices.Equal(jwk.KeyOps, want) || jwk.Kid == "" {
			t.Errorf("keys/%s.jwk: key_ops %v kid %q (%v), want key_ops %v", name, jwk.KeyOps, jwk.Kid, err, want)
		}
	}
}
