package keywrap

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
)

func unhex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// Vectors from RFC 3394 section 4.
func TestRFC3394Vectors(t *testing.T) {
	tests := []struct {
		name, kek, key, wrapped string
	}{
		{"4.1 128 KEK 128 data", "000102030405060708090A0B0C0D0E0F", "00112233445566778899AABBCCDDEEFF",
			"1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5"},
		{"4.3 256 KEK 128 data", "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F", "00112233445566778899AABBCCDDEEFF",
			"64E8C3F9CE0F5BA263E9777905818A2A93C8191E7D6E8AE7"},
		{"4.6 256 KEK 256 data", "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
			"00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F",
			"28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Wrap(unhex(tc.kek), unhex(tc.key))
			if err != nil || !bytes.Equal(got, unhex(tc.wrapped)) {
				t.Fatalf("Wrap = %X, %v; want %s", got, err, tc.wrapped)
			}
			back, err := Unwrap(unhex(tc.kek), got)
			if err != nil || !bytes.Equal(back, unhex(tc.key)) {
				t.Fatalf("Unwrap = %X, %v", back, err)
			}
			got[len(got)-1] ^= 1
			if _, err := Unwrap(unhex(tc.kek), got); !errors.Is(err, ErrUnwrap) {
				t.Fatalf("Unwrap(tampered) = %v, want ErrUnwrap", err)
			}
		})
	}
}

// Vectors from RFC 5649 section 6.
func TestRFC5649Vectors(t *testing.T) {
	kek := unhex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8")
	tests := []struct{ key, wrapped string }{
		{"c37b7e6492584340bed12207808941155068f738", "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a"},
		{"466f7250617369", "afbeb0f07dfbf5419200f2ccb50bb24f"},
	}
	for _, tc := range tests {
		got, err := WrapPad(kek, unhex(tc.key))
		if err != nil || !bytes.Equal(got, unhex(tc.wrapped)) {
			t.Fatalf("WrapPad(%s) = %x, %v; want %s", tc.key, got, err, tc.wrapped)
		}
		back, err := UnwrapPad(kek, got)
		if err != nil || !bytes.Equal(back, unhex(tc.key)) {
			t.Fatalf("UnwrapPad = %x, %v", back, err)
		}
		for i := range got {
			bad := bytes.Clone(got)
			bad[i] ^= 0x80
			if _, err := UnwrapPad(kek, bad); !errors.Is(err, ErrUnwrap) {
				t.Fatalf("UnwrapPad(bit flipped in byte %d) = %v, want ErrUnwrap", i, err)
			}
		}
	}
}

func TestPadRoundTripLengths(t *testing.T) {
	kek := bytes.Repeat([]byte{7}, 32)
	for n := 1; n <= 70; n++ {
		p := bytes.Repeat([]byte{byte(n)}, n)
		w, err := WrapPad(kek, p)
		if err != nil {
			t.Fatal(err)
		}
		if want := (n+7)/8*8 + 8; len(w) != want {
			t.Fatalf("len(WrapPad(%d bytes)) = %d, want %d", n, len(w), want)
		}
		got, err := UnwrapPad(kek, w)
		if err != nil || !bytes.Equal(got, p) {
			t.Fatalf("round trip of %d bytes: %x, %v", n, got, err)
		}
	}
	if _, err := UnwrapPad(kek, make([]byte, 12)); !errors.Is(err, ErrLength) {
		t.Fatalf("UnwrapPad(12 bytes) = %v, want ErrLength", err)
	}
}

func FuzzUnwrapPad(f *testing.F) {
	kek := bytes.Repeat([]byte{1}, 32)
	w, _ := WrapPad(kek, []byte("seed key material"))
	f.Add(w)
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := UnwrapPad(kek, data)
		if err == nil {
			w2, err := WrapPad(kek, p)
			if err != nil || !bytes.Equal(w2, data) {
				t.Fatalf("unwrap accepted %x but rewrap gives %x", data, w2)
			}
		}
	})
}
