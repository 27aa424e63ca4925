package crypto

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Frozen manifest vectors (docs/format.md section 12), generated once with
// SKRFS_WRITE_GOLDEN=1 and never regenerated. The signing keys are the
// version 1 vectors' keys; the pinned public keys are written beside the
// manifests. The independent Python reader (integration/pydecrypt) checks
// the same vectors.

const manifestGoldenDir = "testdata/v2/manifest"

type manifestGoldenEntry struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

type manifestGoldenCase struct {
	ID       string   `json:"id"`
	Manifest string   `json:"manifest"`
	Signers  []string `json:"signers"` // pinned public keys (PEM files)
	Error    string   `json:"error,omitempty"`
	// For valid vectors:
	Dataset string                `json:"dataset,omitempty"`
	Epoch   uint64                `json:"epoch,omitempty"`
	Created string                `json:"created,omitempty"`
	Alg     string                `json:"alg,omitempty"`
	Entries []manifestGoldenEntry `json:"entries,omitempty"`
	// V1Objects: each entry is one of the v1 vectors (name = the vector's
	// name) and its sha256 is the digest of that object's header.
	V1Objects map[string]string `json:"v1_objects,omitempty"`
}

var manifestGoldenErrors = map[string]error{
	"ErrManifestMalformed": ErrManifestMalformed, "ErrManifestSigner": ErrManifestSigner,
	"ErrManifestSignature": ErrManifestSignature,
}

