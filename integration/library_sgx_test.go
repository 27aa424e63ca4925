package integration

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/blob/localdir"
	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/deliver"
	"github.com/skrfs/skrfs/internal/devstack"
	"github.com/skrfs/skrfs/keyrelease"
	"github.com/skrfs/skrfs/keyrelease/attest/sgx"
	"github.com/skrfs/skrfs/keyrelease/attested"
)

// libraryApp is the program of README.md's "Use skrfs as a Go library"
// (keyrelease/attested: ExampleNew), line for line from attested.New on;
// the devstack supplies in env what production takes from its defaults or
// builds before (Gramine's attestation directory, the credential, the
// system roots, Azure's vault domains, the Blob Storage container).
func libraryApp(ctx context.Context, env libraryEnv) (appKeyType keyrelease.KeyType, readme []byte, err error) {
	// 1. An attested, caching releaser: SGX quote -> MAA token -> Secure Key Release.
	r, err := attested.New(attested.Config{
		TEE:        attested.SGX(sgx.Options{Dir: env.attestationDir}), // production: Gramine's /dev/attestation
		MAA:        env.maa,
		Credential: env.cred,
		// devstack only: its CA, and its vault's loopback host
		HTTPClient: env.http, ReleaseRoots: env.releaseRoots, VaultHosts: []string{env.vault},
	})
	if err != nil {
		return "", nil, err
	}
	defer r.Close() // wipes every cached key

	// Release a key for the app's own use.
	appKey := keyrelease.KeyRef{Vault: env.vault, Name: "demo-oct"}
	key, err := r.Release(ctx, appKey)
	if err != nil {
		return "", nil, err // keyrelease.ErrDenied: the key's policy refuses this enclave
	}
	defer key.Wipe()

	// 2. A dataset: its store, and the only keys its objects may name.
	dataKey := keyrelease.KeyRef{Vault: env.vault, Name: "demo-rsa"}
	data := deliver.Dataset{Name: "data", Store: env.store, Keys: []keyrelease.KeyRef{dataKey}}

	// 3. One object, verified (header MAC, name, every chunk) and decrypted in memory.
	readme, err = deliver.ReadObject(ctx, r, data, "docs/readme.md", 64<<20)
	if err != nil {
		return "", nil, err
	}
	return key.Type, readme, nil
}

// libraryEnv is what the devstack supplies to libraryApp.
type libraryEnv struct {
	attestationDir, maa, vault string
	cred                       azcore.TokenCredential
	http                       *http.Client
	releaseRoots               *x509.CertPool
	store                      blob.Store
}

// newLibraryEnv points libraryApp at the devstack: its fake enclave (the
// debug build when debug), its MAA and vault, workload identity as on AKS
// (a federated service-account token exchanged at its Entra stand-in), and
// the seeded dataset in storeDir.
func newLibraryEnv(t *testing.T, s *devstack.Stack, debug bool, storeDir string) libraryEnv {
	t.Helper()
	cred, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
		ClientID: devstack.ClientID, TenantID: devstack.TenantID, TokenFilePath: s.FederatedTokenFile,
		DisableInstanceDiscovery: true,
		ClientOptions: azcore.ClientOptions{Transport: s.HTTPClient,
			Cloud: cloud.Configuration{ActiveDirectoryAuthorityHost: s.EntraURL + "/"}}})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(s.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)
	store, err := localdir.New(storeDir)
	if err != nil {
		t.Fatal(err)
	}
	return libraryEnv{attestationDir: s.SGXAttestationDir(debug), maa: s.MAAURL, vault: s.VaultHost(),
		cred: cred, http: s.HTTPClient, releaseRoots: roots, store: store}
}

