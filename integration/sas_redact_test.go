package integration

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The real binary never prints a SAS: neither its debug log nor its final
// error message, when the storage behind a SAS URL refuses connections
// (net/http's transport errors quote the whole request URL).
func TestSASStaysOutOfOutput(t *testing.T) {
	bin := skrfsBin(t)
	const marker = "CLISASMARKER7"
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String() + "/devstoreaccount1/data"
	l.Close()
	sasURL := dead + "?sv=2022-11-02&sp=rl&se=2030-01-01&skoid=" + marker + "&sig=" + marker + "%3D"

	dir := t.TempDir()
	key := filepath.Join(dir, "k.key")
	os.WriteFile(key, make([]byte, 32), 0o600)
	src := filepath.Join(dir, "f.txt")
	os.WriteFile(src, []byte("x"), 0o600)
	for _, args := range [][]string{
		{"--log-level", "debug", "--log-json", "ls", sasURL},
		{"--log-level", "debug", "ls", sasURL},
		{"--log-level", "debug", "upload", "--key", key, "--key-ref", "https://v.vault.azure.net/keys/k", "--to", sasURL, src},
	} {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "AZURE_STORAGE_CONNECTION_STRING=")
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Errorf("%v succeeded against a dead endpoint:\n%s", args, out)
		}
		if strings.Contains(string(out), marker) {
			t.Errorf("%v printed the SAS:\n%s", args, out)
		}
		if !strings.Contains(string(out), "REDACTED") && !strings.Contains(string(out), "connection refused") {
			t.Errorf("%v: the error is not the transport error:\n%s", args, out)
		}
	}
}
