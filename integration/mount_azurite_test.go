package integration

import (
	"bytes"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skrfs/skrfs/integration/azurite"
	"github.com/skrfs/skrfs/internal/devstack"
)

// TestMountAzurite: objects uploaded to Azurite with `skrfs upload --key
// <vault key URL>` (public key fetched from the devstack vault) are served
// decrypted by the daemon from an Azure dataset.
func TestMountAzurite(t *testing.T) {
	requireFUSE(t)
	s := startDevstack(t)
	az := azurite.Start(t, azurite.Options{})
	az.CreateContainer(t, "enc")
	env := append(devstackEnv(t, s), "AZURE_STORAGE_CONNECTION_STRING="+az.ConnectionString())
	src := filepath.Join(s.Dir, "plain", "data")
	url := az.ContainerURL("enc") + "/ds"
	r := runEnv(t, env, "upload", "--key", s.VaultURL+"/keys/"+devstack.KeyRSA, "--to", url, src)
	if r.code != 0 || !strings.Contains(r.stdout, "4 uploaded") {
		t.Fatalf("upload: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	cfgBytes, _ := os.ReadFile(filepath.Join(s.Dir, devstack.ConfigFile))
	cfg := filepath.Join(t.TempDir(), "skrfs.yaml")
	os.WriteFile(cfg, append(cfgBytes, []byte("  - name: cloud\n    azure: "+url+"\n    keys: [demo-rsa]\n")...), 0o600)

	t.Setenv("AZURE_STORAGE_CONNECTION_STRING", az.ConnectionString())
	d := mountDaemon(t, cfg)
	for _, name := range []string{"hello.txt", "nested/deeper/numbers.csv", "random-64m.bin"} {
		got, err := os.ReadFile(filepath.Join(d.mnt, "cloud", filepath.FromSlash(name)))
		want, _ := os.ReadFile(filepath.Join(src, filepath.FromSlash(name)))
		if err != nil || sha256.Sum256(got) != sha256.Sum256(want) {
			t.Fatalf("cloud/%s: %v (equal %v)\n%s", name, err, bytes.Equal(got, want), d.out)
		}
	}
	st, err := os.Stat(filepath.Join(d.mnt, "cloud", "random-64m.bin"))
	if err != nil || st.Size() != 64<<20 {
		t.Fatalf("stat: %v", err)
	}
}
