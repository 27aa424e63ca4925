package vault

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/big"
	"net"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"

	devmaa "github.com/skrfs/skrfs/internal/devstack/maa"
	"github.com/skrfs/skrfs/keyrelease"
	"github.com/skrfs/skrfs/keyrelease/akv"
	"github.com/skrfs/skrfs/keyrelease/attest/fakesnp"
	"github.com/skrfs/skrfs/keyrelease/maa"
	"github.com/skrfs/skrfs/keyrelease/skr"
)

type staticCred struct{}

func (staticCred) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: "test-token", ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// deviceEvidence adapts the fake device to skr.EvidenceSource.
type deviceEvidence struct{ d *fakesnp.Device }

func (e deviceEvidence) Evidence(_ context.Context, rd [64]byte) (maa.Evidence, error) {
	r, err := e.d.Report(rd)
	return maa.Evidence{Report: r, CertChainPEM: e.d.CertChainPEM()}, err
}

type env struct {
	vault    *Server
	vaultURL string
	maaURL   string
	kc       *azkeys.Client
	rel      *skr.Releaser
	hostData string
	stateDir string
	ts       *httptest.Server
	signer   *rsa.PrivateKey
	chain    []*x509.Certificate
	roots    *x509.CertPool
	maaKey   *rsa.PrivateKey
}

func newEnv(t *testing.T) *env {
	t.Helper()
	policyText := []byte("package policy\napi_version := \"0.10.0\"")
	dev, err := fakesnp.New(fakesnp.Config{HostData: fakesnp.HostDataFromPolicy(policyText)})
	if err != nil {
		t.Fatal(err)
	}
	hd := fakesnp.HostDataFromPolicy(policyText)
	maaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	maaCert := selfSigned(t, maaKey, "maa")
	maaTS := httptest.NewUnstartedServer(nil)
	maaTS.StartTLS()
	t.Cleanup(maaTS.Close)
	ms, err := devmaa.New(devmaa.Options{Issuer: maaTS.URL, Key: maaKey, Chain: []*x509.Certificate{maaCert}, ExtraRoots: dev.Roots()})
	if err != nil {
		t.Fatal(err)
	}
	maaTS.Config.Handler = ms

	// The release-response signer: a CA and a leaf for 127.0.0.1.
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	signer, _ := rsa.GenerateKey(rand.Reader, 2048)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "vault"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	leafDER, _ := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &signer.PublicKey, caKey)
	leaf, _ := x509.ParseCertificate(leafDER)
	roots := x509.NewCertPool()
	roots.AddCert(ca)

	e := &env{stateDir: t.TempDir(), maaURL: maaTS.URL, hostData: hex.EncodeToString(hd[:]), signer: signer,
		chain: []*x509.Certificate{leaf, ca}, roots: roots, maaKey: maaKey}
	e.ts = httptest.NewUnstartedServer(nil)
	e.ts.StartTLS()
	t.Cleanup(e.ts.Close)
	e.restart(t)
	e.vaultURL = e.ts.URL
	e.kc, err = azkeys.NewClient(e.ts.URL, staticCred{}, &azkeys.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: e.ts.Client()},
		DisableChallengeResourceVerification: true})
	if err != nil {
		t.Fatal(err)
	}
	e.rel = &skr.Releaser{Evidence: deviceEvidence{dev}, MAA: &maa.Client{BaseURL: maaTS.URL, HTTPClient: maaTS.Client()},
		Vault: &akv.Client{Credential: staticCred{}, Transport: e.ts.Client(), Roots: roots, Hosts: []string{strings.TrimPrefix(e.ts.URL, "https://")}}}
	return e
}

// restart replaces the vault with a new instance on the same state.
func (e *env) restart(t *testing.T) {
	v, err := New(Options{StateDir: e.stateDir, Signer: e.signer, Chain: e.chain, Authority: "https://login.microsoftonline.com/tenant",
		HTTPClient: e.ts.Client()})
	if err != nil {
		t.Fatal(err)
	}
	e.vault = v
	e.ts.Config.Handler = v
}

