package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/skrfs/skrfs/internal/upload"
	"github.com/skrfs/skrfs/keyrelease"
)

// The fingerprint key of RSA/EC uploads lives in a state file that only
// its owner can read; oct uploads derive theirs from the key.
func TestUploadFingerprintKeyFile(t *testing.T) {
	state := t.TempDir()
	t.Setenv("XDG_STATE_HOME", state)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, err := keyrelease.FromCrypto(&ec.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	k1, err := uploadFingerprintKey("", pub)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(state, "skrfs", "upload-fingerprint.key")
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o600 || st.Size() != 32 {
		t.Fatalf("state file: %v, %v", st, err)
	}
	if d, _ := os.Stat(filepath.Dir(p)); d.Mode().Perm() != 0o700 {
		t.Fatalf("state directory mode %v", d.Mode())
	}
	k2, err := uploadFingerprintKey("", pub)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Fatalf("second load: %v (same key: %v)", err, bytes.Equal(k1, k2))
	}
	// A key file others can read is refused, as is one of the wrong size.
	os.Chmod(p, 0o640)
	if _, err := uploadFingerprintKey("", pub); err == nil {
		t.Fatal("a group-readable fingerprint key was used")
	}
	short := filepath.Join(t.TempDir(), "short")
	os.WriteFile(short, []byte("short"), 0o600)
	if _, err := uploadFingerprintKey(short, pub); err == nil {
		t.Fatal("a 5-byte fingerprint key file was used")
	}
	// A named file that does not exist is an error, not created.
	if _, err := uploadFingerprintKey(filepath.Join(t.TempDir(), "missing"), pub); err == nil {
		t.Fatal("a missing --fingerprint-key file was created")
	}
	// oct: derived from the key, no state file needed.
	oct, _ := keyrelease.ParseKey(bytes.Repeat([]byte{3}, 32))
	t.Setenv("XDG_STATE_HOME", filepath.Join(t.TempDir(), "unused"))
	k, err := uploadFingerprintKey("", oct)
	if err != nil || !bytes.Equal(k, upload.DeriveFingerprintKey(oct.Oct)) {
		t.Fatalf("oct: %v", err)
	}
	if _, err := os.Stat(filepath.Join(os.Getenv("XDG_STATE_HOME"), "skrfs")); err == nil {
		t.Fatal("an oct upload created a state file")
	}
}
