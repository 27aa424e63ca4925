package attested_test

import (
	"context"
	"fmt"
	"log"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/skrfs/skrfs/blob/azblob"
	"github.com/skrfs/skrfs/deliver"
	"github.com/skrfs/skrfs/keyrelease"
	"github.com/skrfs/skrfs/keyrelease/attest/sgx"
	"github.com/skrfs/skrfs/keyrelease/attested"
)

// A program inside an SGX enclave (Gramine, on AKS) releases a key by
// attesting, opens a dataset and reads one verified object in memory: the
// program of README.md, "Use skrfs as a Go library". It needs the enclave,
// so it is compiled here but not run; integration/library_sgx_test.go runs
// the same lines against the devstack's fake enclave
// (TestLibraryOnSGXDevstack).
func ExampleNew() {
	ctx := context.Background()
	cred, err := azidentity.NewWorkloadIdentityCredential(nil) // the pod's identity
	if err != nil {
		log.Fatal(err)
	}

	// 1. An attested, caching releaser: SGX quote -> MAA token -> Secure Key Release.
	r, err := attested.New(attested.Config{
		TEE:        attested.SGX(sgx.Options{}), // Gramine's /dev/attestation
		MAA:        "https://sharedweu.weu.attest.azure.net",
		Credential: cred,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close() // wipes every cached key

	// Release a key for the app's own use.
	appKey := keyrelease.KeyRef{Vault: "myvault.vault.azure.net", Name: "app-key"}
	key, err := r.Release(ctx, appKey)
	if err != nil {
		log.Fatal(err) // keyrelease.ErrDenied: the key's policy refuses this enclave
	}
	defer key.Wipe()

	// 2. A dataset: its store, and the only keys its objects may name.
	store, err := azblob.Open(ctx, azblob.Config{ContainerURL: "https://myaccount.blob.core.windows.net/data", Credential: cred})
	if err != nil {
		log.Fatal(err)
	}
	dataKey := keyrelease.KeyRef{Vault: "myvault.vault.azure.net", Name: "data-key"}
	data := deliver.Dataset{Name: "data", Store: store, Keys: []keyrelease.KeyRef{dataKey}}

	// 3. One object, verified (header MAC, name, every chunk) and decrypted in memory.
	readme, err := deliver.ReadObject(ctx, r, data, "docs/readme.md", 64<<20)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s key, %d bytes\n", key.Type, len(readme))
}
