package integration

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skrfs/skrfs/internal/devstack"
	"github.com/skrfs/skrfs/keyrelease"
)

// TestSecretsStayOutOfLogsAndCores: with debug logging, after every key
// file and every object was read, the daemon's logs contain no key
// material and no plaintext; the daemon cannot dump core and has locked
// its memory.
func TestSecretsStayOutOfLogsAndCores(t *testing.T) {
	requireFUSE(t)
	s := startDevstack(t)
	cfg := filepath.Join(s.Dir, devstack.ConfigFile)
	mnt := filepath.Join(t.TempDir(), "mnt")
	os.Mkdir(mnt, 0o755)
	ready := filepath.Join(t.TempDir(), "ready")
	cmd := execDaemon(t, "mount", "--log-level", "debug", "--config", cfg, "--ready-file", ready, mnt)
	waitReady(t, ready, cmd)

	var secrets [][]byte
	for _, f := range []string{"demo-rsa", "demo-rsa.jwk", "demo-oct", "demo-oct.jwk"} {
		b, err := os.ReadFile(filepath.Join(mnt, "keys", f))
		if err != nil {
			t.Fatal(err)
		}
		k, err := keyrelease.ParseKey(b)
		if err != nil {
			t.Fatal(err)
		}
		if k.Oct != nil {
			secrets = append(secrets, []byte(hex.EncodeToString(k.Oct)), []byte(base64.StdEncoding.EncodeToString(k.Oct)),
				[]byte(base64.RawURLEncoding.EncodeToString(k.Oct)))
		}
		for _, line := range strings.Split(string(b), "\n") {
			if len(line) > 40 && !strings.HasPrefix(line, "-----") {
				secrets = append(secrets, []byte(line)) // PEM body lines
			}
		}
	}
	for _, f := range []string{"hello.txt", "docs/readme.md", "nested/deeper/numbers.csv"} {
		b, err := os.ReadFile(filepath.Join(mnt, "data", filepath.FromSlash(f)))
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, bytes.TrimSpace(b[:min(len(b), 40)]))
	}
	pid := cmd.cmd.Process.Pid
	limits, _ := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if !strings.Contains(string(limits), "Max core file size        0") {
		t.Errorf("core dumps are not disabled:\n%s", limits)
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if strings.Contains(string(status), "VmLck:\t       0 kB") {
		t.Errorf("no memory is locked:\n%s", status)
	}
	cmd.stop(t)
	logs := cmd.out.Bytes()
	if !bytes.Contains(logs, []byte(`"level":"debug"`)) && !bytes.Contains(logs, []byte("key released")) {
		t.Fatalf("the daemon logged nothing at debug/info level; the check would be empty:\n%s", logs)
	}
	for _, sec := range secrets {
		if len(sec) >= 16 && bytes.Contains(logs, sec) {
			t.Fatalf("secret material %.20q... found in the daemon's logs", sec)
		}
	}
}
