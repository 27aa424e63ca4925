package crypto

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// Frozen golden vectors of format version 1. They were generated once with
// SKRFS_WRITE_GOLDEN=1 and are never regenerated: TestGoldenVectors decrypts
// them forever, and `make test` also checks them with the independent Python
// decryptor in integration/pydecrypt, written from docs/format.md alone.

const goldenDir = "testdata/v1"

// goldenCase is one entry of testdata/v1/vectors.json.
type goldenCase struct {
	ID        string `json:"id"`
	Object    string `json:"object"`
	Key       string `json:"key"`
	KeyType   string `json:"key_type"` // rsa, oct, ec
	Name      string `json:"name"`
	Plaintext string `json:"plaintext,omitempty"`
	Error     string `json:"error,omitempty"` // name of the sentinel error
}

var goldenErrors = map[string]error{
	"ErrBadMagic": ErrBadMagic, "ErrUnsupportedVersion": ErrUnsupportedVersion,
	"ErrMalformedHeader": ErrMalformedHeader, "ErrInvalidSize": ErrInvalidSize,
	"ErrWrongKey": ErrWrongKey, "ErrHeaderAuth": ErrHeaderAuth, "ErrNameMismatch": ErrNameMismatch,
	"ErrChunkAuth": ErrChunkAuth, "ErrTruncated": ErrTruncated, "ErrExtended": ErrExtended,
}

