package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"testing"
)

// The benchmarks compare the object format with raw AES-256-GCM from the
// standard library doing the same amount of work (one Seal/Open per chunk
// of the same size, no header, no key schedule) in the same run. The ratio
// raw ns/op ÷ format ns/op is the figure quoted in docs/format.md.

const benchSize = 16 << 20

var benchChunks = []int{4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20}

func BenchmarkOpen(b *testing.B) {
	k := keysForTest(b)
	pt := pseudoRandom(1, benchSize)
	for _, chunk := range benchChunks {
		obj, err := Seal(pt, k.oct, SealOptions{Name: "b", ChunkSize: chunk})
		if err != nil {
			b.Fatal(err)
		}
		h, _ := ParseHeader(obj)
		d, err := NewDecryptor(h, k.oct, "b", int64(len(obj)))
		if err != nil {
			b.Fatal(err)
		}
		dst := make([]byte, 0, benchSize)
		b.Run(fmt.Sprintf("format/chunk=%dK", chunk>>10), func(b *testing.B) {
			b.SetBytes(benchSize)
			for b.Loop() {
				if _, err := d.DecryptChunks(dst, obj[h.Len():], 0); err != nil {
					b.Fatal(err)
				}
			}
		})
		raw := rawSealed(pt, chunk)
		b.Run(fmt.Sprintf("rawgcm/chunk=%dK", chunk>>10), func(b *testing.B) {
			aead := rawAEAD()
			var nonce [12]byte
			b.SetBytes(benchSize)
			for b.Loop() {
				out := dst[:0]
				for _, c := range raw {
					var err error
					if out, err = aead.Open(out, nonce[:], c, nil); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

func BenchmarkSeal(b *testing.B) {
	k := keysForTest(b)
	pt := pseudoRandom(1, benchSize)
	for _, chunk := range []int{64 << 10} {
		b.Run(fmt.Sprintf("format/chunk=%dK", chunk>>10), func(b *testing.B) {
			b.SetBytes(benchSize)
			w := &discard{}
			for b.Loop() {
				sw, err := NewWriter(w, k.oct, SealOptions{Name: "b", ChunkSize: chunk})
				if err != nil {
					b.Fatal(err)
				}
				sw.Write(pt)
				sw.Close()
			}
		})
		b.Run(fmt.Sprintf("rawgcm/chunk=%dK", chunk>>10), func(b *testing.B) {
			aead := rawAEAD()
			var nonce [12]byte
			out := make([]byte, 0, chunk+TagSize)
			b.SetBytes(benchSize)
			for b.Loop() {
				for off := 0; off < len(pt); off += chunk {
					out = aead.Seal(out[:0], nonce[:], pt[off:min(off+chunk, len(pt))], nil)
				}
			}
		})
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func rawAEAD() cipher.AEAD {
	block, _ := aes.NewCipher(make([]byte, 32))
	aead, _ := cipher.NewGCM(block)
	return aead
}

// rawSealed seals pt chunk by chunk into one contiguous buffer, as the
// object body is laid out, and returns the sealed chunks as subslices.
func rawSealed(pt []byte, chunk int) [][]byte {
	aead := rawAEAD()
	var nonce [12]byte
	buf := make([]byte, 0, len(pt)+(len(pt)/chunk+1)*TagSize)
	var out [][]byte
	for off := 0; off < len(pt); off += chunk {
		start := len(buf)
		buf = aead.Seal(buf, nonce[:], pt[off:min(off+chunk, len(pt))], nil)
		out = append(out, buf[start:])
	}
	return out
}
