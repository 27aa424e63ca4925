package examples_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/skrfs/skrfs/internal/config"
)

// TestACITemplateLocally runs the two containers of
// examples/aci/azuredeploy.json here, against the devstack: skrfs's
// command as written (mount --mkdir into a subdirectory of the shared
// volume, which starts empty), and the app's command as written, with the
// volume and the baked-in configuration mapped to local paths. The app
// must read every file through the mount and log names and sizes only: no
// plaintext in its output. It then writes its results into the example's
// writable dataset (here in a local store, sealed for the devstack's RSA
// key in place of the data owner's results-key): the data owner's path,
// skrfs decrypt --key --name on the stored object, must give back exactly
// what the app wrote, and the store must hold no plaintext. Both run in
// one mount namespace here: whether ACI propagates a FUSE mount between
// containers through emptyDir is not verified (see examples/aci/README.md).
func TestACITemplateLocally(t *testing.T) {
	requireFUSE(t)
	skrfs := bin(t, "skrfs")
	work := t.TempDir()
	dev := filepath.Join(work, "devstack")
	ds := start(t, nil, skrfs, "devstack", "--dir", dev)
	ds.waitFor(t, "devstack ready", func() bool { _, err := os.Stat(filepath.Join(dev, "ready")); return err == nil })
	env := environ(envFile(t, filepath.Join(dev, "devstack.env")))

	tmpl := decodeARM(t, filepath.Join(examplesDir(t), "aci", "azuredeploy.json"))
	var skrfsCmd, appCmd []string
	var volPath string
	for _, c := range tmpl.Resources[0].Properties.Containers {
		if cmd := c.Properties.Command; len(cmd) > 0 && filepath.Base(cmd[0]) == "skrfs" {
			skrfsCmd = cmd
			volPath = c.Properties.VolumeMounts[0].MountPath
		} else {
			appCmd = cmd
		}
	}
	if len(skrfsCmd) == 0 || len(appCmd) == 0 {
		t.Fatalf("skrfs %q, app %q: want skrfs mount and an app", skrfsCmd, appCmd)
	}
	vol := filepath.Join(work, "vol")
	if err := os.Mkdir(vol, 0o755); err != nil {
		t.Fatal(err)
	}
	cfgFile, stores := aciLocalConfig(t, work, filepath.Join(dev, "skrfs.yaml"))
	local := func(s string) string {
		s = strings.ReplaceAll(s, "/etc/skrfs/skrfs.yaml", cfgFile)
		return strings.ReplaceAll(s, volPath+"/", vol+"/")
	}
	var args []string
	for _, a := range skrfsCmd[1:] {
		args = append(args, local(a))
	}
	mnt := args[len(args)-1]
	if filepath.Dir(mnt) != vol {
		t.Fatalf("skrfs mounts at %s, want a subdirectory of the volume %s", mnt, vol)
	}
	mount := start(t, env, skrfs, args...)
	t.Cleanup(func() { mount.stop(t) })

	var appArgs []string
	for _, a := range appCmd[1:] {
		appArgs = append(appArgs, local(a))
	}
	app := start(t, env, appCmd[0], appArgs...)
	app.waitFor(t, "the app's summary", func() bool { return strings.Contains(app.out.String(), " files; ") })
	out := app.out.String()

	// Every original of the dataset was read in full through the mount.
	plain := filepath.Join(dev, "plain", "data")
	n := 0
	err := filepath.WalkDir(plain, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(plain, p)
		want := filepath.Join(mnt, "data", rel) + ": read " + strconv.Itoa(len(b)) + " bytes\n"
		if !strings.Contains(out, want) {
			t.Errorf("app output lacks %q", want)
		}
		// Names and sizes only: not even 16 bytes of the plaintext.
		for i := 0; i+16 <= len(b) && i < 1<<16; i += 16 {
			if bytes.Contains([]byte(out), b[i:i+16]) {
				t.Fatalf("the app's output holds plaintext of %s", rel)
			}
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 2 {
		t.Fatalf("the devstack's dataset has %d files", n)
	}
	// The released keys are read too; the one whose policy this TEE does not
	// satisfy fails, and says so.
	for _, want := range []string{filepath.Join(mnt, "keys", "demo-rsa") + ": read 2", filepath.Join(mnt, "keys", "denied") + ": read failed: Permission denied"} {
		if !strings.Contains(out, want) {
			t.Errorf("app output lacks %q", want)
		}
	}
	checkResults(t, skrfs, out, mnt, plain, stores)
	if t.Failed() || testing.Verbose() {
		t.Logf("app:\n%s\nskrfs: %s", out, mount.out.String())
	}
}

// aciLocalConfig writes the configuration the local run mounts: the
// devstack's, plus every writable dataset of examples/aci/skrfs.yaml, each
// in a local store of its own under work and sealed for the devstack's
// RSA key (demo-rsa stands in for the owner's RSA results-key). It returns
// the file and the stores by dataset name.
func aciLocalConfig(t *testing.T, work, devConfig string) (string, map[string]string) {
	t.Helper()
	b, err := os.ReadFile(devConfig)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	datasets, _ := doc["datasets"].([]any)
	stores := map[string]string{}
	for _, d := range aciConfig(t).Datasets {
		if !d.Writable {
			continue
		}
		stores[d.Name] = filepath.Join(work, "store-"+d.Name)
		if err := os.Mkdir(stores[d.Name], 0o755); err != nil {
			t.Fatal(err)
		}
		datasets = append(datasets, map[string]any{"name": d.Name, "local": stores[d.Name],
			"keys": []string{"demo-rsa"}, "writable": true, "write_key": "demo-rsa"})
	}
	if len(stores) == 0 {
		t.Fatal("examples/aci/skrfs.yaml has no writable dataset")
	}
	doc["datasets"] = datasets
	if b, err = yaml.Marshal(doc); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Parse(b); err != nil {
		t.Fatalf("the local configuration: %v\n%s", err, b)
	}
	file := filepath.Join(work, "skrfs.yaml")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return file, stores
}

// checkResults plays the data owner of TestACITemplateLocally: the app's
// results/summary.csv is in the store only as an object sealed for its
// name, and skrfs decrypt --key --name gives back one line per input file
// (its path, size and SHA-256), as the app's stand-in computes them.
func checkResults(t *testing.T, skrfs, out, mnt, plain string, stores map[string]string) {
	t.Helper()
	written := filepath.Join(mnt, "results", "summary.csv")
	if !strings.Contains(out, written+": wrote ") {
		t.Fatalf("app output lacks %q", written+": wrote ")
	}
	store, ok := stores["results"]
	if !ok {
		t.Fatalf("no writable dataset named results: %v", stores)
	}
	want := []string{"file,bytes,sha256"}
	err := filepath.WalkDir(plain, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(plain, p)
		sum := sha256.Sum256(b)
		want = append(want, filepath.Join("data", rel)+","+strconv.Itoa(len(b))+","+hex.EncodeToString(sum[:]))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The data owner's private key: the devstack releases demo-rsa to
	// this (fake) TEE, so the mount serves it; the owner keeps it offline.
	pem, err := os.ReadFile(filepath.Join(mnt, "keys", "demo-rsa"))
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "results-key.pem")
	if err := os.WriteFile(keyFile, pem, 0o600); err != nil {
		t.Fatal(err)
	}
	sealed := filepath.Join(store, "summary.csv")
	stored, err := os.ReadFile(sealed)
	if err != nil {
		t.Fatalf("the results store: %v", err)
	}
	if bytes.Contains(stored, []byte(want[len(want)-1])) || bytes.Contains(stored, []byte("file,bytes,sha256")) {
		t.Fatal("the stored results object holds plaintext")
	}
	dec := filepath.Join(t.TempDir(), "summary.csv")
	if r := runCmd(t, nil, skrfs, "decrypt", "--key", keyFile, "--name", "summary.csv", sealed, dec); r.code != 0 {
		t.Fatalf("skrfs decrypt: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	b, err := os.ReadFile(dec)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("decrypted results:\n%s\nwant the lines\n%s", b, strings.Join(want, "\n"))
	}
	// Sealed for its name: another name is refused.
	if r := runCmd(t, nil, skrfs, "decrypt", "--key", keyFile, "--name", "other.csv", sealed, "-"); r.code == 0 {
		t.Error("skrfs decrypt --name other.csv opened the object sealed for summary.csv")
	}
}

// aciConfig parses examples/aci/skrfs.yaml.
func aciConfig(t *testing.T) *config.Config {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(examplesDir(t), "aci", "skrfs.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse(b)
	if err != nil {
		t.Fatalf("examples/aci/skrfs.yaml: %v", err)
	}
	return c
}

// TestACIResultsDataset: the ACI example writes results for a data owner.
// Its configuration has one writable dataset, results, sealed for a key of
// its own (results-key) that no read-only dataset uses, so what the group
// writes is not readable with the key the group may release; the app
// stand-in writes into it; and the README gives the owner's path (download
// the blob, skrfs decrypt with --key and --name).
func TestACIResultsDataset(t *testing.T) {
	c := aciConfig(t)
	var writable []config.Dataset
	readKeys := map[string]bool{}
	for _, d := range c.Datasets {
		if d.Writable {
			writable = append(writable, d)
			continue
		}
		for _, k := range d.Keys {
			readKeys[k] = true
		}
	}
	if len(writable) != 1 || writable[0].Name != "results" {
		t.Fatalf("writable datasets %v, want results", writable)
	}
	d := writable[0]
	if d.WriteKey != "results-key" || !slices.Equal(d.Keys, []string{"results-key"}) {
		t.Errorf("results: write_key %q, keys %v; want results-key, and only it", d.WriteKey, d.Keys)
	}
	if readKeys[d.WriteKey] {
		t.Errorf("results is sealed for %s, which a read-only dataset uses too (the group may release it)", d.WriteKey)
	}
	if d.Azure == "" || d.SignKey != "" {
		t.Errorf("results: azure %q, sign_key %q: want an Azure container and no manifest", d.Azure, d.SignKey)
	}
	tmpl := decodeARM(t, filepath.Join(examplesDir(t), "aci", "azuredeploy.json"))
	wrote := false
	for _, ct := range tmpl.Resources[0].Properties.Containers {
		cmd := strings.Join(ct.Properties.Command, " ")
		wrote = wrote || (strings.Contains(cmd, "'"+d.Name+"'") && strings.Contains(cmd, "'summary.csv'") && strings.Contains(cmd, "open(out, 'w')"))
	}
	if !wrote {
		t.Errorf("no container of the template writes %s/summary.csv", d.Name)
	}
	b, err := os.ReadFile(filepath.Join(examplesDir(t), "aci", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := strings.Join(strings.Fields(strings.ReplaceAll(string(b), "\\\n", "")), " ") // lines joined
	for _, want := range []string{"az storage blob download", "skrfs decrypt --key results-key.pem --name summary.csv",
		"az keyvault key import --vault-name myvault --name results-key", "Storage Blob Data Contributor"} {
		if !strings.Contains(readme, want) {
			t.Errorf("examples/aci/README.md lacks %q", want)
		}
	}
}
