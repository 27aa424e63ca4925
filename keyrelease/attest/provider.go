package attest

import (
	"context"
	"crypto"
	"errors"
	"sync"

	"github.com/skrfs/skrfs/keyrelease/maa"
)

// Provider is one TEE's attestation, the seam between the release path and
// the hardware: it proves the TEE to Microsoft Azure Attestation and
// returns the verified token, the decrypter of the key that the token
// names (the key Key Vault wraps the released key to), and the `enc` to
// request. One package per TEE implements it:
//
//   - keyrelease/attest/snp: SEV-SNP guests (ACI, Kata, /dev/sev-guest)
//     and the devstack's fake device: a software RSA key bound into
//     REPORT_DATA, POST /attest/SevSnpVm, x-ms-runtime = our runtime JSON.
//   - keyrelease/attest/cvm: Azure confidential VMs: the HCL report and a
//     quote from the vTPM, a TPM-resident key, POST /attest/AzureGuest,
//     x-ms-runtime carrying our nonce and the TPM key.
//   - SGX (later): attest/SgxEnclave with its own runtime check.
//
// The token check beyond signature, issuer and expiry (which maa.Client
// does) is the provider's: each TEE's token carries its key differently.
// The release path (keyrelease/skr, keyrelease/akv) never sees the key's
// private part: it calls Key.Decrypt with rsa.OAEPOptions for the RSA step
// of the CKM_RSA_AES_KEY_WRAP family.
type Provider interface {
	// Name is the provider's configuration name ("snp", "fake",
	// "azure-cvm"), for logs.
	Name() string
	// Attest attests now. The caller owns the result and must Close it.
	Attest(ctx context.Context) (*Attestation, error)
}

// Attestation is a verified MAA token and the key it names.
type Attestation struct {
	// Token is verified: signature by the instance, issuer, validity, and
	// the provider's runtime check.
	Token *maa.Token
	// Key decrypts what Key Vault wraps to the token's key (RSA-OAEP with
	// the hash of Enc). Its private part stays in this process (snp) or
	// in the TPM (cvm).
	Key crypto.Decrypter
	// Enc is the key export algorithm to request (wrapkey.Enc*).
	Enc string

	once    sync.Once
	release func()
}

// NewAttestation returns an Attestation; release (may be nil) runs once at
// Close: it wipes or unloads the key.
func NewAttestation(tok *maa.Token, key crypto.Decrypter, enc string, release func()) *Attestation {
	return &Attestation{Token: tok, Key: key, Enc: enc, release: release}
}

// Close wipes or unloads the key. It is idempotent.
func (a *Attestation) Close() {
	if a == nil {
		return
	}
	a.once.Do(func() {
		if a.release != nil {
			a.release()
		}
	})
}

// ErrNoRawEvidence: the TEE cannot produce a report over caller-chosen
// REPORT_DATA. On an Azure CVM the paravisor fixes REPORT_DATA to the hash
// of its own runtime JSON, so the sidecar's /attest/raw, /attest/combined
// and /attest/maa, which bind the caller's runtime data, are refused with
// this error (403 with a JSON message); /key/release works.
var ErrNoRawEvidence = errors.New("attest: this TEE cannot bind caller runtime data into a report (Azure CVM: the paravisor fixes REPORT_DATA to its own runtime JSON); use /key/release, or skrfs attest for the token")

// Preparer is implemented by providers that can do slow work (key
// generation) ahead of the next Attest.
type Preparer interface {
	PrepareNow()
}
