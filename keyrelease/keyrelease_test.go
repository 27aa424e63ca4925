package keyrelease

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwk"
)

func TestParseKeyRef(t *testing.T) {
	tests := []struct {
		in      string
		want    KeyRef
		wantErr string
	}{
		{in: "https://myvault.vault.azure.net/keys/data-key", want: KeyRef{Vault: "myvault.vault.azure.net", Name: "data-key"}},
		{in: "https://MyHSM.managedhsm.azure.net/keys/k1/0123abcd", want: KeyRef{Vault: "myhsm.managedhsm.azure.net", Name: "k1", Version: "0123abcd"}},
		{in: "https://127.0.0.1:8443/keys/demo-rsa/", want: KeyRef{Vault: "127.0.0.1:8443", Name: "demo-rsa"}},
		{in: "http://v.vault.azure.net/keys/k", wantErr: "want https"},
		{in: "https://v.vault.azure.net/secrets/k", wantErr: "path must be"},
		{in: "https://v.vault.azure.net/keys/", wantErr: "path must be"},
		{in: "https://v.vault.azure.net/keys/k/v/x", wantErr: "path must be"},
		{in: "https://v.vault.azure.net/keys/bad_name", wantErr: "letters, digits or dashes"},
		{in: "https://v.vault.azure.net/keys/k/v-1", wantErr: "bad key version"},
		{in: "https://v.vault.azure.net/keys/k?api-version=7.4", wantErr: "want https"},
		{in: "https://user@v.vault.azure.net/keys/k", wantErr: "want https"},
		{in: "", wantErr: "want https"},
	}
	for _, tc := range tests {
		got, err := ParseKeyRef(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrInvalidKeyRef) {
				t.Errorf("ParseKeyRef(%q) = %v, want error containing %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseKeyRef(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
		if again, _ := ParseKeyRef(got.String()); again != got {
			t.Errorf("String() of %+v does not round-trip: %q", got, got.String())
		}
	}
}

func TestKeyRefMatches(t *testing.T) {
	cfg := KeyRef{Vault: "v.vault.azure.net", Name: "k"}
	for _, tc := range []struct {
		other KeyRef
		want  bool
	}{
		{KeyRef{Vault: "V.vault.azure.net", Name: "k", Version: "abc"}, true},
		{KeyRef{Vault: "v.vault.azure.net", Name: "k"}, true},
		{KeyRef{Vault: "evil.vault.azure.net", Name: "k"}, false},
		{KeyRef{Vault: "v.vault.azure.net", Name: "K"}, false},
	} {
		if got := cfg.Matches(tc.other); got != tc.want {
			t.Errorf("%v.Matches(%v) = %v", cfg, tc.other, got)
		}
	}
	pinned := KeyRef{Vault: "v.vault.azure.net", Name: "k", Version: "1"}
	if pinned.Matches(KeyRef{Vault: "v.vault.azure.net", Name: "k", Version: "2"}) {
		t.Error("a pinned version matched another version")
	}
}

func pemBytes(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func jsonOf(tb testing.TB, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestParseKey(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	ecPKCS8, _ := x509.MarshalPKCS8PrivateKey(ecKey)
	sec1, _ := x509.MarshalECPrivateKey(ecKey)
	pkix, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	p224pkix, _ := x509.MarshalPKIXPublicKey(&p224.PublicKey)
	oct := bytes.Repeat([]byte{9}, 32)
	rsaJWK, _ := jwk.FromRaw(rsaKey)
	rsaJWK.Set(jwk.KeyIDKey, "https://v.vault.azure.net/keys/r/abc")
	rsaJWKJSON := jsonOf(t, rsaJWK)
	var m map[string]any
	json.Unmarshal(rsaJWKJSON, &m)
	m["kty"] = "RSA-HSM"
	hsmJWK := jsonOf(t, m)
	octJWK := jsonOf(t, map[string]string{"kty": "oct-HSM", "k": base64.RawURLEncoding.EncodeToString(oct)})

	tests := []struct {
		name        string
		in          []byte
		wantType    KeyType
		wantPrivate bool
		wantRef     string
		wantErr     string
	}{
		{"PKCS#8 RSA", pemBytes("PRIVATE KEY", pkcs8), KeyTypeRSA, true, "", ""},
		{"PKCS#1 RSA", pemBytes("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey)), KeyTypeRSA, true, "", ""},
		{"PKCS#8 EC", pemBytes("PRIVATE KEY", ecPKCS8), KeyTypeEC, true, "", ""},
		{"SEC1 EC", pemBytes("EC PRIVATE KEY", sec1), KeyTypeEC, true, "", ""},
		{"PKIX public", pemBytes("PUBLIC KEY", pkix), KeyTypeRSA, false, "", ""},
		{"PKCS#1 public", pemBytes("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey)), KeyTypeRSA, false, "", ""},
		{"raw oct", oct, KeyTypeOct, true, "", ""},
		{"JWK RSA with Key Vault kid", rsaJWKJSON, KeyTypeRSA, true, "https://v.vault.azure.net/keys/r/abc", ""},
		{"JWK RSA-HSM", hsmJWK, KeyTypeRSA, true, "https://v.vault.azure.net/keys/r/abc", ""},
		{"JWK oct-HSM", octJWK, KeyTypeOct, true, "", ""},
		{"JWK Set of one", jsonOf(t, map[string]any{"keys": []json.RawMessage{octJWK}}), KeyTypeOct, true, "", ""},
		{"Key Vault bundle", jsonOf(t, map[string]any{"key": json.RawMessage(rsaJWKJSON), "attributes": map[string]any{}}), KeyTypeRSA, true, "https://v.vault.azure.net/keys/r/abc", ""},
		{"JWK Set of two", jsonOf(t, map[string]any{"keys": []json.RawMessage{octJWK, octJWK}}), "", false, "", "exactly one key"},
		{"P-224", pemBytes("PUBLIC KEY", p224pkix), "", false, "", "P-224"},
		{"certificate", pemBytes("CERTIFICATE", []byte{1}), "", false, "", "PEM block \"CERTIFICATE\""},
		{"two PEM blocks", append(pemBytes("PUBLIC KEY", pkix), pemBytes("PUBLIC KEY", pkix)...), "", false, "", "more than one"},
		{"31 bytes", oct[:31], "", false, "", "neither PEM, JWK"},
		{"garbage JSON", []byte("{nope"), "", false, "", "JSON"},
		{"corrupt DER", pemBytes("PRIVATE KEY", []byte{0x30, 0x01}), "", false, "", "unrecognised key format"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, err := ParseKey(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrKeyFormat) {
					t.Fatalf("ParseKey = %v, want ErrKeyFormat containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if k.Type != tc.wantType || k.IsPrivate() != tc.wantPrivate {
				t.Fatalf("ParseKey = type %s private %v; want %s %v", k.Type, k.IsPrivate(), tc.wantType, tc.wantPrivate)
			}
			if got := k.Ref; (tc.wantRef == "" && got != KeyRef{}) || (tc.wantRef != "" && got.String() != tc.wantRef) {
				t.Fatalf("Ref = %v, want %q", got, tc.wantRef)
			}
			if k.KEK() == nil {
				t.Fatal("KEK() is nil")
			}
		})
	}
}

func TestWipe(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	k, _ := FromCrypto(rsaKey)
	d := rsaKey.D
	k.Wipe()
	if d.Sign() != 0 || k.IsPrivate() {
		t.Fatal("RSA private exponent not wiped")
	}
	oct := bytes.Repeat([]byte{7}, 32)
	ko, _ := ParseKey(oct)
	buf := ko.Oct
	ko.Wipe()
	if !bytes.Equal(buf, make([]byte, 32)) {
		t.Fatal("oct key not wiped")
	}
}

func TestCloneIsIndependent(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, orig := range []*Key{
		must(FromCrypto(rsaKey)), must(FromCrypto(ecKey)), must(ParseKey(bytes.Repeat([]byte{5}, 32))),
	} {
		c := orig.Clone()
		orig.Wipe()
		if !c.IsPrivate() {
			t.Fatalf("%s clone lost its private part", c.Type)
		}
		switch p := c.Private.(type) {
		case *rsa.PrivateKey:
			if p.D.Sign() == 0 || p.Validate() != nil {
				t.Fatal("RSA clone was wiped with the original")
			}
		case *ecdsa.PrivateKey:
			if b, err := p.Bytes(); err != nil || bytes.Equal(b, make([]byte, len(b))) {
				t.Fatal("EC clone was wiped with the original")
			}
		default:
			if bytes.Equal(c.Oct, make([]byte, 32)) {
				t.Fatal("oct clone was wiped with the original")
			}
		}
	}
}

func must(k *Key, err error) *Key {
	if err != nil {
		panic(err)
	}
	return k
}

func TestMarshalViews(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	for _, k := range []*Key{must(FromCrypto(rsaKey)), must(ParseKey(bytes.Repeat([]byte{5}, 32)))} {
		k.Ref = KeyRef{Vault: "v.vault.azure.net", Name: "k"}
		for _, f := range []string{FormatDefault, FormatJWK, FormatPubPEM} {
			b, err := k.Marshal(f)
			if k.Type == KeyTypeOct && f == FormatPubPEM {
				if !errors.Is(err, ErrNoPublicKey) {
					t.Fatalf("oct pub.pem: %v", err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s %s: %v", k.Type, f, err)
			}
			back, err := ParseKey(b)
			if err != nil {
				t.Fatalf("%s %s does not parse back: %v", k.Type, f, err)
			}
			if back.Type != k.Type || back.IsPrivate() != (f != FormatPubPEM) {
				t.Fatalf("%s %s parsed back as %s private=%v", k.Type, f, back.Type, back.IsPrivate())
			}
			if f == FormatJWK && back.Ref != k.Ref {
				t.Fatalf("JWK kid lost: %v", back.Ref)
			}
		}
	}
}

// TestOctJWKMatchesJWX: the hand-written JWK of a symmetric key is the
// one jwx writes, byte for byte, with and without a key id.
func TestOctJWKMatchesJWX(t *testing.T) {
	for _, ref := range []KeyRef{{}, {Vault: "v.vault.azure.net", Name: "k", Version: "0123"}} {
		k := must(ParseKey(bytes.Repeat([]byte{7}, 32)))
		k.Ref = ref
		got, err := k.Marshal(FormatJWK)
		if err != nil {
			t.Fatal(err)
		}
		jk, err := jwk.FromRaw(k.Oct)
		if err != nil {
			t.Fatal(err)
		}
		if ref != (KeyRef{}) {
			jk.Set(jwk.KeyIDKey, ref.String())
		}
		want, _ := json.Marshal(jk)
		if string(got) != string(want)+"\n" {
			t.Fatalf("oct JWK\n got %s\nwant %s", got, want)
		}
	}
}

// TestKeyOpsInJWKView: a key's operations (from the release payload or a
// parsed JWK, Key Vault's import and export included) appear as key_ops in
// its JWK view, survive Clone and parse back; malformed lists are refused.
func TestKeyOpsInJWKView(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ref := KeyRef{Vault: "v.vault.azure.net", Name: "k", Version: "0123abcd"}
	ops := []string{"encrypt", "decrypt", "wrapKey", "unwrapKey", "import", "export"}
	for _, k := range []*Key{
		{Type: KeyTypeOct, Oct: bytes.Repeat([]byte{1}, 32)},
		must(FromCrypto(rsaKey)),
		must(FromCrypto(ecKey)),
	} {
		k.Ref, k.Ops = ref, ops
		b, err := k.Clone().Marshal(FormatJWK)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil || !bytes.HasSuffix(b, []byte("}\n")) {
			t.Fatalf("%s JWK view is not one JSON object and a newline: %v\n%s", k.Type, err, b)
		}
		if got, _ := json.Marshal(m["key_ops"]); string(got) != `["encrypt","decrypt","wrapKey","unwrapKey","import","export"]` {
			t.Fatalf("%s JWK view has key_ops %s", k.Type, got)
		}
		back, err := ParseKey(b)
		if err != nil || strings.Join(back.Ops, ",") != strings.Join(ops, ",") || back.Ref != ref {
			t.Fatalf("%s JWK view parses back to ops %v ref %v: %v", k.Type, back.Ops, back.Ref, err)
		}
		// Without ops, no key_ops member.
		k.Ops = nil
		if b, _ := k.Marshal(FormatJWK); bytes.Contains(b, []byte("key_ops")) {
			t.Fatalf("%s JWK view without ops: %s", k.Type, b)
		}
	}
	for _, bad := range []string{`["encrypt",1]`, `["enc rypt"]`, `"encrypt"`, `[` + strings.Repeat(`"sign",`, 16) + `"sign"]`} {
		j := `{"kty":"oct","k":"` + base64.RawURLEncoding.EncodeToString(make([]byte, 32)) + `","key_ops":` + bad + `}`
		if _, err := ParseKey([]byte(j)); !errors.Is(err, ErrKeyFormat) {
			t.Errorf("key_ops %s: %v, want ErrKeyFormat", bad, err)
		}
	}
}
