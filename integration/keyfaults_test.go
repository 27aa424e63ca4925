package integration

import (
	"bytes"
	"context"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/rs/zerolog"

	"github.com/skrfs/skrfs/internal/devstack"
)

// startDevstackWith is startDevstack with options.
func startDevstackWith(t *testing.T, opts devstack.Options) *devstack.Stack {
	t.Helper()
	opts.Dir, opts.Seed = t.TempDir(), true
	opts.Logger = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	s, err := devstack.Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// configWith writes a copy of the devstack's skrfs.yaml with extra YAML
// appended and returns its path.
func configWith(t *testing.T, s *devstack.Stack, extra string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.Dir, devstack.ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "skrfs.yaml")
	if err := os.WriteFile(p, append(b, extra...), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// pollUntil calls f every 50ms until it returns true, failing the test
// after the deadline (a hang guard, not a timing assertion).
func pollUntil(t *testing.T, what string, deadline time.Duration, f func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !f() {
		if time.Now().After(end) {
			t.Fatalf("%s: not within %v", what, deadline)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestKeyServiceFaultsThroughMount runs the real daemon with a 1s key TTL
// and MAA tokens that must be renewed after ~3s (lifetime 5m3s, reused
// until 5 minutes before expiry), and checks what the application sees:
//   - MAA down: opening a key file fails with EIO in bounded time (the
//     retries of the cache), and works again once MAA is back;
//   - a long read spanning key and token renewals: correct bytes
//     throughout, key files keep opening, MAA attested again;
//   - the key's release policy changed to deny: fail closed at the next
//     refresh (EACCES for key files and for new opens of its objects),
//     while a handle opened before keeps reading correct bytes (its data
//     key is already unwrapped; docs/threat-model.md).
func TestKeyServiceFaultsThroughMount(t *testing.T) {
	requireFUSE(t)
	s := startDevstackWith(t, devstack.Options{TokenLifetime: 5*time.Minute + 3*time.Second})
	d := mountDaemon(t, configWith(t, s, "cache:\n  ttl: 1s\n"))
	keyFile := func(name string) error {
		_, err := os.ReadFile(filepath.Join(d.mnt, "keys", name))
		return err
	}
	plain, err := os.ReadFile(filepath.Join(s.Dir, "plain", "data", "random-64m.bin"))
	if err != nil {
		t.Fatal(err)
	}

	t.Run("MAA down gives EIO, then recovers", func(t *testing.T) {
		s.SetFault(devstack.ServiceMAA, &devstack.Fault{Down: true})
		before := s.Requests(devstack.ServiceMAA)
		done := make(chan error, 1)
		go func() { done <- keyFile(devstack.KeyRSA) }()
		select {
		case err := <-done:
			if errnoOf(err) != syscall.EIO {
				t.Fatalf("key file with MAA down: %v, want EIO\n%s", err, d.out)
			}
		case <-time.After(90 * time.Second):
			t.Fatal("key file open with MAA down did not return in 90s")
		}
		if n := s.Requests(devstack.ServiceMAA) - before; n < 1 || n > 5 {
			t.Fatalf("%d MAA requests for one failed open, want 1..5", n)
		}
		s.SetFault(devstack.ServiceMAA, nil)
		if err := keyFile(devstack.KeyRSA); err != nil {
			t.Fatalf("key file after MAA recovered: %v", err)
		}
	})

	t.Run("long read across key and token renewals", func(t *testing.T) {
		f, err := os.Open(filepath.Join(d.mnt, "data", "random-64m.bin"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		attested, _ := s.MAA.Stats()
		allowed := s.Vault.Stats(devstack.KeyRSA).Allowed
		buf := make([]byte, 1<<20)
		for off := 0; off < len(plain); off += len(buf) {
			if _, err := io.ReadFull(f, buf); err != nil {
				t.Fatalf("read at %d: %v", off, err)
			}
			if !bytes.Equal(buf, plain[off:off+len(buf)]) {
				t.Fatalf("wrong bytes at %d", off)
			}
			if err := keyFile(devstack.KeyRSA); err != nil {
				t.Fatalf("key file during the long read: %v", err)
			}
			// Pace the read so that it spans a token renewal.
			if a, _ := s.MAA.Stats(); a < attested+1 {
				time.Sleep(100 * time.Millisecond)
			}
		}
		if a, _ := s.MAA.Stats(); a < attested+1 {
			t.Fatalf("no new attestation during the long read (%d before, %d after)", attested, a)
		}
		if n := s.Vault.Stats(devstack.KeyRSA).Allowed; n < allowed+2 {
			t.Fatalf("%d releases of %s during the long read, want at least 2 (TTL 1s)", n-allowed, devstack.KeyRSA)
		}
	})

	t.Run("policy changed to deny fails closed; open handles keep reading", func(t *testing.T) {
		f, err := os.Open(filepath.Join(d.mnt, "data", "random-64m.bin")) // sealed for demo-oct
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		half := len(plain) / 2
		buf := make([]byte, half)
		if _, err := io.ReadFull(f, buf[:1<<20]); err != nil {
			t.Fatal(err)
		}
		kc, err := s.KeysClient(nil)
		if err != nil {
			t.Fatal(err)
		}
		ct := "application/json; charset=utf-8"
		other := hex.EncodeToString(append([]byte{s.TEE.HostData[0] ^ 1}, s.TEE.HostData[1:]...))
		if _, err := kc.UpdateKey(context.Background(), devstack.KeyOct, "", azkeys.UpdateKeyParameters{
			ReleasePolicy: &azkeys.KeyReleasePolicy{ContentType: &ct, EncodedPolicy: s.Policy(other)}}, nil); err != nil {
			t.Fatal(err)
		}
		pollUntil(t, "key file refused after the policy changed", 60*time.Second, func() bool {
			err := keyFile(devstack.KeyOct)
			if err != nil && errnoOf(err) != syscall.EACCES {
				t.Fatalf("key file after the policy changed: %v, want EACCES", err)
			}
			return err != nil
		})
		if err := keyFile(devstack.KeyRSA); err != nil {
			t.Fatalf("a key whose policy did not change: %v", err)
		}
		// The handle opened before reads the rest of the file correctly.
		if _, err := f.Seek(int64(half), io.SeekStart); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(f, buf); err != nil || !bytes.Equal(buf, plain[half:]) {
			t.Fatalf("open handle after the denial: %v (or wrong bytes)", err)
		}
		f.Close()
		// Once no handle holds the object, a new open must release the key
		// again, and is refused.
		if _, err := os.Open(filepath.Join(d.mnt, "data", "random-64m.bin")); errnoOf(err) != syscall.EACCES {
			t.Fatalf("new open after the denial: %v, want EACCES", err)
		}
	})
}
