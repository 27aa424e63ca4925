package cvm_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/skrfs/skrfs/internal/devstack/fakecvm"
	"github.com/skrfs/skrfs/keyrelease/attest/cvm"
	"github.com/skrfs/skrfs/keyrelease/attest/fakesnp"
	"github.com/skrfs/skrfs/keyrelease/evidence"
)

// seeded starts swtpm (a TPM 2.0 simulator in its own process, libtpms)
// and provisions it as an Azure CVM's vTPM.
func seeded(t *testing.T) (transport.TPM, *fakesnp.Device) {
	t.Helper()
	sw, err := fakecvm.StartSWTPM(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sw.Close)
	tpm, err := cvm.OpenTPM(sw.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tpm.Close() })
	dev, err := fakesnp.New(fakesnp.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fakecvm.Seed(tpm, dev, fakecvm.VMConfig{VMUniqueID: "0F2D7A3C-1111-4A4A-9C9C-000000000001", SecureBoot: true}); err != nil {
		t.Fatal(err)
	}
	return tpm, dev
}

// TestTPMSteps runs each TPM step of the provider against a TPM: the HCL
// report read in chunks and checked (binding, AK = HCLAkPub), the quote of
// PCRs 0-7, the PCR-bound encryption key certified by the AK (verified as
// the devstack's MAA verifies them), and decryption in the TPM (RSAES for
// the token key, OAEP-SHA256 for Key Vault), which stops once a PCR moves.
func TestTPMSteps(t *testing.T) {
	tpm, dev := seeded(t)
	ev, err := cvm.ReadHCL(tpm)
	if err != nil {
		t.Fatal(err)
	}
	if ev.HCL.TEE() != "sevsnpvm" || ev.Runtime.VMConfig["vmUniqueId"] != "0F2D7A3C-1111-4A4A-9C9C-000000000001" {
		t.Fatalf("HCL %+v", ev.Runtime.Claims)
	}
	// The SNP report verifies against the fake chain with the runtime binding.
	vcek, ask, ark := dev.Certs()
	chain, _ := evidence.ParseChainPEM(append(append(vcek, ask...), ark...))
	if _, _, err := evidence.VerifyCVM(ev.HCL.HWReport, ev.HCL.RuntimeData, chain, evidence.Options{ExtraRoots: dev.Roots()}); err != nil {
		t.Fatal(err)
	}

	nonce := "n-" + base64.RawURLEncoding.EncodeToString([]byte("fresh"))
	quote, qsig, pcrs, err := cvm.Quote(tpm, ev.AK, []byte(nonce))
	if err != nil {
		t.Fatal(err)
	}
	key, err := cvm.CreateEncKey(tpm)
	if err != nil {
		t.Fatal(err)
	}
	defer cvm.Flush(tpm, key.Handle)
	info, csig, err := cvm.Certify(tpm, key, ev.AK)
	if err != nil {
		t.Fatal(err)
	}
	body, err := cvm.Request(ev, cvm.RequestParts{Nonce: nonce, Quote: quote, QuoteSig: qsig, PCRs: pcrs, EncKey: key,
		CertifyInfo: info, CertifySig: csig, VCEKChainPEM: vcek})
	if err != nil {
		t.Fatal(err)
	}
	ai, err := cvm.ParseRequest(body)
	if err != nil {
		t.Fatal(err)
	}
	v, err := cvm.VerifyTPM(ai)
	if err != nil {
		t.Fatal(err)
	}
	if v.Nonce != nonce || v.AK.N.Cmp(ev.Runtime.AkPub.N) != 0 || v.EncKey.N.Cmp(key.RSA.N) != 0 || len(v.PCRs) != 8 {
		t.Fatalf("verified %+v", v)
	}
	// Each signed or bound field, altered, fails verification.
	for name, mut := range map[string]func(*cvm.AttestationInfo){
		"quote":          func(a *cvm.AttestationInfo) { a.TpmInfo.PcrQuote[len(a.TpmInfo.PcrQuote)-1] ^= 1 },
		"quote sig":      func(a *cvm.AttestationInfo) { a.TpmInfo.PcrSignature[3] ^= 1 },
		"pcr value":      func(a *cvm.AttestationInfo) { a.TpmInfo.PCRs[2].Digest[0] ^= 1 },
		"nonce":          func(a *cvm.AttestationInfo) { a.ClientPayload = []byte(`{"nonce":"other"}`) },
		"certify":        func(a *cvm.AttestationInfo) { a.TpmInfo.EncKeyCertifyInfoSignature[5] ^= 1 },
		"another enckey": func(a *cvm.AttestationInfo) { a.TpmInfo.EncKeyPub = tpm2.Marshal(ev.AK.Public) },
	} {
		a2, _ := cvm.ParseRequest(body)
		mut(a2)
		if _, err := cvm.VerifyTPM(a2); !errors.Is(err, cvm.ErrTPMEvidence) {
			t.Errorf("%s altered: %v", name, err)
		}
	}

	secret := bytes.Repeat([]byte{0x42}, 32)
	ct, _ := rsa.EncryptOAEP(sha256.New(), rand.Reader, key.RSA, secret, nil)
	if got, err := cvm.Decrypt(tpm, key, ct, tpm2.TPMAlgOAEP, tpm2.TPMAlgSHA256); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("OAEP in the TPM: %v", err)
	}
	ct, _ = rsa.EncryptPKCS1v15(rand.Reader, key.RSA, secret)
	if got, err := cvm.Decrypt(tpm, key, ct, tpm2.TPMAlgRSAES, tpm2.TPMAlgNull); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("RSAES in the TPM: %v", err)
	}
	// Extend PCR 7: the key's PCR policy no longer holds.
	if _, err := (tpm2.PCRExtend{PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(7), Auth: tpm2.PasswordAuth(nil)},
		Digests: tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: make([]byte, 32)}}}}).Execute(tpm); err != nil {
		t.Fatal(err)
	}
	if _, err := cvm.Decrypt(tpm, key, ct, tpm2.TPMAlgRSAES, tpm2.TPMAlgNull); err == nil {
		t.Fatal("decrypted after PCR 7 changed")
	}
}

