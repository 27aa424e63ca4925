package crypto

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// Frozen golden vectors of format version 2 (docs/format.md section 11).
// Generated once with SKRFS_WRITE_GOLDEN_V2=1, never regenerated. The keys
// are the version 1 vectors' keys (paths relative to goldenDirV2).
// `make pyvectors` checks them with the independent Python reader too.

const goldenDirV2 = "testdata/v2/objects"

func loadGoldenKeyAt(tb testing.TB, dir string, c goldenCase) any {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(dir, c.Key))
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

func TestGoldenVectorsV2(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(goldenDirV2, "vectors.json"))
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
			obj, err := os.ReadFile(filepath.Join(goldenDirV2, c.Object))
			if err != nil {
				t.Fatal(err)
			}
			got, err := Open(obj, loadGoldenKeyAt(t, goldenDirV2, c), c.Name)
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
			want, rerr := os.ReadFile(filepath.Join(goldenDirV2, c.Plaintext))
			if rerr != nil {
				t.Fatal(rerr)
			}
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("Open = %v, plaintext equal: %v", err, bytes.Equal(got, want))
			}
		})
	}
}

// TestWriteGoldenV2 writes the version 2 vectors once.
func TestWriteGoldenV2(t *testing.T) {
	if os.Getenv("SKRFS_WRITE_GOLDEN_V2") != "1" {
		t.Skip("set SKRFS_WRITE_GOLDEN_V2=1 to write the version 2 vectors (never over existing ones)")
	}
	if _, err := os.Stat(filepath.Join(goldenDirV2, "vectors.json")); err == nil {
		t.Fatal("golden vectors of v2 exist and are frozen; never regenerate them")
	}
	if err := os.MkdirAll(goldenDirV2, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(goldenDirV2, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	keyPath := func(n string) string { return "../../v1/" + n }
	key := func(n, kt string) any {
		return loadGoldenKeyAt(t, goldenDirV2, goldenCase{Key: keyPath(n), KeyType: kt})
	}
	ref := "https://myvault.vault.azure.net/keys/"
	batches := map[string]*Batch{}
	batch := func(id, n, kt, keyRef string) *Batch {
		if b := batches[id]; b != nil {
			return b
		}
		b, err := NewBatch(key(n, kt), keyRef, nil)
		if err != nil {
			t.Fatal(err)
		}
		batches[id] = b
		return b
	}
	var cases []goldenCase
	objs := map[string][]byte{}
	good := func(id, b, n, kt, keyRef string, pt []byte, opts SealOptions) {
		obj, err := SealV2(pt, batch(b, n, kt, keyRef), opts)
		if err != nil {
			t.Fatal(err)
		}
		objs[id] = obj
		write(id+".skrfs", obj)
		write(id+".plain", pt)
		cases = append(cases, goldenCase{ID: id, Object: id + ".skrfs", Key: keyPath(n), KeyType: kt, Name: opts.Name, Plaintext: id + ".plain"})
	}
	broken := func(id, n, kt, name, wantErr string, obj []byte) {
		write(id+".skrfs", obj)
		cases = append(cases, goldenCase{ID: id, Object: id + ".skrfs", Key: keyPath(n), KeyType: kt, Name: name, Error: wantErr})
	}
	good("rsa2048-hello", "r1", "rsa2048.pem", "rsa", ref+"demo-rsa/4f2c0d9e8b7a41d5a0c3e1f2b3c4d5e6", []byte("hello, skrfs\n"), SealOptions{Name: "hello.txt"})
	good("rsa2048-same-batch", "r1", "rsa2048.pem", "rsa", ref+"demo-rsa/4f2c0d9e8b7a41d5a0c3e1f2b3c4d5e6", []byte("second object of the batch\n"), SealOptions{Name: "second.txt"})
	good("rsa3072-multichunk", "r3", "rsa3072.pem", "rsa", ref+"data-rsa", pseudoRandom(21, 3*65536+7), SealOptions{Name: "data/2026/multi.bin"})
	good("rsa4096-small-chunks", "r4", "rsa4096.pem", "rsa", ref+"big-rsa", pseudoRandom(22, 1000), SealOptions{Name: "small-chunks.bin", ChunkSize: 256})
	good("oct-empty", "o", "oct.key", "oct", "https://myhsm.managedhsm.azure.net/keys/demo-oct", nil, SealOptions{Name: "empty"})
	good("oct-exact-chunks", "o2", "oct.key", "oct", "", pseudoRandom(23, 512), SealOptions{Name: "données/ü.txt", ChunkSize: 256})
	good("ec-p256", "e256", "p256.pem", "ec", ref+"ec-p256", pseudoRandom(24, 777), SealOptions{Name: "p256.bin", ChunkSize: 256})
	good("ec-p384", "e384", "p384.pem", "ec", ref+"ec-p384", pseudoRandom(25, 70000), SealOptions{Name: "p384.bin"})

	oe := objs["oct-exact-chunks"]
	ho, _ := ParseHeader(oe)
	H, U := ho.Len(), 256+TagSize
	tab := len(oe) - 2*NonceSize
	broken("broken-flipped-tag", "oct.key", "oct", "données/ü.txt", "ErrChunkAuth", flip(oe, tab-1, 0x01))
	broken("broken-table", "oct.key", "oct", "données/ü.txt", "ErrHeaderAuth", flip(oe, tab+3, 0x01))
	broken("broken-truncated", "oct.key", "oct", "données/ü.txt", "ErrHeaderAuth",
		append(bytes.Clone(oe[:H+U]), oe[tab:tab+NonceSize]...))
	broken("broken-extended", "oct.key", "oct", "données/ü.txt", "ErrHeaderAuth",
		append(append(bytes.Clone(oe[:tab]), oe[H+U:tab]...), append(bytes.Clone(oe[tab:]), oe[tab+NonceSize:]...)...))
	broken("broken-invalid-size", "oct.key", "oct", "données/ü.txt", "ErrInvalidSize", oe[:len(oe)-U+10])
	sw := bytes.Clone(oe)
	copy(sw[H:], oe[H+U:H+2*U])
	copy(sw[H+U:], oe[H:H+U])
	broken("broken-swapped-chunks", "oct.key", "oct", "données/ü.txt", "ErrChunkAuth", sw)
	hello := objs["rsa2048-hello"]
	hh, _ := ParseHeader(hello)
	cases = append(cases, goldenCase{ID: "broken-wrong-name", Object: "rsa2048-hello.skrfs", Key: keyPath("rsa2048.pem"), KeyType: "rsa", Name: "other.txt", Error: "ErrNameMismatch"})
	nameOff := 37 + len(hh.KeyRef)
	broken("broken-header-name", "rsa2048.pem", "rsa", "hellp.txt", "ErrHeaderAuth", flip(hello, nameOff+4, 0x6f^0x70))
	broken("broken-bad-version", "rsa2048.pem", "rsa", "hello.txt", "ErrUnsupportedVersion", flip(hello, 5, 0x01)) // 3
	wbk, wdek, q, _, mac := v2Offsets(hh)
	broken("broken-wrapped-batch-key", "rsa2048.pem", "rsa", "hello.txt", "ErrWrongKey", flip(hello, wbk+100, 0x01))
	broken("broken-wrapped-dek", "rsa2048.pem", "rsa", "hello.txt", "ErrWrongKey", flip(hello, wdek+10, 0x01))
	broken("broken-seal-count", "rsa2048.pem", "rsa", "hello.txt", "ErrHeaderAuth", flip(hello, q+7, 0x02))
	broken("broken-mac", "rsa2048.pem", "rsa", "hello.txt", "ErrHeaderAuth", flip(hello, mac, 0x01))
	// The header of one object of the batch on the body of another.
	second := objs["rsa2048-same-batch"]
	hs, _ := ParseHeader(second)
	broken("broken-header-swap", "rsa2048.pem", "rsa", "hello.txt", "ErrHeaderAuth", append(bytes.Clone(hello[:hh.Len()]), second[hs.Len():]...))
	cases = append(cases, goldenCase{ID: "broken-wrong-key", Object: "ec-p256.skrfs", Key: keyPath("p256-other.pem"), KeyType: "ec", Name: "p256.bin", Error: "ErrWrongKey"})
	out, _ := json.MarshalIndent(cases, "", "  ")
	write("vectors.json", append(out, '\n'))
}