func loadPublicPEM(tb testing.TB, path string) crypto.PublicKey {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		tb.Fatalf("%s: not PEM", path)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func TestManifestGoldenVectors(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(manifestGoldenDir, "vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []manifestGoldenCase
	if err := json.Unmarshal(raw, &cases); err != nil {
		t.Fatal(err)
	}
	if len(cases) < 8 {
		t.Fatalf("only %d manifest vectors", len(cases))
	}
	for _, c := range cases {
		t.Run(c.ID, func(t *testing.T) {
			tok, err := os.ReadFile(filepath.Join(manifestGoldenDir, c.Manifest))
			if err != nil {
				t.Fatal(err)
			}
			var pubs []crypto.PublicKey
			for _, s := range c.Signers {
				pubs = append(pubs, loadPublicPEM(t, filepath.Join(manifestGoldenDir, s)))
			}
			v, err := NewManifestVerifier(pubs...)
			if err != nil {
				t.Fatal(err)
			}
			m, err := VerifyManifest(tok, v)
			if c.Error != "" {
				want := manifestGoldenErrors[c.Error]
				if want == nil || !errors.Is(err, want) || m != nil {
					t.Fatalf("got %v, want %s", err, c.Error)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.Dataset != c.Dataset || m.Epoch != c.Epoch || m.Created.Format(time.RFC3339) != c.Created || m.Alg != c.Alg {
				t.Fatalf("got %s %d %s %s", m.Dataset, m.Epoch, m.Created, m.Alg)
			}
			if len(m.Entries) != len(c.Entries) {
				t.Fatalf("%d entries, want %d", len(m.Entries), len(c.Entries))
			}
			for i, e := range c.Entries {
				g := m.Entries[i]
				if g.Name != e.Name || g.Size != e.Size || hex.EncodeToString(g.HeaderSHA256[:]) != e.SHA256 {
					t.Fatalf("entry %d: %+v, want %+v", i, g, e)
				}
			}
			// The entries pin the v1 vectors: header digest and size match.
			for name, file := range c.V1Objects {
				obj, err := os.ReadFile(filepath.Join(goldenDir, file))
				if err != nil {
					t.Fatal(err)
				}
				h, err := ParseHeader(obj)
				if err != nil {
					t.Fatal(err)
				}
				e, ok := m.Lookup(name)
				size, _ := h.PlainSize(int64(len(obj)))
				if !ok || e.HeaderSHA256 != HeaderDigest(h.Bytes()) || e.Size != size {
					t.Fatalf("%s: entry %+v does not pin %s", name, e, file)
				}
			}
		})
	}
}

func TestWriteManifestGolden(t *testing.T) {
	if os.Getenv("SKRFS_WRITE_GOLDEN") != "1" {
		t.Skip("set SKRFS_WRITE_GOLDEN=1 to write new golden vectors (never for an existing version)")
	}
	if _, err := os.Stat(filepath.Join(manifestGoldenDir, "vectors.json")); err == nil {
		t.Skip("manifest vectors exist and are frozen; never regenerate them")
	}
	if err := os.MkdirAll(manifestGoldenDir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(manifestGoldenDir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	signer := func(keyFile string) *LocalSigner {
		var gc goldenCase
		gc.Key, gc.KeyType = keyFile, "ec"
		k := loadGoldenKey(t, gc).(crypto.Signer)
		s, err := NewLocalSigner(k)
		if err != nil {
			t.Fatal(err)
		}
		der, _ := x509.MarshalPKIXPublicKey(k.Public())
		write(strings.TrimSuffix(keyFile, ".pem")+".pub.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
		return s
	}
	p256, p384, rsa2048, other := signer("p256.pem"), signer("p384.pem"), signer("rsa2048.pem"), signer("p256-other.pem")
	var cases []manifestGoldenCase
	goldenEntries := func(m *Manifest) []manifestGoldenEntry {
		var out []manifestGoldenEntry
		for _, e := range m.Entries {
			out = append(out, manifestGoldenEntry{e.Name, e.Size, hex.EncodeToString(e.HeaderSHA256[:])})
		}
		return out
	}
	good := func(id string, s *LocalSigner, pub string, m *Manifest, v1 map[string]string) []byte {
		tok, err := SignManifest(m, s)
		if err != nil {
			t.Fatal(err)
		}
		write(id+".jws", tok)
		cases = append(cases, manifestGoldenCase{ID: id, Manifest: id + ".jws", Signers: []string{pub},
			Dataset: m.Dataset, Epoch: m.Epoch, Created: m.Created.Format(time.RFC3339), Alg: s.Alg(),
			Entries: goldenEntries(m), V1Objects: v1})
		return tok
	}
	broken := func(id string, pubs []string, tok []byte, wantErr string) {
		write(id+".jws", tok)
		cases = append(cases, manifestGoldenCase{ID: id, Manifest: id + ".jws", Signers: pubs, Error: wantErr})
	}

	// es256-v1-objects lists the valid v1 vectors by their names.
	var v1cases []goldenCase
	raw, _ := os.ReadFile(filepath.Join(goldenDir, "vectors.json"))
	_ = json.Unmarshal(raw, &v1cases)
	m1 := &Manifest{Dataset: "golden-v1", Epoch: 1, Created: time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)}
	v1 := map[string]string{}
	for _, c := range v1cases {
		if c.Error != "" {
			continue
		}
		obj, _ := os.ReadFile(filepath.Join(goldenDir, c.Object))
		h, err := ParseHeader(obj)
		if err != nil {
			t.Fatal(err)
		}
		size, _ := h.PlainSize(int64(len(obj)))
		m1.Entries = append(m1.Entries, ManifestEntry{Name: c.Name, Size: size, HeaderSHA256: HeaderDigest(h.Bytes())})
		v1[c.Name] = c.Object
	}
	if err := SortEntries(m1.Entries); err != nil {
		t.Fatal(err)
	}
	tok1 := good("es256-v1-objects", p256, "p256.pub.pem", m1, v1)
	good("es384-empty", p384, "p384.pub.pem", &Manifest{Dataset: "empty.set_1", Epoch: 2, Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}, nil)
	m3 := &Manifest{Dataset: "names", Epoch: MaxManifestEpoch, Created: time.Date(2030, 6, 30, 23, 59, 59, 0, time.UTC), Entries: []ManifestEntry{
		{Name: `quote " and \ backslash`, Size: 0}, {Name: "caf\u00e9/<&>.txt", Size: 1}, {Name: "deep/a/b/c/\U0001F600.bin", Size: MaxManifestEpoch},
	}}
	for i := range m3.Entries {
		m3.Entries[i].HeaderSHA256[i] = 0xff
	}
	_ = SortEntries(m3.Entries)
	good("ps256-names", rsa2048, "rsa2048.pub.pem", m3, nil)

	broken("broken-unpinned", []string{"p256.pub.pem"}, must(SignManifest(&Manifest{Dataset: "golden-v1", Epoch: 2, Created: m1.Created, Entries: m1.Entries}, other)), "ErrManifestSigner")
	parts := bytes.Split(tok1, []byte("."))
	payload, _ := b64e.DecodeString(string(parts[1]))
	payload = bytes.Replace(payload, []byte(`"epoch":1`), []byte(`"epoch":5`), 1)
	broken("broken-tampered", []string{"p256.pub.pem"}, []byte(string(parts[0])+"."+b64(payload)+"."+string(parts[2])), "ErrManifestSignature")
	broken("broken-truncated", []string{"p256.pub.pem"}, tok1[:len(tok1)/2], "ErrManifestMalformed")
	kid, _ := JWKThumbprint(p256.Public())
	signed := func(s *LocalSigner, hdr, pl string) []byte {
		in := b64([]byte(hdr)) + "." + b64([]byte(pl))
		sig, err := s.SignDigest(ManifestDigest(s.Alg(), []byte(in)))
		if err != nil {
			t.Fatal(err)
		}
		return []byte(in + "." + b64(sig))
	}
	hdr := `{"alg":"ES256","typ":"skrfs-manifest+jws","kid":"` + kid + `"}`
	h64 := strings.Repeat("0", 64)
	broken("broken-unsorted", []string{"p256.pub.pem"}, signed(p256, hdr,
		`{"v":1,"dataset":"d","epoch":1,"created":"2026-12-04T12:00:00Z","entries":[{"name":"b","size":1,"sha256":"`+h64+`"},{"name":"a","size":1,"sha256":"`+h64+`"}]}`), "ErrManifestMalformed")
	broken("broken-alg-none", []string{"p256.pub.pem"}, []byte(b64([]byte(`{"alg":"none","typ":"skrfs-manifest+jws","kid":"`+kid+`"}`))+"."+string(parts[1])+"."), "ErrManifestMalformed")
	broken("broken-wrong-alg-for-key", []string{"rsa2048.pub.pem"}, signed(p256, `{"alg":"ES256","typ":"skrfs-manifest+jws","kid":"`+must(JWKThumbprint(rsa2048.Public()))+`"}`,
		string(payload)), "ErrManifestSigner")
	out, _ := json.MarshalIndent(cases, "", "  ")
	write("vectors.json", append(out, '\n'))
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
