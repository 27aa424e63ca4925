package integration

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/internal/devstack"
)

// TestManifestEndToEnd drives signed manifests through the binary on the
// devstack's local dataset: `skrfs upload --sign` publishes, a real mount
// configured with datasets[].signers enforces, and forgery (with the
// public key), a rolled-back object, an older manifest and a manifest by
// an unpinned key are all refused, with `skrfs manifest verify` and
// `skrfs ls` reporting the same.
func TestManifestEndToEnd(t *testing.T) {
	requireFUSE(t)
	s := startDevstack(t)
	bin := skrfsBin(t)
	dir := t.TempDir()
	store := filepath.Join(s.Dir, "store", "data")
	plain := filepath.Join(s.Dir, "plain", "data")

	signer := writeECKey(t, dir, "signer")
	other := writeECKey(t, dir, "other")
	pubJWK := filepath.Join(dir, "demo-rsa.jwk")
	writeVaultPublicJWK(t, s, "demo-rsa", pubJWK)
	keyRef := s.VaultURL + "/keys/demo-rsa"

	// The producer's record of its epochs, per test (a shared one would
	// refuse the next run's epoch 1 of dataset e2e-data).
	state := filepath.Join(dir, "manifest-epochs.json")
	upload := func(extra ...string) result {
		t.Helper()
		args := append([]string{"upload", "--key", pubJWK, "--key-ref", keyRef, "--to", store, "--sign", signer + ".pem", "--state", state}, extra...)
		return run(t, bin, append(args, plain+"/")...)
	}
	if r := upload("--dataset-id", "e2e-data"); r.code != 0 || !strings.Contains(r.stdout, "manifest published: dataset e2e-data, epoch 1") {
		t.Fatalf("upload --sign: %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	manifest1, err := os.ReadFile(filepath.Join(store, crypto.ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	if r := run(t, bin, "manifest", "verify", "--signer", signer+".pub.pem", "--dataset-id", "e2e-data", store); r.code != 0 || !strings.Contains(r.stdout, "objects ok") {
		t.Fatalf("manifest verify: %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}

	// The independent Python verifier (written from docs/format.md 12)
	// accepts what skrfs signed, with the right key only.
	pyManifest := filepath.Join(repoRoot(t), "integration", "pydecrypt", "skrfs_manifest.py")
	mpath := filepath.Join(store, crypto.ManifestName)
	if r := run(t, python, pyManifest, "verify", "--signer", signer+".pub.pem", mpath); r.code != 0 || !strings.Contains(r.stdout, `"epoch": 1`) {
		t.Fatalf("python verify: %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if r := run(t, python, pyManifest, "verify", "--signer", other+".pub.pem", mpath); r.code == 0 || !strings.Contains(r.stderr, "ErrManifestSigner") {
		t.Fatalf("python verify with another key: %d\n%s", r.code, r.stderr)
	}
	if r := run(t, bin, "manifest", "show", "--signer", signer+".pub.pem", store); r.code != 0 ||
		!strings.Contains(r.stdout, "epoch:    1") || !strings.Contains(r.stdout, "VERIFIED") {
		t.Fatalf("manifest show: %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if r := run(t, bin, "manifest", "show", store); !strings.Contains(r.stdout, "NOT VERIFIED") {
		t.Fatalf("manifest show without a signer: %s", r.stdout)
	}
	// refresh re-signs the same epoch and entries with a newer time.
	if r := run(t, bin, "manifest", "refresh", "--sign", signer+".pem", "--state", state, store); r.code != 0 || !strings.Contains(r.stdout, "refreshed: dataset e2e-data, epoch 1") {
		t.Fatalf("manifest refresh: %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	m0, _ := crypto.InspectManifest(manifest1)
	refreshed, err := crypto.InspectManifest(mustRead(t, filepath.Join(store, crypto.ManifestName)))
	if err != nil || refreshed.Epoch != 1 || !refreshed.Created.After(m0.Created) || len(refreshed.Entries) != len(m0.Entries) {
		t.Fatalf("refreshed manifest: %+v %v", refreshed, err)
	}

	cfg := configWithDataset(t, s, map[string]any{"signers": []string{signer + ".pub.pem"}, "id": "e2e-data"})
	mnt := filepath.Join(t.TempDir(), "mnt")
	os.Mkdir(mnt, 0o755)
	ready := filepath.Join(t.TempDir(), "ready")
	d := execDaemon(t, "mount", "--config", cfg, "--ready-file", ready, "--log-level", "info", mnt)
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	waitReady(t, ready, d)
	defer d.stop(t)

	names := plainNames(t, plain)
	if len(names) < 2 {
		t.Fatalf("devstack dataset has %d files", len(names))
	}
	victim, second := names[0], names[1]
	if got := listTree(t, filepath.Join(mnt, "data")); !slices.Equal(got, names) {
		t.Fatalf("mount shows %v, want the listed %v", got, names)
	}
	for _, n := range names {
		want, _ := os.ReadFile(filepath.Join(plain, n))
		if got, err := os.ReadFile(filepath.Join(mnt, "data", n)); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: %v", n, err)
		}
	}

	// Forgery with the public key under a listed name: EIO.
	forged := filepath.Join(dir, "forged.skrfs")
	src := filepath.Join(dir, "forged.txt")
	os.WriteFile(src, []byte("forged content\n"), 0o644)
	if r := run(t, bin, "encrypt", "--key", pubJWK, "--key-ref", keyRef, "--name", victim, src, forged); r.code != 0 {
		t.Fatalf("encrypt: %s", r.stderr)
	}
	saved, _ := os.ReadFile(filepath.Join(store, victim))
	copyFile(t, forged, filepath.Join(store, victim))
	if _, err := os.ReadFile(filepath.Join(mnt, "data", victim)); errnoOf(err) != syscall.EIO {
		t.Fatalf("forged %s: %v, want EIO", victim, err)
	}
	// Under a new name: invisible.
	if r := run(t, bin, "encrypt", "--key", pubJWK, "--key-ref", keyRef, "--name", "planted.txt", src, filepath.Join(store, "planted.txt")); r.code != 0 {
		t.Fatalf("encrypt: %s", r.stderr)
	}
	if _, err := os.Stat(filepath.Join(mnt, "data", "planted.txt")); errnoOf(err) != syscall.ENOENT {
		t.Fatalf("planted object: %v, want ENOENT", err)
	}
	// The tools see the same.
	r := run(t, bin, "manifest", "verify", "--signer", signer+".pub.pem", store)
	if r.code == 0 || !strings.Contains(r.stdout, "MISMATCH  "+victim) || !strings.Contains(r.stdout, "UNLISTED  planted.txt") {
		t.Fatalf("manifest verify after forgery: %d\n%s", r.code, r.stdout)
	}
	r = run(t, bin, "ls", "--signer", signer+".pub.pem", store)
	if !strings.Contains(r.stdout, "planted.txt  [UNLISTED]") || !strings.Contains(r.stdout, victim+"  [MISMATCH]") {
		t.Fatalf("ls does not mark: %s\n%s", r.stdout, r.stderr)
	}
	os.WriteFile(filepath.Join(store, victim), saved, 0o644)
	os.Remove(filepath.Join(store, "planted.txt"))

	// A new genuine version (epoch 2), then the old one put back: EIO.
	oldSecond, _ := os.ReadFile(filepath.Join(store, second))
	newPlain := []byte("second version of " + second + "\n")
	os.WriteFile(filepath.Join(plain, second), newPlain, 0o644)
	if r := upload(); r.code != 0 || !strings.Contains(r.stdout, "epoch 2") {
		t.Fatalf("second upload: %s\n%s", r.stdout, r.stderr)
	}
	d.cmd.Process.Signal(syscall.SIGHUP)
	pollUntil(t, "the epoch 2 view after SIGHUP", 20*time.Second, func() bool {
		got, err := os.ReadFile(filepath.Join(mnt, "data", second))
		return err == nil && bytes.Equal(got, newPlain)
	})
	os.WriteFile(filepath.Join(store, second), oldSecond, 0o644)
	if _, err := os.ReadFile(filepath.Join(mnt, "data", second)); errnoOf(err) != syscall.EIO {
		t.Fatalf("rolled-back %s: %v, want EIO", second, err)
	}

	// The whole dataset's older manifest put back, then one signed by an
	// unpinned key: both refused, the epoch 2 view kept.
	manifestPath := filepath.Join(store, crypto.ManifestName)
	os.WriteFile(manifestPath, manifest1, 0o644)
	refusedBefore := strings.Count(string(d.out.Bytes()), "manifest refused")
	d.cmd.Process.Signal(syscall.SIGHUP)
	pollUntil(t, "the older manifest refused", 20*time.Second, func() bool {
		return strings.Count(string(d.out.Bytes()), "manifest refused") > refusedBefore
	})
	if !strings.Contains(string(d.out.Bytes()), "rollback refused") {
		t.Fatalf("no rollback reason logged:\n%s", d.out.Bytes())
	}
	if got, err := os.ReadFile(filepath.Join(mnt, "data", victim)); err != nil || !bytes.Equal(got, mustRead(t, filepath.Join(plain, victim))) {
		t.Fatalf("last good view lost: %v", err)
	}
	rogue := run(t, bin, "manifest", "refresh", "--sign", other+".pem", store)
	if rogue.code == 0 {
		t.Fatal("refresh with another key accepted a manifest it cannot verify")
	}
	// Forge a manifest with the unpinned key by re-signing the older one.
	m, err := crypto.InspectManifest(manifest1)
	if err != nil {
		t.Fatal(err)
	}
	m.Epoch = 99
	os.WriteFile(manifestPath, signWith(t, other+".pem", m), 0o644)
	refusedBefore = strings.Count(string(d.out.Bytes()), "manifest refused")
	d.cmd.Process.Signal(syscall.SIGHUP)
	pollUntil(t, "the unpinned manifest refused", 20*time.Second, func() bool {
		return strings.Count(string(d.out.Bytes()), "manifest refused") > refusedBefore
	})
	if got := listTree(t, filepath.Join(mnt, "data")); !slices.Equal(got, names) {
		t.Fatalf("view changed after an unpinned manifest: %v", got)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	if err := os.WriteFile(to, mustRead(t, from), 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeECKey writes NAME.pem (private, PKCS#8) and NAME.pub.pem in dir and
// returns dir/NAME.
func writeECKey(t *testing.T, dir, name string) string {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	pub, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	base := filepath.Join(dir, name)
	os.WriteFile(base+".pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	os.WriteFile(base+".pub.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644)
	return base
}

func signWith(t *testing.T, keyPEM string, m *crypto.Manifest) []byte {
	t.Helper()
	blk, _ := pem.Decode(mustRead(t, keyPEM))
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	s, err := crypto.NewLocalSigner(k.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := crypto.SignManifest(m, s)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// writeVaultPublicJWK writes the public JWK of a devstack key (what a data
// owner fetches with keys/get).
func writeVaultPublicJWK(t *testing.T, s *devstack.Stack, name, path string) {
	t.Helper()
	c, err := s.KeysClient(s.HTTPClient)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.GetKey(context.Background(), name, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := resp.Key.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// configWithDataset writes a copy of the devstack's skrfs.yaml whose first
// dataset has the extra settings.
func configWithDataset(t *testing.T, s *devstack.Stack, extra map[string]any) string {
	t.Helper()
	var doc map[string]any
	if err := yaml.Unmarshal(mustRead(t, filepath.Join(s.Dir, devstack.ConfigFile)), &doc); err != nil {
		t.Fatal(err)
	}
	ds := doc["datasets"].([]any)[0].(map[string]any)
	for k, v := range extra {
		ds[k] = v
	}
	// Relative paths in the configuration are relative to its directory.
	if l, ok := ds["local"].(string); ok && !filepath.IsAbs(l) {
		ds["local"] = filepath.Join(s.Dir, l)
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(s.Dir, "skrfs-manifest.yaml")
	if err := os.WriteFile(p, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// plainNames lists the files under dir as '/'-separated relative names,
// sorted.
func plainNames(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	slices.Sort(out)
	return out
}

// listTree lists the files under a mounted dataset, as plainNames does.
func listTree(t *testing.T, dir string) []string {
	t.Helper()
	return plainNames(t, dir)
}

// TestManifestVaultSignerAndAnchor: the producer signs through Key Vault
// (azkeys Sign: the key never leaves the vault) and sets the epoch anchor
// (azsecrets); a mount pins the signer by its Key Vault URL (public part
// fetched once with keys/get) and reads the anchor. The whole dataset put
// back with its older manifest is refused by a FRESH mount because of the
// anchor, and accepted by a fresh mount without it (documented).
func TestManifestVaultSignerAndAnchor(t *testing.T) {
	requireFUSE(t)
	s := startDevstack(t)
	env := devstackEnv(t, s)
	dir := t.TempDir()
	store := filepath.Join(s.Dir, "store", "data")
	plain := filepath.Join(s.Dir, "plain", "data")
	pubJWK := filepath.Join(dir, "demo-rsa.jwk")
	writeVaultPublicJWK(t, s, "demo-rsa", pubJWK)
	keyRef := s.VaultURL + "/keys/demo-rsa"
	signKey := s.VaultURL + "/keys/demo-rsa" // RSA-3072 in the vault: PS256
	anchor := s.VaultURL + "/secrets/data-epoch"

	upload := func() result {
		t.Helper()
		return runEnv(t, env, "upload", "--key", pubJWK, "--key-ref", keyRef, "--to", store, "--sign", signKey, "--anchor", anchor,
			"--state", filepath.Join(dir, "manifest-epochs.json"), plain+"/")
	}
	if r := upload(); r.code != 0 || !strings.Contains(r.stdout, "epoch 1") {
		t.Fatalf("upload --sign <vault key>: %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	epoch1 := mustRead(t, filepath.Join(store, crypto.ManifestName))
	m1, err := crypto.InspectManifest(epoch1)
	if err != nil || m1.Alg != crypto.AlgPS256 {
		t.Fatalf("%+v %v", m1, err)
	}
	names := plainNames(t, plain)
	os.WriteFile(filepath.Join(plain, names[0]), []byte("v2\n"), 0o644)
	if r := upload(); r.code != 0 || !strings.Contains(r.stdout, "epoch 2") {
		t.Fatalf("second upload: %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if r := runEnv(t, env, "manifest", "verify", "--signer", signKey, store); r.code != 0 {
		t.Fatalf("verify with the vault key URL: %s\n%s", r.stdout, r.stderr)
	}
	// Roll the whole dataset back: epoch 1's manifest and objects.
	os.WriteFile(filepath.Join(store, crypto.ManifestName), epoch1, 0o644)

	mount := func(extra map[string]any) (string, *daemonProc) {
		cfg := configWithDataset(t, s, extra)
		mnt := filepath.Join(t.TempDir(), "mnt")
		os.Mkdir(mnt, 0o755)
		ready := filepath.Join(t.TempDir(), "ready")
		d := execDaemonEnv(t, env, "mount", "--config", cfg, "--ready-file", ready, "--log-level", "info", mnt)
		t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
		waitReady(t, ready, d)
		return mnt, d
	}
	// With the anchor (at epoch 2): the epoch 1 manifest is refused.
	mnt, d := mount(map[string]any{"signers": []string{signKey}, "anchor": anchor})
	if _, err := os.ReadDir(filepath.Join(mnt, "data")); errnoOf(err) != syscall.EIO {
		t.Fatalf("rolled-back dataset with the anchor: %v, want EIO\n%s", err, d.out.Bytes())
	}
	// The daemon's log reaches this process through a pipe: wait for it.
	for end := time.Now().Add(10 * time.Second); !strings.Contains(string(d.out.Bytes()), "Key Vault anchor"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("refusal does not name the anchor:\n%s", d.out.Bytes())
		}
	}
	d.stop(t)
	// min_epoch does the same without a vault.
	mnt, d = mount(map[string]any{"signers": []string{signKey}, "min_epoch": 2})
	if _, err := os.ReadDir(filepath.Join(mnt, "data")); errnoOf(err) != syscall.EIO {
		t.Fatalf("rolled-back dataset with min_epoch 2: %v, want EIO", err)
	}
	d.stop(t)
	// Without either, a fresh mount accepts the older, genuinely signed state.
	mnt, d = mount(map[string]any{"signers": []string{signKey}})
	if _, err := os.ReadFile(filepath.Join(mnt, "data", names[1])); err != nil {
		t.Fatalf("fresh mount without anchor: %v", err)
	}
	d.stop(t)
}

// TestManifestFetch: FUSE-free delivery (`skrfs fetch`) enforces the
// dataset's signed manifest as the mount does: it delivers the listed
// objects, and a forged listed object fails the whole fetch (DIR wiped).
func TestManifestFetch(t *testing.T) {
	s := startDevstack(t)
	env := devstackEnv(t, s)
	dir := t.TempDir()
	store := filepath.Join(s.Dir, "store", "data")
	plain := filepath.Join(s.Dir, "plain", "data")
	signer := writeECKey(t, dir, "signer")
	pubJWK := filepath.Join(dir, "demo-rsa.jwk")
	writeVaultPublicJWK(t, s, "demo-rsa", pubJWK)
	keyRef := s.VaultURL + "/keys/demo-rsa"
	if r := runEnv(t, env, "upload", "--key", pubJWK, "--key-ref", keyRef, "--to", store, "--sign", signer+".pem", "--state", "none", plain+"/"); r.code != 0 {
		t.Fatalf("upload --sign: %s", r.stderr)
	}
	cfg := configWithDataset(t, s, map[string]any{"signers": []string{signer + ".pub.pem"}})
	out := shmDir(t)
	if r := runEnv(t, env, "fetch", "--config", cfg, out); r.code != 0 {
		t.Fatalf("fetch: %d\n%s", r.code, r.stderr)
	}
	names := plainNames(t, plain)
	if got := plainNames(t, filepath.Join(out, "data")); !slices.Equal(got, names) {
		t.Fatalf("fetched %v, want %v", got, names)
	}
	// Forge a listed object with the public key: the fetch fails.
	src := filepath.Join(dir, "forged.txt")
	os.WriteFile(src, []byte("forged\n"), 0o644)
	if r := runEnv(t, env, "encrypt", "--key", pubJWK, "--key-ref", keyRef, "--name", names[0], src, filepath.Join(store, names[0])); r.code != 0 {
		t.Fatal(r.stderr)
	}
	out2 := shmDir(t)
	r := runEnv(t, env, "fetch", "--config", cfg, out2)
	if r.code == 0 || !strings.Contains(r.stderr, "manifest") {
		t.Fatalf("fetch of a forged object: %d\n%s", r.code, r.stderr)
	}
	if ents, _ := os.ReadDir(out2); len(ents) != 0 {
		t.Fatalf("a refused fetch left %d entries", len(ents))
	}
}
