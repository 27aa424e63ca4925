package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/internal/devstack/vault"
	"github.com/skrfs/skrfs/internal/upload"
)

type staticCred struct{}

func (staticCred) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: "test-token", ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// testVault serves the devstack's Key Vault stand-in (its secrets are the
// epoch anchors) and points the producer commands' anchors at it, through
// the real azsecrets client. It returns the vault's URL.
func testVault(t *testing.T) string {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "vault"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	v, err := vault.New(vault.Options{StateDir: t.TempDir(), Signer: k, Chain: []*x509.Certificate{c},
		Authority: "https://login.microsoftonline.com/tenant"})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewTLSServer(v)
	t.Cleanup(ts.Close)
	old := openAnchor
	openAnchor = func(u string) (*vaultAnchor, error) { return newVaultAnchor(u, staticCred{}, ts.Client()) }
	t.Cleanup(func() { openAnchor = old })
	return ts.URL
}

// runProducer is runSkrfs without the process protections, which would
// stay on the test process (no core dumps, not dumpable, memory locked)
// and be inherited by TestCommandsAreHardened's helpers.
func runProducer(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := newRootCmd()
	c, _, err := cmd.Find(args)
	if err != nil {
		t.Fatal(err)
	}
	noHarden(c)
	var stdout, stderr bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	cmd.SetArgs(args)
	err = cmd.Execute()
	if err != nil {
		stderr.WriteString("skrfs: " + err.Error() + "\n")
	}
	return stdout.String(), stderr.String(), exitCode(err)
}

// producerWorld is a local-directory dataset, its sources, a manifest
// signing key and a sealing key, with the state directory of its own.
type producerWorld struct {
	t                          *testing.T
	store, src, signKey, kek   string
	stateHome                  string
	manifestPath, objPath, obj string
}

func newProducerWorld(t *testing.T) *producerWorld {
	t.Helper()
	dir := t.TempDir()
	w := &producerWorld{t: t, store: filepath.Join(dir, "store"), src: filepath.Join(dir, "src"),
		signKey: filepath.Join(dir, "signer.pem"), kek: filepath.Join(dir, "kek.bin"), stateHome: filepath.Join(dir, "state")}
	t.Setenv("XDG_STATE_HOME", w.stateHome)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p8, _ := x509.MarshalPKCS8PrivateKey(k)
	os.WriteFile(w.signKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}), 0o600)
	os.WriteFile(w.kek, bytes.Repeat([]byte{7}, 32), 0o600)
	os.MkdirAll(w.src, 0o755)
	w.write("a.txt", "alpha 1")
	w.write("b.txt", "beta")
	w.manifestPath = filepath.Join(w.store, filepath.FromSlash(crypto.ManifestName))
	w.objPath = filepath.Join(w.store, "a.txt")
	return w
}

func (w *producerWorld) write(name, content string) {
	if err := os.WriteFile(filepath.Join(w.src, name), []byte(content), 0o644); err != nil {
		w.t.Fatal(err)
	}
}

func (w *producerWorld) upload(extra ...string) (string, string, int) {
	args := append([]string{"upload", "--key", w.kek, "--key-ref", "https://v.vault.azure.net/keys/k", "--to", w.store, "--sign", w.signKey}, extra...)
	return runProducer(w.t, append(args, w.src)...)
}

func (w *producerWorld) refresh(extra ...string) (string, string, int) {
	args := append([]string{"manifest", "refresh", "--sign", w.signKey}, extra...)
	return runProducer(w.t, append(args, w.store)...)
}

func (w *producerWorld) read(p string) []byte {
	w.t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		w.t.Fatal(err)
	}
	return b
}

func (w *producerWorld) manifest() *crypto.Manifest {
	w.t.Helper()
	m, err := crypto.InspectManifest(w.read(w.manifestPath))
	if err != nil {
		w.t.Fatal(err)
	}
	return m
}

