package cvm

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func sealed(t testing.TB, jwt string) (string, []byte) {
	key := make([]byte, 32)
	iv := make([]byte, 12)
	rand.Read(key)
	rand.Read(iv)
	env, err := Seal(jwt, key, iv, func(k []byte) ([]byte, error) { return append([]byte(nil), k...), nil })
	if err != nil {
		t.Fatal(err)
	}
	return env, key
}

// TestEnvelope: the AzureGuest envelope opens with the inner key and the
// AAD "Transport Key"; any other key, a flipped ciphertext or tag bit, or
// malformed parameters fail.
func TestEnvelope(t *testing.T) {
	env, key := sealed(t, "a.b.c")
	e, err := ParseEnvelope(env)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := e.Open(key); err != nil || got != "a.b.c" {
		t.Fatalf("open: %q %v", got, err)
	}
	bad := append([]byte(nil), key...)
	bad[0] ^= 1
	if _, err := e.Open(bad); !errors.Is(err, ErrEnvelope) {
		t.Fatalf("wrong key: %v", err)
	}
	e.Jwt[0] ^= 1
	if _, err := e.Open(key); !errors.Is(err, ErrEnvelope) {
		t.Fatalf("flipped ciphertext: %v", err)
	}
	e.Jwt[0] ^= 1
	e.AuthenticationData[15] ^= 1
	if _, err := e.Open(key); !errors.Is(err, ErrEnvelope) {
		t.Fatalf("flipped tag: %v", err)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(env)
	for name, mut := range map[string]func(m map[string]any){
		"cbc":      func(m map[string]any) { m["EncryptionParams"].(map[string]any)["BlockMode"] = "ChainingModeCBC" },
		"key size": func(m map[string]any) { m["EncryptionParams"].(map[string]any)["KeySizeInBits"] = 64 },
		"short iv": func(m map[string]any) { m["EncryptionParams"].(map[string]any)["Iv"] = "AAAA" },
		"no tag":   func(m map[string]any) { delete(m, "AuthenticationData") },
	} {
		var m map[string]any
		json.Unmarshal(raw, &m)
		mut(m)
		b, _ := json.Marshal(m)
		if _, err := ParseEnvelope(base64.RawURLEncoding.EncodeToString(b)); !errors.Is(err, ErrEnvelope) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := ParseEnvelope("not base64!"); !errors.Is(err, ErrEnvelope) {
		t.Fatal(err)
	}
}

// TestCheckRuntime: the AzureGuest runtime check accepts MAA's shape and
// names what is wrong otherwise.
func TestCheckRuntime(t *testing.T) {
	k, _ := rsa.GenerateKey(rand.Reader, 2048)
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	hcl := []byte(`{"keys":[{"kid":"HCLAkPub","kty":"RSA"}],"vm-configuration":{"vmUniqueId":"V"}}`)
	claims := func() map[string]any {
		var h any
		json.Unmarshal(hcl, &h)
		return map[string]any{
			"x-ms-runtime": map[string]any{"client-payload": map[string]any{"nonce": "N"},
				"keys": []any{JWK(EncKeyKID, &k.PublicKey, "encrypt")}},
			"x-ms-isolation-tee": map[string]any{"x-ms-runtime": h},
		}
	}
	if err := CheckRuntime(claims(), "N", &k.PublicKey, hcl); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		mut  func(map[string]any)
		want string
	}{
		"nonce": {func(c map[string]any) {
			c["x-ms-runtime"].(map[string]any)["client-payload"] = map[string]any{"nonce": "M"}
		}, "nonce"},
		"other key": {func(c map[string]any) {
			c["x-ms-runtime"].(map[string]any)["keys"] = []any{JWK(EncKeyKID, &other.PublicKey)}
		}, "not our TPM key"},
		"key first": {func(c map[string]any) {
			rt := c["x-ms-runtime"].(map[string]any)
			rt["keys"] = append([]any{JWK("x", &other.PublicKey)}, rt["keys"].([]any)...)
		}, "first"},
		"no runtime": {func(c map[string]any) { delete(c, "x-ms-runtime") }, "no x-ms-runtime"},
		"hcl json": {func(c map[string]any) {
			c["x-ms-isolation-tee"] = map[string]any{"x-ms-runtime": map[string]any{"keys": []any{}}}
		}, "HCL report"},
		"flat": {func(c map[string]any) { delete(c, "x-ms-isolation-tee") }, "x-ms-isolation-tee"},
	} {
		c := claims()
		tc.mut(c)
		if err := CheckRuntime(c, "N", &k.PublicKey, hcl); !errors.Is(err, ErrRuntime) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// FuzzEnvelope: the AzureGuest response parser never panics, classifies
// every failure, and no mutation of a sealed envelope opens to other bytes.
func FuzzEnvelope(f *testing.F) {
	env, key := sealed(f, "header.payload.signature")
	f.Add(env)
	f.Add("")
	f.Add(base64.RawURLEncoding.EncodeToString([]byte(`{"Jwt":"AA==","EncryptionParams":{"Cipher":"AES","BlockMode":"ChainingModeGCM","KeySizeInBits":256}}`)))
	f.Fuzz(func(t *testing.T, tok string) {
		e, err := ParseEnvelope(tok)
		if err != nil {
			if !errors.Is(err, ErrEnvelope) {
				t.Fatalf("unclassified: %v", err)
			}
			return
		}
		got, err := e.Open(key)
		if err == nil && got != "header.payload.signature" {
			t.Fatalf("opened to %q", got)
		}
		if err != nil && !errors.Is(err, ErrEnvelope) {
			t.Fatalf("unclassified: %v", err)
		}
	})
}
