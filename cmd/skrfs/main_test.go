package main

import "testing"

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
