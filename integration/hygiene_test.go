package integration

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSecretsStayOutOfLogsAndCores: with debug logging, after every key
// file and every object was read, the daemon's logs contain no key
// material and no plaintext; the daemon cannot dump core and has locked
// its memory.
func TestSecretsStayOutOfLogsAndCores(t *testing.T) {
	mnt, cmd := mountDevstack(t, nil, "--log-level", "debug")

	secrets := secretForms(t, mnt, nil) // key material; plaintext below
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
