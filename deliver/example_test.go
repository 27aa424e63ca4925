package deliver_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/skrfs/skrfs/blob/memblob"
	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/deliver"
	"github.com/skrfs/skrfs/keyrelease"
)

// Library use: deliver one dataset into a directory, read a file, wipe.
// In a TEE the Releaser is the attested one (keyrelease/skr behind
// keyrelease/cache); here a static key stands in for it.
func ExampleFetch() {
	ref := keyrelease.KeyRef{Vault: "myvault.vault.azure.net", Name: "data-key", Version: "1"}
	key, _ := keyrelease.ParseKey(make([]byte, 32)) // an AES-256 KEK
	key.Ref = ref
	store := memblob.New()
	obj, _ := crypto.Seal([]byte("hello from the TEE\n"), key.Oct, crypto.SealOptions{Name: "hello.txt", KeyRef: ref.String()})
	store.Put("hello.txt", obj)

	parent, _ := os.MkdirTemp("", "deliver-example-")
	defer os.RemoveAll(parent)
	dir := filepath.Join(parent, "out") // production: a tmpfs (deliver.CheckMemoryBacked)
	st, err := deliver.Fetch(context.Background(), dir, deliver.Options{
		Releaser: keyrelease.NewStatic(key),
		Datasets: []deliver.Dataset{{Name: "data", Store: store, Keys: []keyrelease.KeyRef{ref}}},
		MaxBytes: 1 << 20,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	b, _ := os.ReadFile(filepath.Join(dir, "data", "hello.txt"))
	fmt.Printf("%d file: %s", st.Files, b)
	fmt.Println(deliver.Wipe(dir, true))
	// Output:
	// 1 file: hello from the TEE
	// <nil>
}
