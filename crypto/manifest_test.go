package crypto

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

var manifestTime = time.Date(2026, 12, 4, 15, 0, 0, 0, time.UTC)

func testManifest(n int) *Manifest {
	m := &Manifest{Dataset: "ds-1", Epoch: 7, Created: manifestTime}
	for i := range n {
		e := ManifestEntry{Name: fmt.Sprintf("dir%02d/file-%07d.csv", i%50, i), Size: int64(i * 4096)}
		e.HeaderSHA256[0], e.HeaderSHA256[1], e.HeaderSHA256[31] = byte(i), byte(i>>8), 0xaa
		m.Entries = append(m.Entries, e)
	}
	if err := SortEntries(m.Entries); err != nil {
		panic(err)
	}
	return m
}

func signers(tb testing.TB) map[string]*LocalSigner {
	k := keysForTest(tb)
	out := map[string]*LocalSigner{}
	for alg, key := range map[string]crypto.Signer{AlgES256: k.p256, AlgES384: k.p384, AlgPS256: k.rsa2048} {
		s, err := NewLocalSigner(key)
		if err != nil {
			tb.Fatal(err)
		}
		if s.Alg() != alg {
			tb.Fatalf("alg %s, want %s", s.Alg(), alg)
		}
		out[alg] = s
	}
	return out
}

func TestManifestRoundTrip(t *testing.T) {
	for alg, s := range signers(t) {
		t.Run(alg, func(t *testing.T) {
			m := testManifest(100)
			tok, err := SignManifest(m, s)
			if err != nil {
				t.Fatal(err)
			}
			v, err := NewManifestVerifier(s.Public())
			if err != nil {
				t.Fatal(err)
			}
			got, err := VerifyManifest(tok, v)
			if err != nil {
				t.Fatal(err)
			}
			if got.Dataset != m.Dataset || got.Epoch != m.Epoch || !got.Created.Equal(m.Created) || got.Alg != alg || got.KeyID != v.KeyIDs()[0] {
				t.Fatalf("got %+v", got)
			}
			if len(got.Entries) != len(m.Entries) {
				t.Fatalf("%d entries", len(got.Entries))
			}
			for i := range m.Entries {
				if got.Entries[i] != m.Entries[i] {
					t.Fatalf("entry %d: %+v != %+v", i, got.Entries[i], m.Entries[i])
				}
			}
			e, ok := got.Lookup(m.Entries[42].Name)
			if !ok || e != m.Entries[42] {
				t.Fatal("Lookup")
			}
			if _, ok := got.Lookup("nope"); ok {
				t.Fatal("Lookup of an unlisted name")
			}
		})
	}
}