func selfSigned(t *testing.T, k *rsa.PrivateKey, cn string) *x509.Certificate {
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

func (e *env) policy(hostData string) []byte {
	return []byte(`{"version":"1.0.0","anyOf":[{"authority":"` + e.maaURL + `","allOf":[` +
		`{"claim":"x-ms-sevsnpvm-hostdata","equals":"` + hostData + `"},` +
		`{"claim":"x-ms-sevsnpvm-is-debuggable","equals":"false"},` +
		`{"claim":"x-ms-sevsnpvm-vmpl","equals":"0"},` +
		`{"claim":"x-ms-attestation-type","equals":"sevsnpvm"}]}]}`)
}

func (e *env) create(t *testing.T, name string, kty azkeys.KeyType, size int32, pol []byte) string {
	t.Helper()
	ct := "application/json; charset=utf-8"
	params := azkeys.CreateKeyParameters{Kty: &kty, KeyAttributes: &azkeys.KeyAttributes{Exportable: ptr(true)},
		ReleasePolicy: &azkeys.KeyReleasePolicy{ContentType: &ct, EncodedPolicy: pol}}
	if size != 0 {
		params.KeySize = &size
	}
	if kty == azkeys.KeyTypeECHSM {
		params.Curve = ptr(azkeys.CurveNameP384)
	}
	resp, err := e.kc.CreateKey(context.Background(), name, params, nil)
	if err != nil {
		t.Fatalf("CreateKey %s: %v", name, err)
	}
	return string(*resp.Key.KID)
}

func ptr[T any](v T) *T { return &v }

func ref(t *testing.T, kid string) keyrelease.KeyRef {
	r, err := keyrelease.ParseKeyRef(kid)
	if err != nil {
		t.Fatal(err)
	}
	r.Version = ""
	return r
}

func TestReleaseEndToEnd(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	rsaKID := e.create(t, "demo-rsa", azkeys.KeyTypeRSAHSM, 3072, e.policy(e.hostData))
	ecKID := e.create(t, "demo-ec", azkeys.KeyTypeECHSM, 0, e.policy(e.hostData))
	octKID := e.create(t, "demo-oct", azkeys.KeyTypeOctHSM, 256, e.policy(e.hostData))
	deniedKID := e.create(t, "denied", azkeys.KeyTypeOctHSM, 256, e.policy(strings.Repeat("00", 32)))

	for _, enc := range []string{"CKM_RSA_AES_KEY_WRAP", "RSA_AES_KEY_WRAP_256", "RSA_AES_KEY_WRAP_384"} {
		e.rel.Vault.Enc = enc
		k, err := e.rel.Release(ctx, ref(t, rsaKID))
		if err != nil {
			t.Fatalf("%s: release RSA: %v", enc, err)
		}
		got, _ := e.kc.GetKey(ctx, "demo-rsa", "", nil)
		if k.Type != keyrelease.KeyTypeRSA || !bytes.Equal(k.Private.(*rsa.PrivateKey).N.Bytes(), got.Key.N) || k.Bits() != 3072 {
			t.Fatalf("%s: released RSA key does not match the vault's public key", enc)
		}
		if k.Ref.Version == "" {
			t.Fatal("released key lacks its version")
		}
	}
	e.rel.Vault.Enc = ""
	ek, err := e.rel.Release(ctx, ref(t, ecKID))
	if err != nil || ek.Type != keyrelease.KeyTypeEC || ek.Bits() != 384 {
		t.Fatalf("release EC: %v", err)
	}
	ok, err := e.rel.Release(ctx, ref(t, octKID))
	if err != nil || len(ok.Oct) != 32 {
		t.Fatalf("release oct: %v", err)
	}
	_, err = e.rel.Release(ctx, ref(t, deniedKID))
	if !errors.Is(err, keyrelease.ErrDenied) || !strings.Contains(err.Error(), "claim x-ms-sevsnpvm-hostdata") {
		t.Fatalf("denied release: %v", err)
	}
	if st := e.vault.Stats("denied"); st.Denied != 2 || st.Allowed != 0 { // one retry with a fresh token
		t.Fatalf("denied stats %+v", st)
	}
	if a, _ := e.rel.Stats(); a != 2 {
		t.Fatalf("%d attestations, want 2 (one token reused for every release, one fresh after the denial)", a)
	}
	// Restart keeps keys; the oct key released afterwards is the same.
	e.restart(t)
	ok2, err := e.rel.Release(ctx, ref(t, octKID))
	if err != nil || !bytes.Equal(ok.Oct, ok2.Oct) {
		t.Fatalf("after restart: %v", err)
	}
	// GetKey never returns private material.
	g, _ := e.kc.GetKey(ctx, "demo-oct", "", nil)
	if g.Key.K != nil || g.ReleasePolicy == nil {
		t.Fatalf("GetKey of an oct key: k=%v policy=%v", g.Key.K, g.ReleasePolicy)
	}
}

func TestReleaseRefusals(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	kid := e.create(t, "k", azkeys.KeyTypeOctHSM, 256, e.policy(e.hostData))
	// Not exportable.
	kty := azkeys.KeyTypeOctHSM
	if _, err := e.kc.CreateKey(ctx, "plain", azkeys.CreateKeyParameters{Kty: &kty}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rel.Release(ctx, keyrelease.KeyRef{Vault: ref(t, kid).Vault, Name: "plain"}); !errors.Is(err, keyrelease.ErrDenied) ||
		!strings.Contains(err.Error(), "not exportable") {
		t.Fatalf("non-exportable: %v", err)
	}
	// Missing key.
	if _, err := e.rel.Release(ctx, keyrelease.KeyRef{Vault: ref(t, kid).Vault, Name: "nope"}); !errors.Is(err, keyrelease.ErrNotFound) {
		t.Fatalf("missing key: %v", err)
	}
	// Policy changed to deny: the next release is refused.
	deny := e.policy("ff")
	ct := "application/json; charset=utf-8"
	if _, err := e.kc.UpdateKey(ctx, "k", "", azkeys.UpdateKeyParameters{ReleasePolicy: &azkeys.KeyReleasePolicy{ContentType: &ct, EncodedPolicy: deny}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rel.Release(ctx, ref(t, kid)); !errors.Is(err, keyrelease.ErrDenied) {
		t.Fatalf("after policy change: %v", err)
	}
	// A malformed policy is refused at creation.
	bad := azkeys.KeyTypeOctHSM
	if _, err := e.kc.CreateKey(ctx, "bad", azkeys.CreateKeyParameters{Kty: &bad, KeyAttributes: &azkeys.KeyAttributes{Exportable: ptr(true)},
		ReleasePolicy: &azkeys.KeyReleasePolicy{EncodedPolicy: []byte(`{"version":"1.0.0","anyOf":[]}`)}}, nil); err == nil ||
		!strings.Contains(err.Error(), "release_policy") {
		t.Fatalf("malformed policy accepted: %v", err)
	}
	// A response signed by a certificate the client does not trust.
	e.rel.Vault.Roots = x509.NewCertPool()
	e.kc.UpdateKey(ctx, "k", "", azkeys.UpdateKeyParameters{ReleasePolicy: &azkeys.KeyReleasePolicy{ContentType: &ct, EncodedPolicy: e.policy(e.hostData)}}, nil)
	if _, err := e.rel.Release(ctx, ref(t, kid)); !errors.Is(err, akv.ErrBadResponse) {
		t.Fatalf("untrusted signer: %v", err)
	}
}

func TestTokenReuseAndRefresh(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	kid := e.create(t, "k", azkeys.KeyTypeOctHSM, 256, e.policy(e.hostData))
	for i := 0; i < 3; i++ {
		if _, err := e.rel.Release(ctx, ref(t, kid)); err != nil {
			t.Fatal(err)
		}
	}
	if a, _ := e.rel.Stats(); a != 1 {
		t.Fatalf("%d attestations for 3 releases; the token should be reused", a)
	}
	// Close to the token's expiry (8 h): attest again before releasing.
	e.rel.Now = func() time.Time { return time.Now().Add(8*time.Hour - 4*time.Minute) }
	if _, err := e.rel.Release(ctx, ref(t, kid)); err != nil {
		t.Fatal(err)
	}
	if a, _ := e.rel.Stats(); a != 2 {
		t.Fatalf("%d attestations; a token about to expire must be refreshed", a)
	}
}

// TestReleaseRefusesBadTokens sends crafted attestation tokens straight to
// the release API.
func TestReleaseRefusesBadTokens(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.create(t, "k", azkeys.KeyTypeOctHSM, 256, e.policy(e.hostData))
	runtime := map[string]any{"keys": []any{map[string]any{"kty": "RSA", "e": "AQAB", "kid": "x", "key_ops": []any{"encrypt"},
		"n": "xjlCRBqkOogbU7iAFE2rDdE4LrJuGs3SzRcF5lEWadGQFPnD9bcGqYKwKnvCrXaqWTuZVFd4cUVbGWwXdK9e2wQ6EnLgwN2vMzp9xo3RPpiKpRk0uFmzpNmV4m1Xj3V6y2GVKzhY5uPPJ3cYthVbUaNoZPSC8ONfBp6tUZsC6x-fmxzMWmlo3Pzj3p_Fz2bXnTyQc1a1lDJqHPMgRRLJ8Q8hgF5zWqFZXh1G1w3qSQpR6RkaxFUfXT2F7ELy1TjSK7xCQxs7QcNgWoLQ6g4OAoDl5Fzx_yI0LYRLkGvb2FT1kpmxlYIfgMbYqxM0BIa3hLuM-dXj6EnJzG1s1Yq3JqQ"}}}
	good := map[string]any{"iss": e.maaURL, "iat": time.Now().Unix(), "nbf": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix(),
		"x-ms-attestation-type": "sevsnpvm", "x-ms-sevsnpvm-hostdata": e.hostData, "x-ms-sevsnpvm-is-debuggable": false,
		"x-ms-sevsnpvm-vmpl": 0, "x-ms-runtime": runtime}
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	with := func(k string, v any) map[string]any {
		m := map[string]any{}
		for a, b := range good {
			m[a] = b
		}
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	for _, tc := range []struct {
		name   string
		claims map[string]any
		key    *rsa.PrivateKey
		want   string
	}{
		{"wrong signer", good, other, "attestation token rejected"},
		{"expired", with("exp", time.Now().Add(-time.Hour).Unix()), e.maaKey, "attestation token rejected"},
		{"issuer not in the policy", with("iss", "https://evil.attest.azure.net"), e.maaKey, "is not an authority"},
		{"no runtime key", with("x-ms-runtime", nil), e.maaKey, "x-ms-runtime"},
		{"claim mismatch", with("x-ms-sevsnpvm-is-debuggable", true), e.maaKey, "claim x-ms-sevsnpvm-is-debuggable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := jwt.New()
			for k, v := range tc.claims {
				tok.Set(k, v)
			}
			hdr := jws.NewHeaders()
			hdr.Set(jws.KeyIDKey, maaKID(t, e))
			signed, err := jwt.Sign(tok, jwt.WithKey(jwa.RS256, tc.key, jws.WithProtectedHeaders(hdr)))
			if err != nil {
				t.Fatal(err)
			}
			target := string(signed)
			_, err = e.kc.Release(ctx, "k", "", azkeys.ReleaseParameters{TargetAttestationToken: &target}, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("release: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// maaKID reads the signing key id from the MAA stand-in's JWKS.
func maaKID(t *testing.T, e *env) string {
	resp, err := e.ts.Client().Get(e.maaURL + "/certs")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set struct{ Keys []struct{ Kid string } }
	json.NewDecoder(resp.Body).Decode(&set)
	return set.Keys[0].Kid
}

// TestReleaseCarriesKeyOps: the release payload carries the key's key_ops,
// as Key Vault's does: those it was created or imported with, else every
// operation its type permits.
func TestReleaseCarriesKeyOps(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ct := "application/json; charset=utf-8"
	ops := []*azkeys.KeyOperation{ptr(azkeys.KeyOperationWrapKey), ptr(azkeys.KeyOperationUnwrapKey)}
	if _, err := e.kc.CreateKey(ctx, "with-ops", azkeys.CreateKeyParameters{Kty: ptr(azkeys.KeyTypeOctHSM), KeyOps: ops,
		KeyAttributes: &azkeys.KeyAttributes{Exportable: ptr(true)},
		ReleasePolicy: &azkeys.KeyReleasePolicy{ContentType: &ct, EncodedPolicy: e.policy(e.hostData)}}, nil); err != nil {
		t.Fatal(err)
	}
	imported := &azkeys.JSONWebKey{Kty: ptr(azkeys.KeyTypeOctHSM), K: bytes.Repeat([]byte{7}, 32),
		KeyOps: []*azkeys.KeyOperation{ptr(azkeys.KeyOperationEncrypt)}}
	if _, err := e.kc.ImportKey(ctx, "imported", azkeys.ImportKeyParameters{Key: imported, HSM: ptr(true),
		KeyAttributes: &azkeys.KeyAttributes{Exportable: ptr(true)},
		ReleasePolicy: &azkeys.KeyReleasePolicy{ContentType: &ct, EncodedPolicy: e.policy(e.hostData)}}, nil); err != nil {
		t.Fatal(err)
	}
	e.create(t, "rsa-default", azkeys.KeyTypeRSAHSM, 2048, e.policy(e.hostData))
	e.create(t, "oct-default", azkeys.KeyTypeOctHSM, 256, e.policy(e.hostData))
	for name, want := range map[string][]string{
		"with-ops":    {"wrapKey", "unwrapKey"},
		"imported":    {"encrypt"},
		"rsa-default": {"encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"},
		"oct-default": {"encrypt", "decrypt", "wrapKey", "unwrapKey"},
	} {
		k, err := e.rel.Release(ctx, keyrelease.KeyRef{Vault: strings.TrimPrefix(e.ts.URL, "https://"), Name: name})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !slices.Equal(k.Ops, want) {
			t.Errorf("%s: released with key_ops %v, want %v", name, k.Ops, want)
		}
		// The key bundle reports the same operations.
		got, err := e.kc.GetKey(ctx, name, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		var bundleOps []string
		for _, o := range got.Key.KeyOps {
			bundleOps = append(bundleOps, string(*o))
		}
		if !slices.Equal(bundleOps, want) {
			t.Errorf("%s: key bundle has key_ops %v, want %v", name, bundleOps, want)
		}
	}
}
