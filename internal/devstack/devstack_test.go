package devstack

import (
	"context"
	"net"
	"strings"
	"testing"
)

// TestRestartKeepsPorts: a restarted devstack serves on the ports of its
// first start (key references name the vault's host:port); when one of
// them is taken meanwhile, Start says which and why instead of moving.
func TestRestartKeepsPorts(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s1, err := Start(ctx, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	urls := []string{s1.MAAURL, s1.VaultURL, s1.IMDSURL, s1.EntraURL}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Start(ctx, Options{Dir: dir})
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	got := []string{s2.MAAURL, s2.VaultURL, s2.IMDSURL, s2.EntraURL}
	for i := range urls {
		if got[i] != urls[i] {
			t.Errorf("restart moved a service: %s, was %s", got[i], urls[i])
		}
	}
	s2.Close()

	// Someone else takes the vault's port.
	l, err := net.Listen("tcp", s2.VaultHost())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := Start(ctx, Options{Dir: dir}); err == nil || !strings.Contains(err.Error(), "busy") || !strings.Contains(err.Error(), ServiceVault) {
		t.Fatalf("start with the vault's port taken: %v, want a busy-port error naming the vault", err)
	}
	// The failed start released the ports it had bound: once the vault's
	// port is free again, the stack starts.
	l.Close()
	s3, err := Start(ctx, Options{Dir: dir})
	if err != nil {
		t.Fatalf("start after the port was freed: %v", err)
	}
	s3.Close()
}
