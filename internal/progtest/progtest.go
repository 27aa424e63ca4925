// Package progtest runs unmodified programs against files in a mount, for
// the filesystem tests in fs and integration.
package progtest

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"encoding/pem"
)

// TLSHandshake makes a certificate for key, starts `openssl s_server`
// loading the private key from keyFile (a file in the mount), and completes
// a verified handshake with `openssl s_client`.
func TLSHandshake(t *testing.T, key crypto.Signer, keyFile string) {
	t.Helper()
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl is required (make test installs it): %v", err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert := filepath.Join(t.TempDir(), "cert.pem")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	srv := exec.Command(openssl, "s_server", "-accept", fmt.Sprint(port), "-cert", cert, "-key", keyFile, "-www", "-quiet")
	var srvOut bytes.Buffer
	srv.Stdout, srv.Stderr = &srvOut, &srvOut
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	// The server is ready when it accepts connections (it loads the key first).
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("s_server did not start: %s", srvOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cl := exec.Command(openssl, "s_client", "-connect", fmt.Sprintf("127.0.0.1:%d", port), "-CAfile", cert,
		"-verify_return_error", "-servername", "localhost", "-brief")
	cl.Stdin = strings.NewReader("")
	out, err := cl.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "CONNECTION ESTABLISHED") {
		t.Fatalf("s_client: %v\n%s\nserver: %s", err, out, srvOut.String())
	}
}