// TestProducerRefusesRolledBackManifest: with an older, genuinely signed
// manifest put back in storage (or the newest one deleted), `manifest
// refresh` and `upload --sign` sign nothing when the producer knows a
// higher epoch: from the Key Vault anchor, --min-epoch or its state file.
// Nothing is uploaded or published, the error names both epochs and the
// override, and with the newest manifest back the same command succeeds.
// Without any of them the old behaviour remains (documented).
func TestProducerRefusesRolledBackManifest(t *testing.T) {
	vaultURL := testVault(t)
	const anchor = "ANCHOR" // replaced by a secret URL per run
	for i, tc := range []struct {
		name    string
		publish []string // flags of the genuine publishes (epochs 1 and 2)
		run     []string // flags of the run against the planted manifest
		deleted bool     // the newest manifest deleted instead of epoch 1 put back
		refused bool
		want    []string // in the refusal
		// in upload's refusal only (refresh of a deleted manifest knows no
		// dataset id, so it says it has no manifest to refresh)
		wantUpload []string
	}{
		{name: "state file", refused: true,
			want: []string{"storage holds epoch 1, below epoch 2 known from this producer's state file", "--allow-rollback"}},
		{name: "state file, deliberate rollback", run: []string{"--allow-rollback"}},
		{name: "min-epoch", publish: []string{"--state", "none"}, run: []string{"--state", "none", "--min-epoch", "2"}, refused: true,
			want: []string{"storage holds epoch 1, below epoch 2 known from --min-epoch 2"}},
		{name: "anchor", publish: []string{"--state", "none", "--anchor", anchor}, run: []string{"--state", "none", "--anchor", anchor}, refused: true,
			want: []string{"storage holds epoch 1, below epoch 2 known from the Key Vault anchor https://", "set the secret by hand"}},
		{name: "anchor not lowered by --min-epoch 0 or --allow-rollback", publish: []string{"--anchor", anchor},
			run: []string{"--anchor", anchor, "--min-epoch", "0", "--allow-rollback"}, refused: true,
			want: []string{"below epoch 2 known from the Key Vault anchor"}},
		{name: "every floor named", publish: []string{"--anchor", anchor}, run: []string{"--anchor", anchor, "--min-epoch", "2"}, refused: true,
			want: []string{"epoch 2 known from the Key Vault anchor", "epoch 2 known from --min-epoch 2", "epoch 2 known from this producer's state file"}},
		{name: "min-epoch at the manifest's epoch", publish: []string{"--state", "none"}, run: []string{"--state", "none", "--min-epoch", "1"}},
		{name: "nothing known: the old behaviour", publish: []string{"--state", "none"}, run: []string{"--state", "none"}},
		{name: "state file, manifest deleted", deleted: true, refused: true,
			want: []string{"no manifest"}, wantUpload: []string{"the dataset has no manifest, below epoch 2 known from this producer's state file"}},
		{name: "anchor, manifest deleted", publish: []string{"--state", "none", "--anchor", anchor}, run: []string{"--state", "none", "--anchor", anchor},
			deleted: true, refused: true, want: []string{"the dataset has no manifest, below epoch 2 known from the Key Vault anchor"}},
	} {
		for _, command := range []string{"refresh", "upload"} {
			t.Run(tc.name+"/"+command, func(t *testing.T) {
				secret := fmt.Sprintf("%s/secrets/anchor-%d-%s", vaultURL, i, command)
				subst := func(args []string) []string {
					out := make([]string, len(args))
					for j, a := range args {
						out[j] = strings.ReplaceAll(a, anchor, secret)
					}
					return out
				}
				w := newProducerWorld(t)
				if _, errs, code := w.upload(append(subst(tc.publish), "--dataset-id", "ds")...); code != 0 {
					t.Fatalf("first publish: %d %s", code, errs)
				}
				epoch1 := w.read(w.manifestPath)
				w.write("a.txt", "alpha 2")
				if _, errs, code := w.upload(subst(tc.publish)...); code != 0 || w.manifest().Epoch != 2 {
					t.Fatalf("second publish: %d %s", code, errs)
				}
				epoch2, obj2 := w.read(w.manifestPath), w.read(w.objPath)
				// The storage attacker puts epoch 1 back (or deletes epoch 2).
				if tc.deleted {
					os.Remove(w.manifestPath)
				} else {
					os.WriteFile(w.manifestPath, epoch1, 0o644)
				}
				w.write("a.txt", "alpha 3")
				run := func() (string, string, int) {
					if command == "refresh" {
						return w.refresh(subst(tc.run)...)
					}
					return w.upload(append(subst(tc.run), "--dataset-id", "ds")...)
				}
				out, errs, code := run()
				if !tc.refused {
					if code != 0 {
						t.Fatalf("refused: %d %s", code, errs)
					}
					want := map[string]uint64{"refresh": 1, "upload": 2}[command]
					if m := w.manifest(); m.Epoch != want || m.Dataset != "ds" {
						t.Fatalf("published epoch %d of %s, want %d", m.Epoch, m.Dataset, want)
					}
					return
				}
				if code == 0 {
					t.Fatalf("accepted (exit 0): %s", out)
				}
				want := tc.want
				if command == "upload" {
					want = append(want, tc.wantUpload...)
				}
				for _, s := range want {
					if !strings.Contains(errs, s) {
						t.Errorf("refusal does not say %q:\n%s", s, errs)
					}
				}
				if tc.deleted {
					if _, err := os.Stat(w.manifestPath); err == nil {
						t.Fatal("a manifest was published")
					}
				} else if !bytes.Equal(w.read(w.manifestPath), epoch1) {
					t.Fatal("the planted manifest was replaced")
				}
				if !bytes.Equal(w.read(w.objPath), obj2) {
					t.Fatal("an object was uploaded")
				}
				// With the newest manifest back, the same command goes through.
				os.WriteFile(w.manifestPath, epoch2, 0o644)
				if _, errs, code := run(); code != 0 {
					t.Fatalf("with epoch 2 back: %d %s", code, errs)
				}
				wantEpoch := map[string]uint64{"refresh": 2, "upload": 3}[command]
				if m := w.manifest(); m.Epoch != wantEpoch {
					t.Fatalf("published epoch %d, want %d", m.Epoch, wantEpoch)
				}
			})
		}
	}
}