// TestManifestJWXInterop: the manifests are standard JWS. jwx verifies what
// we sign, we verify what jwx signs, and the kid is jwx's RFC 7638
// thumbprint.
func TestManifestJWXInterop(t *testing.T) {
	k := keysForTest(t)
	for alg, s := range signers(t) {
		t.Run(alg, func(t *testing.T) {
			pub := s.Public()
			tok, err := SignManifest(testManifest(3), s)
			if err != nil {
				t.Fatal(err)
			}
			payload, err := jws.Verify(tok, jws.WithKey(jwa.SignatureAlgorithm(alg), pub))
			if err != nil {
				t.Fatalf("jwx rejects our manifest: %v", err)
			}
			want, _ := EncodeManifestPayload(testManifest(3))
			if !bytes.Equal(payload, want) {
				t.Fatal("payload differs")
			}
			jk, err := jwk.FromRaw(pub)
			if err != nil {
				t.Fatal(err)
			}
			tp, err := jk.Thumbprint(crypto.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			kid, _ := JWKThumbprint(pub)
			if kid != base64.RawURLEncoding.EncodeToString(tp) {
				t.Fatalf("kid %s is not the RFC 7638 thumbprint", kid)
			}

			// jwx signs, we verify.
			var priv any
			switch alg {
			case AlgES256:
				priv = k.p256
			case AlgES384:
				priv = k.p384
			default:
				priv = k.rsa2048
			}
			hdrs := jws.NewHeaders()
			_ = hdrs.Set(jws.KeyIDKey, kid)
			_ = hdrs.Set(jws.TypeKey, "skrfs-manifest+jws")
			theirs, err := jws.Sign(want, jws.WithKey(jwa.SignatureAlgorithm(alg), priv, jws.WithProtectedHeaders(hdrs)))
			if err != nil {
				t.Fatal(err)
			}
			v, _ := NewManifestVerifier(pub)
			if _, err := VerifyManifest(theirs, v); err != nil {
				t.Fatalf("we reject jwx's manifest: %v", err)
			}
		})
	}
}

// signRaw signs arbitrary protected-header and payload JSON, to test what a
// reader does with a correctly signed but invalid manifest.
func signRaw(t *testing.T, s ManifestSigner, hdr, payload string) []byte {
	t.Helper()
	in := b64([]byte(hdr)) + "." + b64([]byte(payload))
	sig, err := s.SignDigest(ManifestDigest(s.Alg(), []byte(in)))
	if err != nil {
		t.Fatal(err)
	}
	return []byte(in + "." + b64(sig))
}

func TestManifestRefused(t *testing.T) {
	ss := signers(t)
	es := ss[AlgES256]
	kid, _ := JWKThumbprint(es.Public())
	hdr := `{"alg":"ES256","typ":"skrfs-manifest+jws","kid":"` + kid + `"}`
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherSigner, _ := NewLocalSigner(other)
	v, err := NewManifestVerifier(es.Public(), ss[AlgPS256].Public())
	if err != nil {
		t.Fatal(err)
	}
	good, err := SignManifest(testManifest(5), es)
	if err != nil {
		t.Fatal(err)
	}
	unpinned, _ := SignManifest(testManifest(5), otherSigner)
	parts := strings.Split(string(good), ".")
	tamperedPayload := func() []byte {
		p, _ := base64.RawURLEncoding.DecodeString(parts[1])
		p = bytes.Replace(p, []byte(`"epoch":7`), []byte(`"epoch":8`), 1)
		return []byte(parts[0] + "." + b64(p) + "." + parts[2])
	}()
	// An ES256 header naming the RSA key's kid: alg and key disagree.
	rsaKid, _ := JWKThumbprint(ss[AlgPS256].Public())
	algMismatch := signRaw(t, es, `{"alg":"ES256","typ":"skrfs-manifest+jws","kid":"`+rsaKid+`"}`, `{}`)
	pl := func(entries string) string {
		return `{"v":1,"dataset":"ds","epoch":3,"created":"2026-12-04T15:00:00Z","entries":[` + entries + `]}`
	}
	h64 := strings.Repeat("ab", 32)
	ent := func(name, size string) string {
		return `{"name":"` + name + `","size":` + size + `,"sha256":"` + h64 + `"}`
	}
	cases := []struct {
		name string
		tok  []byte
		want error
	}{
		{"unpinned signer", unpinned, ErrManifestSigner},
		{"alg does not fit the pinned key", algMismatch, ErrManifestSigner},
		{"tampered payload", tamperedPayload, ErrManifestSignature},
		{"flipped signature", []byte(parts[0] + "." + parts[1] + "." + flipB64(parts[2])), ErrManifestSignature},
		{"non-canonical base64 signature (same bytes)", []byte(parts[0] + "." + parts[1] + "." + nonCanonical(parts[2])), ErrManifestSignature},
		{"truncated", good[:len(good)/2], ErrManifestMalformed},
		{"truncated signature", good[:len(good)-3], ErrManifestSignature},
		{"empty", nil, ErrManifestMalformed},
		{"garbage", []byte("not a manifest at all"), ErrManifestMalformed},
		{"two parts", []byte(parts[0] + "." + parts[1]), ErrManifestMalformed},
		{"four parts", append(bytes.Clone(good), ".x"...), ErrManifestMalformed},
		{"alg none", signRaw(t, es, `{"alg":"none","typ":"skrfs-manifest+jws","kid":"`+kid+`"}`, pl("")), ErrManifestMalformed},
		{"HS256", signRaw(t, es, `{"alg":"HS256","typ":"skrfs-manifest+jws","kid":"`+kid+`"}`, pl("")), ErrManifestMalformed},
		{"wrong typ", signRaw(t, es, `{"alg":"ES256","typ":"JWT","kid":"`+kid+`"}`, pl("")), ErrManifestMalformed},
		{"crit", signRaw(t, es, `{"alg":"ES256","typ":"skrfs-manifest+jws","kid":"`+kid+`","crit":["x"]}`, pl("")), ErrManifestMalformed},
		{"embedded jwk", signRaw(t, es, `{"alg":"ES256","typ":"skrfs-manifest+jws","kid":"`+kid+`","jwk":{}}`, pl("")), ErrManifestMalformed},
		{"no kid", signRaw(t, es, `{"alg":"ES256","typ":"skrfs-manifest+jws"}`, pl("")), ErrManifestMalformed},
		{"payload not JSON", signRaw(t, es, hdr, `{"v":1,`), ErrManifestMalformed},
		{"payload trailing data", signRaw(t, es, hdr, pl("")+"{}"), ErrManifestMalformed},
		{"payload version 2", signRaw(t, es, hdr, strings.Replace(pl(""), `"v":1`, `"v":2`, 1)), ErrManifestMalformed},
		{"unknown member", signRaw(t, es, hdr, strings.Replace(pl(""), `"v":1`, `"v":1,"x":1`, 1)), ErrManifestMalformed},
		{"no entries", signRaw(t, es, hdr, `{"v":1,"dataset":"ds","epoch":3,"created":"2026-12-04T15:00:00Z"}`), ErrManifestMalformed},
		{"epoch 0", signRaw(t, es, hdr, strings.Replace(pl(""), `"epoch":3`, `"epoch":0`, 1)), ErrManifestMalformed},
		{"epoch float", signRaw(t, es, hdr, strings.Replace(pl(""), `"epoch":3`, `"epoch":3.0`, 1)), ErrManifestMalformed},
		{"epoch 2^53", signRaw(t, es, hdr, strings.Replace(pl(""), `"epoch":3`, `"epoch":9007199254740992`, 1)), ErrManifestMalformed},
		{"epoch string", signRaw(t, es, hdr, strings.Replace(pl(""), `"epoch":3`, `"epoch":"3"`, 1)), ErrManifestMalformed},
		{"bad dataset", signRaw(t, es, hdr, strings.Replace(pl(""), `"ds"`, `"d s"`, 1)), ErrManifestMalformed},
		{"created with offset", signRaw(t, es, hdr, strings.Replace(pl(""), `15:00:00Z`, `15:00:00+01:00`, 1)), ErrManifestMalformed},
		{"created fractional", signRaw(t, es, hdr, strings.Replace(pl(""), `15:00:00Z`, `15:00:00.5Z`, 1)), ErrManifestMalformed},
		{"unsorted", signRaw(t, es, hdr, pl(ent("b", "1")+","+ent("a", "1"))), ErrManifestMalformed},
		{"duplicate", signRaw(t, es, hdr, pl(ent("a", "1")+","+ent("a", "2"))), ErrManifestMalformed},
		{"negative size", signRaw(t, es, hdr, pl(ent("a", "-1"))), ErrManifestMalformed},
		{"size exponent", signRaw(t, es, hdr, pl(ent("a", "1e3"))), ErrManifestMalformed},
		{"size leading zero", signRaw(t, es, hdr, pl(ent("a", "01"))), ErrManifestMalformed},
		{"reserved name", signRaw(t, es, hdr, pl(ent(".skrfs/manifest", "1"))), ErrManifestMalformed},
		{"dotdot name", signRaw(t, es, hdr, pl(ent("a/../b", "1"))), ErrManifestMalformed},
		{"leading slash", signRaw(t, es, hdr, pl(ent("/a", "1"))), ErrManifestMalformed},
		{"control char", signRaw(t, es, hdr, pl(ent(`a\u0007b`, "1"))), ErrManifestMalformed},
		{"bidi char", signRaw(t, es, hdr, pl(ent(`a\u202eb`, "1"))), ErrManifestMalformed},
		{"upper-case hex", signRaw(t, es, hdr, pl(strings.Replace(ent("a", "1"), h64, strings.ToUpper(h64), 1))), ErrManifestMalformed},
		{"short hex", signRaw(t, es, hdr, pl(strings.Replace(ent("a", "1"), h64, h64[2:], 1))), ErrManifestMalformed},
		{"missing name", signRaw(t, es, hdr, pl(`{"size":1,"sha256":"`+h64+`"}`)), ErrManifestMalformed},
		{"missing size", signRaw(t, es, hdr, pl(`{"name":"a","sha256":"`+h64+`"}`)), ErrManifestMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := VerifyManifest(c.tok, v)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v (%+v), want %v", err, m, c.want)
			}
			if m != nil {
				t.Fatal("a refused manifest returned a view")
			}
		})
	}
	// The control case: the well-formed payload is accepted.
	if _, err := VerifyManifest(signRaw(t, es, hdr, pl(ent("a", "1")+","+ent("b/c", "0"))), v); err != nil {
		t.Fatal(err)
	}
}