// TestLibraryOnSGXDevstack: skrfs used as a Go library inside the
// devstack's fake SGX enclave, by the program README.md shows: the sgx
// provider writes user_report_data and reads the quote through the fake
// Gramine /dev/attestation (FUSE), MAA's attest/SgxEnclave stand-in
// verifies it, the vault stand-in releases both keys under their SGX
// policies to the token's key, and one object comes back verified, in
// memory, equal to the seeded plaintext. The debug build of the same
// enclave is refused every key and gets no plaintext; an object tampered
// with in storage is refused.
func TestLibraryOnSGXDevstack(t *testing.T) {
	s := startDevstackWith(t, devstack.Options{TEE: devstack.TEESGX})
	ctx := context.Background()
	storeDir := filepath.Join(s.Dir, "store", "data")
	want, err := os.ReadFile(filepath.Join(s.Dir, "plain", "data", "docs", "readme.md"))
	if err != nil {
		t.Fatal(err)
	}

	t.Run("release and read", func(t *testing.T) {
		okBefore, _ := s.MAA.Stats()
		typ, got, err := libraryApp(ctx, newLibraryEnv(t, s, false, storeDir))
		if err != nil {
			t.Fatal(err)
		}
		if typ != keyrelease.KeyTypeOct || string(got) != string(want) {
			t.Fatalf("app key %q, readme %q; want oct, %q", typ, got, want)
		}
		if ok, _ := s.MAA.Stats(); ok <= okBefore {
			t.Fatal("no attestation reached attest/SgxEnclave")
		}
		for _, k := range []string{devstack.KeyOct, devstack.KeyRSA} {
			if st := s.Vault.Stats(k); st.Allowed == 0 || st.Denied != 0 {
				t.Errorf("vault releases of %s: %+v", k, st)
			}
		}
	})

	t.Run("token claims", func(t *testing.T) {
		env := newLibraryEnv(t, s, false, storeDir)
		r, err := attested.New(attested.Config{TEE: attested.SGX(sgx.Options{Dir: env.attestationDir}), MAA: env.maa,
			Credential: env.cred, HTTPClient: env.http, ReleaseRoots: env.releaseRoots, VaultHosts: []string{env.vault}})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		tok, err := r.Attest(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c := tok.Claims
		if r.Provider().Name() != "sgx" || c["x-ms-attestation-type"] != "sgx" || c["x-ms-sgx-is-debuggable"] != false ||
			c["x-ms-sgx-mrenclave"] != hex.EncodeToString(devstack.SGXMREnclave[:]) || c["x-ms-runtime"] == nil {
			t.Fatalf("provider %s, claims %v", r.Provider().Name(), c)
		}
		denied := keyrelease.KeyRef{Vault: env.vault, Name: devstack.KeyDenied}
		if _, err := r.Release(ctx, denied); !errors.Is(err, keyrelease.ErrDenied) {
			t.Fatalf("key for another signer: %v, want ErrDenied", err)
		}
	})

	t.Run("debug enclave denied", func(t *testing.T) {
		before := s.Vault.Stats(devstack.KeyOct).Denied
		_, got, err := libraryApp(ctx, newLibraryEnv(t, s, true, storeDir))
		if !errors.Is(err, keyrelease.ErrDenied) || got != nil {
			t.Fatalf("debug enclave: %v, %d bytes; want ErrDenied and nothing", err, len(got))
		}
		if s.Vault.Stats(devstack.KeyOct).Denied == before {
			t.Fatal("the vault did not refuse the debug enclave")
		}
	})

	t.Run("tampered object refused", func(t *testing.T) {
		dir := t.TempDir()
		obj, err := os.ReadFile(filepath.Join(storeDir, "docs", "readme.md"))
		if err != nil {
			t.Fatal(err)
		}
		obj[len(obj)-1] ^= 1 // the last chunk's tag
		os.MkdirAll(filepath.Join(dir, "docs"), 0o755)
		if err := os.WriteFile(filepath.Join(dir, "docs", "readme.md"), obj, 0o644); err != nil {
			t.Fatal(err)
		}
		_, got, err := libraryApp(ctx, newLibraryEnv(t, s, false, dir))
		if !errors.Is(err, crypto.ErrUnauthenticated) || got != nil {
			t.Fatalf("tampered object: %v, %d bytes; want ErrUnauthenticated and nothing", err, len(got))
		}
	})
}