func loadGoldenKey(tb testing.TB, c goldenCase) any {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(goldenDir, c.Key))
	if err != nil {
		tb.Fatal(err)
	}
	if c.KeyType == "oct" {
		return b
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		tb.Fatalf("%s: not PEM", c.Key)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func TestGoldenVectors(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(goldenDir, "vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []goldenCase
	if err := json.Unmarshal(raw, &cases); err != nil {
		t.Fatal(err)
	}
	if len(cases) < 15 {
		t.Fatalf("only %d golden cases", len(cases))
	}
	for _, c := range cases {
		t.Run(c.ID, func(t *testing.T) {
			obj, err := os.ReadFile(filepath.Join(goldenDir, c.Object))
			if err != nil {
				t.Fatal(err)
			}
			got, err := Open(obj, loadGoldenKey(t, c), c.Name)
			if c.Error != "" {
				want, ok := goldenErrors[c.Error]
				if !ok {
					t.Fatalf("unknown error name %q", c.Error)
				}
				if !errors.Is(err, want) || got != nil {
					t.Fatalf("Open = %d bytes, %v; want %s", len(got), err, c.Error)
				}
				return
			}
			want, rerr := os.ReadFile(filepath.Join(goldenDir, c.Plaintext))
			if rerr != nil {
				t.Fatal(rerr)
			}
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("Open = %v, plaintext equal: %v", err, bytes.Equal(got, want))
			}
		})
	}
}

// TestWriteGolden writes the vectors. It runs only with SKRFS_WRITE_GOLDEN=1
// and refuses to overwrite existing vectors: version 1 is frozen.
func TestWriteGolden(t *testing.T) {
	if os.Getenv("SKRFS_WRITE_GOLDEN") != "1" {
		t.Skip("set SKRFS_WRITE_GOLDEN=1 to write new golden vectors (never for an existing version)")
	}
	if _, err := os.Stat(filepath.Join(goldenDir, "vectors.json")); err == nil {
		t.Fatal("golden vectors of v1 exist and are frozen; never regenerate them")
	}
	if err := os.MkdirAll(goldenDir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(goldenDir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeKey := func(name string, k any) {
		if b, ok := k.([]byte); ok {
			write(name, b)
			return
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		write(name, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	}
	rsa2048, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsa3072, _ := rsa.GenerateKey(rand.Reader, 3072)
	rsa4096, _ := rsa.GenerateKey(rand.Reader, 4096)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p256b, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	oct := make([]byte, 32)
	rand.Read(oct)
	keys := map[string]any{"rsa2048.pem": rsa2048, "rsa3072.pem": rsa3072, "rsa4096.pem": rsa4096,
		"p256.pem": p256, "p256-other.pem": p256b, "p384.pem": p384, "oct.key": oct}
	for n, k := range keys {
		writeKey(n, k)
	}
	var cases []goldenCase
	objs := map[string][]byte{}
	good := func(id, key, kt string, pt []byte, opts SealOptions) {
		obj, err := Seal(pt, keys[key], opts)
		if err != nil {
			t.Fatal(err)
		}
		objs[id] = obj
		write(id+".skrfs", obj)
		write(id+".plain", pt)
		cases = append(cases, goldenCase{ID: id, Object: id + ".skrfs", Key: key, KeyType: kt, Name: opts.Name, Plaintext: id + ".plain"})
	}
	broken := func(id, _, key, kt, name, wantErr string, obj []byte) {
		write(id+".skrfs", obj)
		cases = append(cases, goldenCase{ID: id, Object: id + ".skrfs", Key: key, KeyType: kt, Name: name, Error: wantErr})
	}
	ref := "https://myvault.vault.azure.net/keys/"
	good("rsa2048-hello", "rsa2048.pem", "rsa", []byte("hello, skrfs\n"),
		SealOptions{Name: "hello.txt", KeyRef: ref + "demo-rsa/4f2c0d9e8b7a41d5a0c3e1f2b3c4d5e6"})
	good("rsa3072-multichunk", "rsa3072.pem", "rsa", pseudoRandom(11, 3*65536+7),
		SealOptions{Name: "data/2026/multi.bin", KeyRef: ref + "data-rsa"})
	good("rsa4096-small-chunks", "rsa4096.pem", "rsa", pseudoRandom(12, 1000),
		SealOptions{Name: "small-chunks.bin", KeyRef: ref + "big-rsa", ChunkSize: 256})
	good("oct-empty", "oct.key", "oct", nil,
		SealOptions{Name: "empty", KeyRef: "https://myhsm.managedhsm.azure.net/keys/demo-oct"})
	good("oct-exact-chunks", "oct.key", "oct", pseudoRandom(13, 512),
		SealOptions{Name: "données/ü.txt", ChunkSize: 256})
	good("ec-p256", "p256.pem", "ec", pseudoRandom(14, 777),
		SealOptions{Name: "p256.bin", KeyRef: ref + "ec-p256", ChunkSize: 256})
	good("ec-p384", "p384.pem", "ec", pseudoRandom(15, 70000),
		SealOptions{Name: "p384.bin", KeyRef: ref + "ec-p384"})

	oe := objs["oct-exact-chunks"]
	ho, _ := ParseHeader(oe)
	T := 256 + TagSize
	broken("broken-flipped-tag", "oct-exact-chunks", "oct.key", "oct", "données/ü.txt", "ErrChunkAuth", flip(oe, len(oe)-1, 0x01))
	broken("broken-truncated", "oct-exact-chunks", "oct.key", "oct", "données/ü.txt", "ErrTruncated", oe[:ho.Len()+T])
	broken("broken-extended", "oct-exact-chunks", "oct.key", "oct", "données/ü.txt", "ErrExtended", append(bytes.Clone(oe), oe[ho.Len()+T:]...))
	broken("broken-invalid-size", "oct-exact-chunks", "oct.key", "oct", "données/ü.txt", "ErrInvalidSize", oe[:len(oe)-T+8])
	hello := objs["rsa2048-hello"]
	cases = append(cases, goldenCase{ID: "broken-wrong-name", Object: "rsa2048-hello.skrfs", Key: "rsa2048.pem", KeyType: "rsa", Name: "other.txt", Error: "ErrNameMismatch"})
	hh, _ := ParseHeader(hello)
	_, _, _, nameOff, _, _, _ := fieldOffsets(hh)
	broken("broken-header-name", "rsa2048-hello", "rsa2048.pem", "rsa", "hellp.txt", "ErrHeaderAuth", flip(hello, nameOff+4, 0x6f^0x70))
	broken("broken-zero-header", "rsa2048-hello", "rsa2048.pem", "rsa", "hello.txt", "ErrBadMagic", append(make([]byte, hh.Len()), hello[hh.Len():]...))
	broken("broken-bad-version", "rsa2048-hello", "rsa2048.pem", "rsa", "hello.txt", "ErrUnsupportedVersion", flip(hello, 5, 0x03))
	mc := objs["rsa3072-multichunk"]
	hm, _ := ParseHeader(mc)
	Tm := 65536 + TagSize
	sw := bytes.Clone(mc)
	copy(sw[hm.Len():], mc[hm.Len()+Tm:hm.Len()+2*Tm])
	copy(sw[hm.Len()+Tm:], mc[hm.Len():hm.Len()+Tm])
	broken("broken-swapped-chunks", "rsa3072-multichunk", "rsa3072.pem", "rsa", "data/2026/multi.bin", "ErrChunkAuth", sw)
	cases = append(cases, goldenCase{ID: "broken-wrong-key", Object: "ec-p256.skrfs", Key: "p256-other.pem", KeyType: "ec", Name: "p256.bin", Error: "ErrWrongKey"})
	ev := objs["ec-p256"]
	he, _ := ParseHeader(ev)
	_, _, _, _, _, wrapOff, _ := fieldOffsets(he)
	broken("broken-wrapped-key", "ec-p256", "p256.pem", "ec", "p256.bin", "ErrWrongKey", flip(ev, wrapOff+70, 0x01))
	hp, _ := ParseHeader(objs["ec-p384"])
	broken("broken-mac", "ec-p384", "p384.pem", "ec", "p384.bin", "ErrHeaderAuth", flip(objs["ec-p384"], hp.Len()-1, 0x01))
	out, _ := json.MarshalIndent(cases, "", "  ")
	write("vectors.json", append(out, '\n'))
}
