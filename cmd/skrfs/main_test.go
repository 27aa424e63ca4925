package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUsageHint: the hint after a usage error names the whole command path,
// not only its last word (issue: "Run 'skrfs create --help'").
func TestUsageHint(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"key", "create", "--vault", "x"}, "Run 'skrfs key create --help' for usage."},
		{[]string{"key", "release", "--config", "c.yaml"}, "Run 'skrfs key release --help' for usage."},
		{[]string{"attest", "verify", "--report", "r"}, "Run 'skrfs attest verify --help' for usage."},
		{[]string{"mount", "--config", "c.yaml"}, "Run 'skrfs mount --help' for usage."},
		{[]string{"--log-level", "loud"}, "Run 'skrfs --help' for usage."},
		{[]string{"no-such-command"}, "Run 'skrfs --help' for usage."},
		{nil, "Run 'skrfs --help' for usage."},
	} {
		if got := usageHint(newRootCmd(), tc.args); got != tc.want {
			t.Errorf("usageHint(%q) = %q, want %q", tc.args, got, tc.want)
		}
	}
}

// TestDemoStateIsPerUser: the demo's default state directory is the
// user's own, never the /tmp/skrfs-demo-state that every user shared, and
// a state directory of another user or writable by others is refused.
func TestDemoStateIsPerUser(t *testing.T) {
	home := t.TempDir()
	for _, tc := range []struct {
		xdg, home, want string
	}{
		{"/x/state", home, "/x/state/skrfs/demo-state"},
		{"", home, filepath.Join(home, ".local/state/skrfs/demo-state")},
		{"relative", home, filepath.Join(home, ".local/state/skrfs/demo-state")},
		{"", "", filepath.Join(os.TempDir(), fmt.Sprintf("skrfs-demo-state-%d", os.Getuid()))},
	} {
		t.Setenv("XDG_STATE_HOME", tc.xdg)
		t.Setenv("HOME", tc.home)
		if got := defaultDemoState(); got != tc.want {
			t.Errorf("XDG_STATE_HOME=%q HOME=%q: %s, want %s", tc.xdg, tc.home, got, tc.want)
		}
	}
	mine := filepath.Join(home, "mine")
	os.Mkdir(mine, 0o700)
	open := filepath.Join(home, "open")
	os.Mkdir(open, 0o777)
	os.Chmod(open, 0o777)
	file := filepath.Join(home, "file")
	os.WriteFile(file, nil, 0o600)
	for dir, ok := range map[string]bool{mine: true, filepath.Join(home, "absent"): true, open: false, file: false} {
		if err := checkOwnDir(dir); (err == nil) != ok {
			t.Errorf("checkOwnDir(%s) = %v, want ok=%v", dir, err, ok)
		}
	}
	if os.Geteuid() == 0 {
		theirs := filepath.Join(home, "theirs")
		os.Mkdir(theirs, 0o700)
		os.Chown(theirs, 65534, 65534)
		if err := checkOwnDir(theirs); err == nil {
			t.Error("a directory of another user was accepted")
		}
	}
}

// TestKeyCreateRefusesUnusableKeys: key create refuses what upload or the
// release would refuse later: P-521 (the object format takes P-256 and
// P-384), software keys (Key Vault releases HSM-backed keys only), and
// sizes the format cannot use.
func TestKeyCreateRefusesUnusableKeys(t *testing.T) {
	for _, tc := range []struct {
		kty, curve string
		size       int
		want       string // canonical kty, or a part of the error
		ok         bool
	}{
		{"EC-HSM", "P-256", 0, "EC-HSM", true},
		{"EC-HSM", "P-384", 0, "EC-HSM", true},
		{"ec-hsm", "", 0, "EC-HSM", true},
		{"EC-HSM", "P-521", 0, "P-256 and P-384 keys only", false},
		{"EC-HSM", "P-256K", 0, "P-256 and P-384 keys only", false},
		{"RSA-HSM", "", 3072, "RSA-HSM", true},
		{"RSA-HSM", "", 1024, "2048, 3072 or 4096", false},
		{"oct-HSM", "", 256, "oct-HSM", true},
		{"oct-HSM", "", 128, "AES-256", false},
		{"RSA", "", 0, "HSM-backed exportable keys", false},
		{"EC", "P-256", 0, "use EC-HSM", false},
		{"oct", "", 0, "use oct-HSM", false},
		{"RSA-HSM", "P-256", 0, "--curve is for EC-HSM", false},
		{"AES", "", 0, "want RSA-HSM, EC-HSM or oct-HSM", false},
	} {
		got, err := checkKeySpec(tc.kty, tc.curve, tc.size)
		if tc.ok && (err != nil || got != tc.want) || !tc.ok && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("checkKeySpec(%q, %q, %d) = %q, %v; want ok=%v %q", tc.kty, tc.curve, tc.size, got, err, tc.ok, tc.want)
		}
	}
}
