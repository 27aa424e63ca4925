package crypto

import (
	"fmt"
	"testing"
)

// BenchmarkVerifyManifest: parse and verify a signed manifest of 100,000
// entries (docs/format.md 12; the goal is well under a second, with memory
// bounded by a small multiple of the manifest's size: see B/op).
func BenchmarkVerifyManifest(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		for _, alg := range []string{AlgES256, AlgPS256} {
			s := signers(b)[alg]
			tok, err := SignManifest(testManifest(n), s)
			if err != nil {
				b.Fatal(err)
			}
			v, _ := NewManifestVerifier(s.Public())
			b.Run(fmt.Sprintf("entries=%d/%s", n, alg), func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(tok)))
				for b.Loop() {
					m, err := VerifyManifest(tok, v)
					if err != nil || len(m.Entries) != n {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkSignManifest(b *testing.B) {
	s := signers(b)[AlgES256]
	m := testManifest(100_000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := SignManifest(m, s); err != nil {
			b.Fatal(err)
		}
	}
}