// TestRefreshRefusesFutureManifest: refresh would carry a creation time in
// the future forward (always fresh to readers' max_age); beyond 5 minutes
// of clock skew it refuses.
func TestRefreshRefusesFutureManifest(t *testing.T) {
	w := newProducerWorld(t)
	if _, errs, code := w.upload("--state", "none"); code != 0 {
		t.Fatal(errs)
	}
	ctx := context.Background()
	s, err := loadSigner(ctx, w.signKey, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := openStoreURL(ctx, w.store, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ahead time.Duration
		ok    bool
	}{{time.Hour, false}, {6 * time.Minute, false}, {time.Minute, true}, {0, true}} {
		m := w.manifest()
		m.Created = time.Now().Add(tc.ahead).UTC().Truncate(time.Second)
		if _, err := upload.Publish(ctx, st, m, s); err != nil {
			t.Fatal(err)
		}
		before := w.read(w.manifestPath)
		_, errs, code := w.refresh("--state", "none")
		if tc.ok != (code == 0) {
			t.Fatalf("created %v ahead: exit %d %s", tc.ahead, code, errs)
		}
		if !tc.ok && (!strings.Contains(errs, "later than now") || !bytes.Equal(before, w.read(w.manifestPath))) {
			t.Fatalf("created %v ahead: %s", tc.ahead, errs)
		}
	}
}

// TestManifestStateFile: the state file is created beside the fingerprint
// key ($XDG_STATE_HOME/skrfs), mode 0600 in a 0700 directory, records the
// highest epoch per dataset id (lowered only by --allow-rollback), and is
// refused when others can access it or it does not parse, before anything
// is uploaded. --state none writes nothing; the guard flags need --sign.
func TestManifestStateFile(t *testing.T) {
	w := newProducerWorld(t)
	p := filepath.Join(w.stateHome, "skrfs", "manifest-epochs.json")
	if _, errs, code := w.upload("--state", "none"); code != 0 {
		t.Fatal(errs)
	}
	if _, err := os.Stat(p); err == nil {
		t.Fatal("--state none wrote the state file")
	}
	if _, errs, code := w.upload("--dataset-id", "x"); code == 0 || !strings.Contains(errs, "not --dataset-id") {
		t.Fatalf("another dataset id: %d %s", code, errs)
	}
	w.write("a.txt", "alpha 2")
	if _, errs, code := w.upload(); code != 0 {
		t.Fatal(errs)
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", fi, err)
	}
	if d, _ := os.Stat(filepath.Dir(p)); d.Mode().Perm() != 0o700 {
		t.Fatalf("state directory mode %v", d.Mode())
	}
	id := w.manifest().Dataset
	epochOf := func() uint64 {
		st, err := loadManifestState(p)
		if err != nil {
			t.Fatal(err)
		}
		return st.Datasets[id].Epoch
	}
	if e := epochOf(); e != 2 {
		t.Fatalf("state records epoch %d, want 2", e)
	}
	// Recording never lowers, except for a deliberate rollback.
	recordManifestEpoch(p, id, 1, false)
	if e := epochOf(); e != 2 {
		t.Fatalf("recording epoch 1 lowered the state to %d", e)
	}
	recordManifestEpoch(p, id, 1, true)
	if e := epochOf(); e != 1 {
		t.Fatalf("a deliberate rollback recorded %d", e)
	}
	recordManifestEpoch(p, id, 2, false)
	if _, errs, code := w.refresh(); code != 0 {
		t.Fatal(errs)
	}
	// A state file others can access, or one that does not parse, is
	// refused before anything is uploaded.
	os.Chmod(p, 0o644)
	w.write("a.txt", "alpha 3")
	obj := w.read(w.objPath)
	if _, errs, code := w.upload(); code == 0 || !strings.Contains(errs, "only its owner") || !bytes.Equal(obj, w.read(w.objPath)) {
		t.Fatalf("group-readable state file: %d %s", code, errs)
	}
	os.Chmod(p, 0o600)
	os.WriteFile(p, []byte("{"), 0o600)
	if _, errs, code := w.refresh(); code == 0 || !strings.Contains(errs, "manifest state file") {
		t.Fatalf("corrupt state file: %d %s", code, errs)
	}
	// A named state file, created on the first publish.
	named := filepath.Join(t.TempDir(), "sub", "epochs.json")
	if _, errs, code := w.upload("--state", named); code != 0 {
		t.Fatal(errs)
	}
	var st manifestState
	if err := json.Unmarshal(w.read(named), &st); err != nil || st.Datasets[id].Epoch != 3 {
		t.Fatalf("named state file: %+v %v", st, err)
	}
	// Usage errors: exit 2.
	for _, args := range [][]string{
		{"upload", "--key", w.kek, "--to", w.store, "--min-epoch", "3", w.src},
		{"upload", "--key", w.kek, "--to", w.store, "--state", named, w.src},
		{"manifest", "refresh", "--sign", w.signKey, "--state", "none", "--allow-rollback", w.store},
		{"manifest", "refresh", "--sign", w.signKey, "--anchor", "http://v/secrets/a", w.store},
	} {
		if _, errs, code := runProducer(t, args...); code != exitUsage {
			t.Errorf("%q: exit %d, want %d: %s", args, code, exitUsage, errs)
		}
	}
}
