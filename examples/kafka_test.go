package examples_test

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// kafkaDevstack starts `skrfs devstack` (not seeded), creates the key
// kafka-demo from the fake TEE's CCE policy as examples/kafka/README.md
// does, and writes examples/kafka/local/skrfs.yaml filled in for it. It
// returns the environment of devstack.env and the configuration's path.
func kafkaDevstack(t *testing.T, work string) (env []string, cfg string) {
	t.Helper()
	skrfs := bin(t, "skrfs")
	dev := filepath.Join(work, "devstack")
	ds := start(t, nil, skrfs, "devstack", "--dir", dev, "--no-seed")
	ds.waitFor(t, "devstack ready", func() bool { _, err := os.Stat(filepath.Join(dev, "ready")); return err == nil })
	vars := envFile(t, filepath.Join(dev, "devstack.env"))
	env = environ(vars)
	r := runCmd(t, env, skrfs, "key", "create", "--vault", vars["SKRFS_VAULT_URL"], "--name", "kafka-demo", "--kty", "RSA-HSM",
		"--size", "3072", "--cce-policy", filepath.Join(vars["SKRFS_DEVSTACK_DIR"], "cce-policy.rego"), "--authority", vars["SKRFS_MAA_URL"])
	if r.code != 0 {
		t.Fatalf("key create: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	tmpl, err := os.ReadFile(filepath.Join(examplesDir(t), "kafka", "local", "skrfs.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg = filepath.Join(work, "skrfs.yaml")
	if err := os.WriteFile(cfg, []byte(render(t, string(tmpl), vars)), 0o600); err != nil {
		t.Fatal(err)
	}
	return env, cfg
}

// TestKafkaDemo runs the local variant of the Kafka example
// (examples/kafka/README.md, "Run it here"): the devstack, a key created
// from the fake TEE's CCE policy, a real skrfs mount, a local Kafka broker,
// the producer encrypting with the public key, and the unmodified consumer
// reading keys/kafka-demo through the mount. The same consumer without the
// mount sees only ciphertext.
func TestKafkaDemo(t *testing.T) {
	requireFUSE(t)
	skrfs := bin(t, "skrfs")
	work := t.TempDir()
	env, cfg := kafkaDevstack(t, work)
	mnt, ready := filepath.Join(work, "mnt"), filepath.Join(work, "mounted")
	os.Mkdir(mnt, 0o755)
	mount := start(t, env, skrfs, "mount", "--config", cfg, "--ready-file", ready, mnt)
	mount.waitFor(t, "mount ready", func() bool { _, err := os.Stat(ready); return err == nil })

	broker := start(t, nil, bin(t, "localbroker"), "--port", "0", "--topic", "kafka-demo-topic")
	addrRE := regexp.MustCompile(`listening on (127\.0\.0\.1:\d+)`)
	broker.waitFor(t, "broker address", func() bool { return addrRE.MatchString(broker.out.String()) })
	brokers := addrRE.FindStringSubmatch(broker.out.String())[1]

	const n = 3
	key := filepath.Join(mnt, "keys", "kafka-demo")
	r := runCmd(t, nil, bin(t, "producer"), "--brokers", brokers, "--pubkey", key+".pub.pem", "--count", fmt.Sprint(n), "--interval", "0s")
	if r.code != 0 {
		t.Fatalf("producer: %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	consume := func(t *testing.T, keyFile string) []string {
		t.Helper()
		r := runCmd(t, nil, bin(t, "consumer"), "--brokers", brokers, "--key", keyFile, "--count", fmt.Sprint(n), "--print")
		if r.code != 0 {
			t.Fatalf("consumer: %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if len(lines) != n {
			t.Fatalf("consumer printed %d lines, want %d:\n%s", len(lines), n, r.stdout)
		}
		return lines
	}
	t.Run("inside the TEE: plaintext through the mount", func(t *testing.T) {
		for i, line := range consume(t, key) {
			if want := fmt.Sprintf("plaintext\tAzure Confidential Computing #%d", i+1); line != want {
				t.Errorf("message %d: %q, want %q", i+1, line, want)
			}
		}
	})
	// The same consumer on the same path once skrfs is gone: the mount
	// point is an empty directory again.
	mount.stop(t)
	if _, err := os.Stat(key); !os.IsNotExist(err) {
		t.Fatalf("%s after unmount: %v", key, err)
	}
	t.Run("without the mount: ciphertext only", func(t *testing.T) {
		for i, line := range consume(t, key) {
			f := strings.Split(line, "\t")
			if len(f) != 3 || f[0] != "ciphertext" || strings.Contains(line, "Azure Confidential Computing") {
				t.Fatalf("message %d: %q, want only ciphertext", i+1, line)
			}
			// What the consumer shows is the RSA-3072 ciphertext itself.
			if ct, err := base64.StdEncoding.DecodeString(f[1]); err != nil || len(ct) != 384 {
				t.Errorf("message %d: %d bytes of ciphertext (%v), want 384", i+1, len(ct), err)
			}
			if !strings.Contains(f[2], "no private key") {
				t.Errorf("message %d: reason %q", i+1, f[2])
			}
		}
	})
}

// TestLocalWalkthrough runs examples/local/walkthrough.sh: the devstack,
// key creation from a CCE policy, upload, explain, mount and run.
func TestLocalWalkthrough(t *testing.T) {
	requireFUSE(t)
	env := append(os.Environ(), "SKRFS="+bin(t, "skrfs"))
	work := t.TempDir()
	r := runCmd(t, env, "bash", filepath.Join(examplesDir(t), "local", "walkthrough.sh"), work)
	if r.code != 0 || !strings.HasSuffix(r.stdout, "walkthrough: ok\n") {
		t.Fatalf("walkthrough: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	// Each step ran and showed what it should.
	for _, want := range []string{"quarterly numbers: confidential", "-----BEGIN PRIVATE KEY-----",
		"release would be allowed", "FAIL claim x-ms-sevsnpvm-hostdata", "keys/denied: permission denied",
		"2 uploaded, 0 unchanged, 0 failed"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("walkthrough output lacks %q:\n%s", want, r.stdout)
		}
	}
}
