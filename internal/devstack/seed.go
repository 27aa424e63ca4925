package devstack

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

	"github.com/skrfs/skrfs/blob/localdir"
	"github.com/skrfs/skrfs/internal/upload"
	"github.com/skrfs/skrfs/keyrelease"
)

// Seeded key names.
const (
	KeyRSA    = "demo-rsa"
	KeyOct    = "demo-oct"
	KeyDenied = "denied"
)

// mintCred gets vault tokens straight from the devstack's token service.
type mintCred struct{ s *Stack }

func (m mintCred) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	tok, exp, err := m.s.Identity.Mint("https://vault.azure.net", ClientID)
	return azcore.AccessToken{Token: tok, ExpiresOn: exp}, err
}

// Policy returns the release policy of the seeded keys for a HOST_DATA:
// the recommended ACI policy of protocol.md section 6.
func (s *Stack) Policy(hostData string) []byte {
	return []byte(`{"version":"1.0.0","anyOf":[{"authority":"` + s.MAAURL + `","allOf":[` +
		`{"claim":"x-ms-attestation-type","equals":"sevsnpvm"},` +
		`{"claim":"x-ms-sevsnpvm-hostdata","equals":"` + hostData + `"},` +
		`{"claim":"x-ms-compliance-status","equals":"azure-compliant-uvm"},` +
		`{"claim":"x-ms-sevsnpvm-is-debuggable","equals":"false"},` +
		`{"claim":"x-ms-sevsnpvm-vmpl","equals":"0"}]}]}`)
}

// KeysClient returns an azkeys client for the devstack vault (hc nil = the
// stack's own HTTPClient).
func (s *Stack) KeysClient(hc *http.Client) (*azkeys.Client, error) {
	if hc == nil {
		hc = s.HTTPClient
	}
	return azkeys.NewClient(s.VaultURL, mintCred{s}, &azkeys.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: hc},
		DisableChallengeResourceVerification: true})
}

// releasePolicy is the policy of the seeded keys: for the fake SEV-SNP
// TEE, Policy; for the fake CVM, CVMPolicy. allowed false gives the policy
// of "denied" (another TEE).
func (s *Stack) releasePolicy(allowed bool) []byte {
	if s.opts.TEE == TEECVM {
		vmid := CVMVMID
		if !allowed {
			vmid = "00000000-0000-4000-8000-000000000000"
		}
		return s.CVMPolicy(vmid)
	}
	if !allowed {
		return s.Policy(strings.Repeat("00", 32))
	}
	return s.Policy(hex.EncodeToString(s.TEE.HostData[:]))
}

// CVMPolicy is the release policy for Azure CVMs of protocol.md 13.3
// (nested x-ms-isolation-tee claims) pinned to one VM.
func (s *Stack) CVMPolicy(vmid string) []byte {
	return []byte(`{"version":"1.0.0","anyOf":[{"authority":"` + s.MAAURL + `","allOf":[` +
		`{"claim":"x-ms-isolation-tee.x-ms-attestation-type","equals":"sevsnpvm"},` +
		`{"claim":"x-ms-isolation-tee.x-ms-compliance-status","equals":"azure-compliant-cvm"},` +
		`{"claim":"x-ms-azurevm-vmid","equals":"` + vmid + `"}]}]}`)
}

