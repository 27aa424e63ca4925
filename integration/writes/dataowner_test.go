package writes

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skrfs/skrfs/internal/devstack"
)

// decryptStore decrypts every object of a local store with `skrfs decrypt
// --key KEYFILE --name NAME` (the data owner's path: the name each object
// was sealed for is checked) and compares it with the file of the same
// name under src.
func decryptStore(t *testing.T, store, keyFile, src string) {
	t.Helper()
	objects, temps := storeFiles(t, store)
	if len(temps) != 0 {
		t.Errorf("temporary files in the store: %v", temps)
	}
	var want []string
	filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			rel, _ := filepath.Rel(src, p)
			want = append(want, rel)
		}
		return nil
	})
	if strings.Join(objects, ",") != strings.Join(want, ",") {
		t.Fatalf("store objects %v, want one per source file %v", objects, want)
	}
	for _, name := range objects {
		cmd := exec.Command(skrfsBin(t), "decrypt", "--key", keyFile, "--name", filepath.ToSlash(name), filepath.Join(store, name), "-")
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("skrfs decrypt %s: %v\n%s", name, err, errb.String())
		}
		plain, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), plain) {
			t.Fatalf("skrfs decrypt %s: %d bytes, not the %d written", name, out.Len(), len(plain))
		}
		stored, _ := os.ReadFile(filepath.Join(store, name))
		if len(plain) >= 16 && bytes.Contains(stored, plain[:16]) {
			t.Fatalf("%s: the stored object contains its plaintext", name)
		}
	}
}

// TestDataOwnerDecrypts: what apps wrote through a writable mount, sealed
// for demo-oct, is decrypted by the data owner with `skrfs decrypt` and
// the key (here the released key, as the mount serves it under keys/).
func TestDataOwnerDecrypts(t *testing.T) {
	ds := localDataset(t)
	d := mount(t, config(t, ds))
	defer d.unmount()
	src := t.TempDir()
	makeTree(t, src)
	sh(t, `cp -a "$1/." "$2"`, src, d.dir())
	// Overwrite one file in place, and rename one: objects are sealed for
	// their final names.
	sh(t, `printf 'rewritten in place\n' > "$1/one" && printf 'rewritten in place\n' > "$2/one"`, src, d.dir())
	sh(t, `mv "$1/a/small.txt" "$1/a/renamed.txt" && mv "$2/a/small.txt" "$2/a/renamed.txt"`, src, d.dir())
	decryptStore(t, ds.local, filepath.Join(d.mnt, "keys", devstack.KeyOct), src)
}

// TestWriteWithPublicKeyOnly: a writable dataset whose write key is RSA
// seals new files with the public key alone: a mount that only creates
// files releases no key at all. The data owner then decrypts them with the
// private key.
func TestWriteWithPublicKeyOnly(t *testing.T) {
	s := devStack(t)
	ds := dataset{local: t.TempDir(), keys: "[demo-rsa]", writeKey: devstack.KeyRSA}
	// A few files: each decryption below is a private-key operation in
	// a process built with -race.
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "a", "b"), 0o755)
	os.WriteFile(filepath.Join(src, "a", "b", "chunk.bin"), pattern("chunk", 64<<10+3), 0o644)
	before := s.Vault.Stats(devstack.KeyRSA).Allowed
	d := mount(t, config(t, ds))
	sh(t, `cp -r "$1/." "$2"`, src, d.dir())
	sh(t, `printf 'new file\n' > "$1/new.txt" && printf 'new file\n' > "$2/new.txt"`, src, d.dir())
	sh(t, `mkdir "$1/newdir" "$2/newdir" && printf 'in a new dir\n' > "$1/newdir/f" && printf 'in a new dir\n' > "$2/newdir/f"`, src, d.dir())
	d.unmount()
	if n := s.Vault.Stats(devstack.KeyRSA).Allowed - before; n != 0 {
		t.Fatalf("a mount that only created files released %s %d times, want 0\n%s", devstack.KeyRSA, n, d.out)
	}
	// The data owner's side: a mount that releases the private key.
	keys := mount(t, config(t, localDataset(t)))
	defer keys.unmount()
	decryptStore(t, ds.local, filepath.Join(keys.mnt, "keys", devstack.KeyRSA), src)
	// The counter does count: the owner's side released the key.
	if s.Vault.Stats(devstack.KeyRSA).Allowed == before {
		t.Fatal("the vault counted no release of the key the data owner's side read")
	}
}
