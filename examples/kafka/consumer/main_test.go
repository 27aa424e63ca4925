package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skrfs/skrfs/examples/kafka/kafkademo"
)

// TestBoard: messages are decrypted once the key file appears, shown as
// ciphertext with the reason before, and the page escapes what it shows.
func TestBoard(t *testing.T) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	keyFile := filepath.Join(t.TempDir(), "kafka-demo")
	b := &board{keyFile: keyFile}
	seal := func(s string) string {
		v, err := kafkademo.Seal(&priv.PublicKey, []byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for i, tc := range []struct {
		name      string
		keyExists bool
		value     string
		plaintext string
		why       string
	}{
		{"no key file yet", false, seal("first"), "", "no private key"},
		{"key file appeared", true, seal("<b>second</b>"), "<b>second</b>", ""},
		{"not a message", true, "bm90IFJTQQ==", "", "bad message"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.keyExists {
				os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o400)
			}
			m := b.decrypt(int64(i), tc.value)
			if m.Plaintext != tc.plaintext || !strings.Contains(m.Why, tc.why) || (tc.plaintext == "" && m.Encrypted != tc.value) {
				t.Fatalf("%+v", m)
			}
			b.add(m)
		})
	}
	rec := httptest.NewRecorder()
	b.handler("kafka-demo-topic").ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	page := rec.Body.String()
	for _, want := range []string{"Messages from kafka-demo-topic", "&lt;b&gt;second&lt;/b&gt;", "no private key", "bm90IFJTQQ=="} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q:\n%s", want, page)
		}
	}
	if strings.Contains(page, "<b>second</b>") {
		t.Error("the page does not escape message text")
	}
}
