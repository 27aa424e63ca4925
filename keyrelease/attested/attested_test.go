package attested_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"net/http"
	"os"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/rs/zerolog"

	"github.com/skrfs/skrfs/internal/devstack"
	"github.com/skrfs/skrfs/keyrelease"
	"github.com/skrfs/skrfs/keyrelease/attest"
	"github.com/skrfs/skrfs/keyrelease/attest/sgx"
	"github.com/skrfs/skrfs/keyrelease/attest/snp"
	"github.com/skrfs/skrfs/keyrelease/attested"
	"github.com/skrfs/skrfs/keyrelease/maa"
)

type noCred struct{}

func (noCred) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{}, errors.New("no credential in this test")
}

// TestNewChecksConfig: the required fields, and a TEE that cannot be
// opened gives keyrelease.ErrAttestation before anything is sent.
func TestNewChecksConfig(t *testing.T) {
	const maaURL = "https://x.weu.attest.azure.net"
	noTEE := func(*maa.Client, *http.Client) (attest.Provider, error) { return nil, errors.New("no device") }
	for name, c := range map[string]attested.Config{
		"no TEE":        {MAA: maaURL, Credential: noCred{}},
		"no MAA":        {TEE: noTEE, Credential: noCred{}},
		"no credential": {TEE: noTEE, MAA: maaURL},
	} {
		if _, err := attested.New(c); err == nil || errors.Is(err, keyrelease.ErrAttestation) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := attested.New(attested.Config{TEE: noTEE, MAA: maaURL, Credential: noCred{}}); !errors.Is(err, keyrelease.ErrAttestation) {
		t.Errorf("a TEE that cannot be opened: %v, want ErrAttestation", err)
	}
	// Outside an enclave: no Gramine attestation directory.
	if _, err := attested.New(attested.Config{TEE: attested.SGX(sgx.Options{Dir: t.TempDir()}), MAA: maaURL, Credential: noCred{}}); !errors.Is(err, keyrelease.ErrAttestation) {
		t.Errorf("SGX without /dev/attestation: %v, want ErrAttestation", err)
	}
}

// TestReleaseOnDevstack: the releaser New wires, against the devstack
// (fake SEV-SNP evidence, MAA and vault stand-ins, workload identity):
// a key whose policy holds for the fake TEE is released and equals the
// vault's, a second release comes from the cache (one attestation, one
// vault release), a key whose policy wants another TEE is denied.
func TestReleaseOnDevstack(t *testing.T) {
	ctx := context.Background()
	s, err := devstack.Start(ctx, devstack.Options{Dir: t.TempDir(), Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	kc, err := s.KeysClient(nil)
	if err != nil {
		t.Fatal(err)
	}
	secret := make([]byte, 32)
	rand.Read(secret)
	ct := "application/json; charset=utf-8"
	for name, hostData := range map[string]string{"ours": hex.EncodeToString(s.TEE.HostData[:]), "theirs": hex.EncodeToString(make([]byte, 32))} {
		if _, err := kc.ImportKey(ctx, name, azkeys.ImportKeyParameters{HSM: to(true),
			Key:           &azkeys.JSONWebKey{Kty: to(azkeys.KeyTypeOctHSM), K: secret},
			KeyAttributes: &azkeys.KeyAttributes{Exportable: to(true)},
			ReleasePolicy: &azkeys.KeyReleasePolicy{ContentType: &ct, EncodedPolicy: s.Policy(hostData)}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	cred, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
		ClientID: devstack.ClientID, TenantID: devstack.TenantID, TokenFilePath: s.FederatedTokenFile, DisableInstanceDiscovery: true,
		ClientOptions: azcore.ClientOptions{Transport: s.HTTPClient, Cloud: cloud.Configuration{ActiveDirectoryAuthorityHost: s.EntraURL + "/"}}})
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := os.ReadFile(s.CAFile)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)
	fake := &attest.Fake{Device: s.Device, Endorsements: [][]byte{s.Endorsement}}
	r, err := attested.New(attested.Config{
		TEE: func(mc *maa.Client, _ *http.Client) (attest.Provider, error) {
			return &snp.Provider{Evidence: attested.Evidence(fake), MAA: mc, ProviderName: "fake"}, nil
		},
		MAA: s.MAAURL, Credential: cred, HTTPClient: s.HTTPClient, ReleaseRoots: roots, VaultHosts: []string{s.VaultHost()}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ours := keyrelease.KeyRef{Vault: s.VaultHost(), Name: "ours"}
	for i := range 2 {
		k, err := r.Release(ctx, ours)
		if err != nil {
			t.Fatal(err)
		}
		if k.Type != keyrelease.KeyTypeOct || !bytes.Equal(k.Oct, secret) {
			t.Fatalf("release %d: a %s key that is not the vault's", i, k.Type)
		}
		k.Wipe()
	}
	if att, rel := r.SKR().Stats(); att != 1 || rel != 1 {
		t.Errorf("%d attestations, %d vault releases for two releases of one key; want 1, 1 (cached)", att, rel)
	}
	if ok, _ := s.MAA.Stats(); ok != 1 {
		t.Errorf("MAA issued %d tokens, want 1", ok)
	}
	if _, err := r.Release(ctx, keyrelease.KeyRef{Vault: s.VaultHost(), Name: "theirs"}); !errors.Is(err, keyrelease.ErrDenied) {
		t.Errorf("a key for another TEE: %v, want ErrDenied", err)
	}
	if _, err := r.Release(ctx, keyrelease.KeyRef{Vault: "attacker.example.com", Name: "ours"}); !errors.Is(err, keyrelease.ErrNotAllowed) {
		t.Errorf("a vault outside Azure and VaultHosts: %v, want ErrNotAllowed", err)
	}
}

func to[T any](v T) *T { return &v }