func flipB64(s string) string {
	b, _ := base64.RawURLEncoding.DecodeString(s)
	b[len(b)/2] ^= 1
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestSignManifestChecks(t *testing.T) {
	s := signers(t)[AlgES256]
	for name, m := range map[string]*Manifest{
		"no dataset":     {Epoch: 1, Created: manifestTime},
		"epoch 0":        {Dataset: "d", Created: manifestTime},
		"no time":        {Dataset: "d", Epoch: 1},
		"fractional":     {Dataset: "d", Epoch: 1, Created: manifestTime.Add(time.Millisecond)},
		"unsorted":       {Dataset: "d", Epoch: 1, Created: manifestTime, Entries: []ManifestEntry{{Name: "b"}, {Name: "a"}}},
		"reserved names": {Dataset: "d", Epoch: 1, Created: manifestTime, Entries: []ManifestEntry{{Name: ".skrfs/x"}}},
	} {
		if _, err := SignManifest(m, s); !errors.Is(err, ErrManifestMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	if _, err := NewLocalSigner(small); !errors.Is(err, ErrKeyType) {
		t.Errorf("RSA-1024 signer: %v", err)
	}
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if _, err := NewLocalSigner(p521); !errors.Is(err, ErrKeyType) {
		t.Errorf("P-521 signer: %v", err)
	}
}

// badSigner signs with one key and claims another: SignManifest catches it
// before anything is published.
type badSigner struct{ *LocalSigner }

func (b badSigner) Public() crypto.PublicKey {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return k.Public()
}

func TestSignManifestChecksSigner(t *testing.T) {
	if _, err := SignManifest(testManifest(1), badSigner{signers(t)[AlgES256]}); err == nil {
		t.Fatal("a signer whose signature does not match its public key was accepted")
	}
}

func TestManifestPayloadNames(t *testing.T) {
	// Names that need JSON escaping survive the round trip.
	s := signers(t)[AlgES256]
	m := &Manifest{Dataset: "d", Epoch: 1, Created: manifestTime, Entries: []ManifestEntry{
		{Name: `a "quoted" \ name`}, {Name: "caf\u00e9/<&>.txt"}, {Name: "\U0001F600"},
	}}
	_ = SortEntries(m.Entries)
	tok, err := SignManifest(m, s)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := NewManifestVerifier(s.Public())
	got, err := VerifyManifest(tok, v)
	if err != nil {
		t.Fatal(err)
	}
	for i := range m.Entries {
		if got.Entries[i].Name != m.Entries[i].Name {
			t.Fatalf("%q != %q", got.Entries[i].Name, m.Entries[i].Name)
		}
	}
	var raw map[string]any
	p, _ := EncodeManifestPayload(m)
	if err := json.Unmarshal(p, &raw); err != nil {
		t.Fatal(err)
	}
}

// TestInspectManifest decodes without keys (for `skrfs manifest show`) but
// still refuses malformed input.
func TestInspectManifest(t *testing.T) {
	s := signers(t)[AlgES384]
	tok, _ := SignManifest(testManifest(2), s)
	m, err := InspectManifest(tok)
	if err != nil || m.Epoch != 7 || m.Alg != AlgES384 {
		t.Fatalf("%+v %v", m, err)
	}
	if _, err := InspectManifest(tok[:20]); !errors.Is(err, ErrManifestMalformed) {
		t.Fatal(err)
	}
}

// nonCanonical sets an unused low bit of the last character of an unpadded
// base64url string of 64 bytes: lenient decoders return the same bytes.
func nonCanonical(s string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, s[len(s)-1])
	return s[:len(s)-1] + string(alphabet[last^1])
}