// TestReadHCLRejectsForeignAK: an AK at 0x81000003 that is not the
// report's HCLAkPub is refused.
func TestReadHCLRejectsForeignAK(t *testing.T) {
	tpm, dev := seeded(t)
	hcl, err := cvm.ReadNV(tpm, cvm.HCLReportIndex)
	if err != nil {
		t.Fatal(err)
	}
	// Re-seed: a new AK and report; then put the old report back.
	if _, err := fakecvm.Seed(tpm, dev, fakecvm.VMConfig{VMUniqueID: "x"}); err != nil {
		t.Fatal(err)
	}
	if _, err := cvm.ReadHCL(tpm); err != nil {
		t.Fatal(err)
	}
	if err := fakecvm.WriteNV(tpm, cvm.HCLReportIndex, hcl); err != nil {
		t.Fatal(err)
	}
	if _, err := cvm.ReadHCL(tpm); err == nil || !strings.Contains(err.Error(), "HCLAkPub") {
		t.Fatalf("foreign AK: %v", err)
	}
}

// TestReadHCLRefusesTDX: a TDX HCL report (report type 4) in the vTPM is
// refused with the clear error, before anything is sent.
func TestReadHCLRefusesTDX(t *testing.T) {
	tpm, _ := seeded(t)
	hcl, err := cvm.ReadNV(tpm, cvm.HCLReportIndex)
	if err != nil {
		t.Fatal(err)
	}
	hcl[0x4C8] = 4
	if err := fakecvm.WriteNV(tpm, cvm.HCLReportIndex, hcl); err != nil {
		t.Fatal(err)
	}
	if _, err := cvm.ReadHCL(tpm); !errors.Is(err, evidence.ErrTDX) || !strings.Contains(err.Error(), "TDX confidential VMs are not supported yet") {
		t.Fatalf("TDX: %v", err)
	}
}