func (s *Stack) seed(ctx context.Context, hc *http.Client) error {
	kc, err := s.KeysClient(hc)
	if err != nil {
		return err
	}
	store := filepath.Join(s.Dir, "store", "data")
	if _, err := kc.GetKey(ctx, KeyRSA, "", nil); err == nil {
		if _, err := os.Stat(store); err == nil {
			return nil // seeded before
		}
	}
	ct := "application/json; charset=utf-8"
	exportable := &azkeys.KeyAttributes{Exportable: to(true)}
	rsaResp, err := kc.CreateKey(ctx, KeyRSA, azkeys.CreateKeyParameters{Kty: to(azkeys.KeyTypeRSAHSM), KeySize: to(int32(3072)),
		KeyAttributes: exportable, ReleasePolicy: &azkeys.KeyReleasePolicy{ContentType: &ct, EncodedPolicy: s.releasePolicy(true)}}, nil)
	if err != nil {
		return fmt.Errorf("create %s: %w", KeyRSA, err)
	}
	octBytes := make([]byte, 32)
	crand.Read(octBytes)
	defer clear(octBytes)
	octResp, err := kc.ImportKey(ctx, KeyOct, azkeys.ImportKeyParameters{HSM: to(true),
		Key:           &azkeys.JSONWebKey{Kty: to(azkeys.KeyTypeOctHSM), K: octBytes},
		KeyAttributes: exportable, ReleasePolicy: &azkeys.KeyReleasePolicy{ContentType: &ct, EncodedPolicy: s.releasePolicy(true)}}, nil)
	if err != nil {
		return fmt.Errorf("import %s: %w", KeyOct, err)
	}
	if _, err := kc.CreateKey(ctx, KeyDenied, azkeys.CreateKeyParameters{Kty: to(azkeys.KeyTypeOctHSM), KeySize: to(int32(256)),
		KeyAttributes: exportable, ReleasePolicy: &azkeys.KeyReleasePolicy{ContentType: &ct,
			EncodedPolicy: s.releasePolicy(false)}}, nil); err != nil {
		return fmt.Errorf("create %s: %w", KeyDenied, err)
	}
	rsaJSON, _ := rsaResp.Key.MarshalJSON()
	rsaKey, err := keyrelease.ParseKey(rsaJSON)
	if err != nil {
		return err
	}
	// The sample files, kept in clear in DIR/plain/data for comparison.
	plain := filepath.Join(s.Dir, "plain", "data")
	files := map[string][]byte{
		"hello.txt":                 []byte("Hello from skrfs. This file was decrypted inside the (fake) TEE.\n"),
		"docs/readme.md":            []byte("# Demo dataset\n\nEvery file here is stored encrypted in store/data and decrypted on read.\n"),
		"nested/deeper/numbers.csv": numbersCSV(),
	}
	for name, b := range files {
		if err := writeFile(filepath.Join(plain, filepath.FromSlash(name)), b); err != nil {
			return err
		}
	}
	if err := writeRandom(filepath.Join(plain, "random-64m.bin"), 64<<20); err != nil {
		return err
	}
	dst, err := mkStore(store)
	if err != nil {
		return err
	}
	all, err := upload.Collect([]string{plain})
	if err != nil {
		return err
	}
	var text, bin []upload.File
	for _, f := range all {
		if strings.HasSuffix(f.Name, ".bin") {
			bin = append(bin, f)
		} else {
			text = append(text, f)
		}
	}
	for _, run := range []struct {
		files []upload.File
		kek   any
		kid   string
	}{{text, rsaKey.KEK(), string(*rsaResp.Key.KID)}, {bin, octBytes, string(*octResp.Key.KID)}} {
		ref, err := keyrelease.ParseKeyRef(run.kid)
		if err != nil {
			return err
		}
		ref.Version = "" // objects name the key; the filesystem releases the version they were sealed with
		res := upload.Run(ctx, dst, run.files, upload.Options{KEK: run.kek, KeyRef: ref.String(), Logger: s.opts.Logger})
		if len(res.Errors) > 0 {
			return errors.Join(res.Errors...)
		}
	}
	s.opts.Logger.Info().Str("store", store).Msg("seeded keys demo-rsa, demo-oct, denied and dataset data")
	return nil
}

func mkStore(dir string) (*localdir.Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return localdir.New(dir)
}

func to[T any](v T) *T { return &v }

func writeFile(p string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, b, 0o644)
}

func numbersCSV() []byte {
	var b strings.Builder
	b.WriteString("n,square,cube\n")
	for i := 1; i <= 5000; i++ {
		fmt.Fprintf(&b, "%d,%d,%d\n", i, i*i, i*i*i)
	}
	return []byte(b.String())
}

// writeRandom writes size deterministic pseudo-random bytes.
func writeRandom(p string, size int) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	defer f.Close()
	r := rand.NewChaCha8([32]byte{'s', 'k', 'r', 'f', 's'})
	buf := make([]byte, 1<<20)
	for left := size; left > 0; left -= len(buf) {
		r.Read(buf)
		if _, err := f.Write(buf[:min(left, len(buf))]); err != nil {
			return err
		}
	}
	return nil
}
