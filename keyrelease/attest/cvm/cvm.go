// Package cvm is the attestation provider for Azure confidential VMs
// (SEV-SNP CVMs with a paravisor, "HCL", and a vTPM; protocol.md 13): the
// HCL report from vTPM NV 0x01400001, a quote of PCRs 0-7 by the vTPM's
// attestation key (0x81000003, which must equal the report's HCLAkPub), a
// PCR-bound encryption key created in the TPM and certified by the AK, the
// TCG event log and the VCEK chain, sent to MAA's attest/AzureGuest. MAA
// answers with the token encrypted to the TPM key; Key Vault wraps the
// released key to the same TPM key, whose private part never leaves the
// TPM: TPM2_RSA_Decrypt does the RSA step of the unwrap.
package cvm

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/rs/zerolog"

	"github.com/skrfs/skrfs/keyrelease"
	"github.com/skrfs/skrfs/keyrelease/attest"
	"github.com/skrfs/skrfs/keyrelease/evidence"
	"github.com/skrfs/skrfs/keyrelease/maa"
	"github.com/skrfs/skrfs/keyrelease/wrapkey"
)

// DefaultEventLog is the kernel's TCG event log.
const DefaultEventLog = "/sys/kernel/security/tpm0/binary_bios_measurements"

// Options configure the provider.
type Options struct {
	// TPM is the TPM: a device path (default /dev/tpmrm0) or
	// "tcp:HOST:PORT" (swtpm, a simulator).
	TPM string
	// EventLog is the TCG event log (default DefaultEventLog). A missing
	// log is sent empty, with a warning.
	EventLog string
	// MAA is the attestation instance.
	MAA *maa.Client
	// Certs returns the VCEK (PEM) and the ASK/ARK chain (PEM) for an SNP
	// report (nil = THIM on IMDS, then AMD KDS, as attest.SNP does).
	Certs func(ctx context.Context, report []byte) (vcek, chain []byte, err error)
	// THIMURL, KDSURL and HTTPClient configure the default Certs.
	THIMURL, KDSURL string
	HTTPClient      *http.Client
	// Enc is the key export algorithm to request (default
	// RSA_AES_KEY_WRAP_256: OAEP-SHA256 in the TPM).
	Enc    string
	Logger zerolog.Logger
}

// Provider implements attest.Provider for Azure CVMs.
type Provider struct {
	opts Options
	mu   sync.Mutex // one TPM conversation at a time
	tpm  transport.TPMCloser
}

var _ attest.Provider = (*Provider)(nil)

// ErrNoTPM: no vTPM at the configured path.
var ErrNoTPM = errors.New("cvm: no TPM")

// Open opens the TPM and checks that it holds an HCL report: a TPM without
// one is not an Azure CVM's vTPM.
func Open(opts Options) (*Provider, error) {
	if opts.Enc == "" {
		opts.Enc = wrapkey.EncRSAAESKeyWrap256
	}
	if _, err := wrapkey.OAEPHash(opts.Enc); err != nil {
		return nil, err
	}
	if opts.EventLog == "" {
		opts.EventLog = DefaultEventLog
	}
	t, err := OpenTPM(opts.TPM)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrNoTPM, orDefault(opts.TPM, DefaultTPM), err)
	}
	if _, err := (tpm2.NVReadPublic{NVIndex: HCLReportIndex}).Execute(t); err != nil {
		t.Close()
		return nil, fmt.Errorf("%w: %s has no HCL report at NV %#x (not an Azure confidential VM's vTPM): %v", ErrNoTPM, orDefault(opts.TPM, DefaultTPM), uint32(HCLReportIndex), err)
	}
	if opts.Certs == nil {
		opts.Certs = thimCerts(opts)
	}
	opts.Logger.Info().Str("tpm", orDefault(opts.TPM, DefaultTPM)).Str("event_log", opts.EventLog).Str("enc", opts.Enc).
		Msg("Azure confidential VM (vTPM) attestation provider selected")
	return &Provider{opts: opts, tpm: t}, nil
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// Name implements attest.Provider.
func (p *Provider) Name() string { return "azure-cvm" }

// Close closes the TPM.
func (p *Provider) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tpm != nil {
		p.tpm.Close()
		p.tpm = nil
	}
}

// fixedReport lets attest.SNP fetch certificates for a report it did not
// ask for: the HCL's REPORT_DATA is the paravisor's, not ours.
type fixedReport []byte

func (f fixedReport) GetRawQuote([64]byte) ([]byte, error) { return f, nil }

func thimCerts(opts Options) func(context.Context, []byte) ([]byte, []byte, error) {
	return func(ctx context.Context, report []byte) ([]byte, []byte, error) {
		s, err := attest.NewSNP(fixedReport(report), attest.Options{SecurityContextDir: "/nonexistent", THIMURL: opts.THIMURL,
			KDSURL: opts.KDSURL, HTTPClient: opts.HTTPClient, Logger: zerolog.Nop()})
		if err != nil {
			return nil, nil, err
		}
		ev, err := s.Evidence(ctx, [64]byte{})
		if err != nil {
			return nil, nil, err
		}
		return ev.VCEK, ev.Chain, nil
	}
}

// Evidence is what one attestation gathered from the vTPM.
type Evidence struct {
	HCL     *evidence.HCLReport
	Runtime *evidence.HCLRuntime
	AK      *Key
}

// ReadHCL reads and checks the HCL report: SEV-SNP (TDX is refused), the
// runtime JSON bound into REPORT_DATA, and the AK at 0x81000003 equal to
// HCLAkPub.
func ReadHCL(t transport.TPM) (*Evidence, error) {
	raw, err := ReadNV(t, HCLReportIndex)
	if err != nil {
		return nil, err
	}
	h, err := evidence.ParseHCLReport(raw)
	if err != nil {
		return nil, err
	}
	if h.ReportType == evidence.HCLReportTypeTDX {
		return nil, evidence.ErrTDX
	}
	if err := h.CheckBinding(); err != nil {
		return nil, err
	}
	rt, err := evidence.ParseHCLRuntime(h.RuntimeData)
	if err != nil {
		return nil, err
	}
	ak, err := ReadKey(t, AKHandle)
	if err != nil {
		return nil, fmt.Errorf("attestation key: %w", err)
	}
	if ak.RSA.N.Cmp(rt.AkPub.N) != 0 || ak.RSA.E != rt.AkPub.E {
		return nil, fmt.Errorf("the TPM key at %#x is not the HCL report's HCLAkPub", uint32(AKHandle))
	}
	return &Evidence{HCL: h, Runtime: rt, AK: ak}, nil
}

// Attest implements attest.Provider.
func (p *Provider) Attest(ctx context.Context) (*attest.Attestation, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tpm == nil {
		return nil, fmt.Errorf("%w: closed", ErrNoTPM)
	}
	t := p.tpm
	fail := func(err error) (*attest.Attestation, error) {
		if errors.Is(err, keyrelease.ErrAttestation) || errors.Is(err, keyrelease.ErrUnavailable) || errors.Is(err, context.Canceled) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: azure-cvm: %w", keyrelease.ErrAttestation, err)
	}
	ev, err := ReadHCL(t)
	if err != nil {
		return fail(err)
	}
	nonceRaw := make([]byte, 32)
	rand.Read(nonceRaw)
	nonce := base64.RawURLEncoding.EncodeToString(nonceRaw)
	quote, quoteSig, pcrs, err := Quote(t, ev.AK, []byte(nonce))
	if err != nil {
		return fail(err)
	}
	key, err := CreateEncKey(t)
	if err != nil {
		return fail(err)
	}
	ok := false
	defer func() {
		if !ok {
			Flush(t, key.Handle)
		}
	}()
	certInfo, certSig, err := Certify(t, key, ev.AK)
	if err != nil {
		return fail(err)
	}
	vcek, chain, err := p.opts.Certs(ctx, ev.HCL.HWReport)
	if err != nil {
		return fail(fmt.Errorf("VCEK certificates: %w", err))
	}
	log, err := os.ReadFile(p.opts.EventLog)
	if err != nil {
		p.opts.Logger.Warn().Err(err).Msg("no TCG event log: sending none")
		log = nil
	}
	distro, build, major, minor := osRelease()
	body, err := Request(ev, RequestParts{Nonce: nonce, Quote: quote, QuoteSig: quoteSig, PCRs: pcrs, EncKey: key,
		CertifyInfo: certInfo, CertifySig: certSig, VCEKChainPEM: append(append([]byte(nil), vcek...), chain...), EventLog: log,
		OSDistro: distro, OSBuild: build, OSVersionMajor: major, Minor: minor})
	if err != nil {
		return fail(err)
	}
	envTok, err := p.opts.MAA.AttestAzureGuest(ctx, body)
	if err != nil {
		return fail(err)
	}
	env, err := ParseEnvelope(envTok)
	if err != nil {
		return fail(err)
	}
	inner, err := Decrypt(t, key, env.EncryptedInnerKey, tpm2.TPMAlgRSAES, tpm2.TPMAlgNull)
	if err != nil {
		return fail(fmt.Errorf("token key: %w", err))
	}
	jwt, err := env.Open(inner)
	clear(inner)
	if err != nil {
		return fail(err)
	}
	tok, err := p.opts.MAA.Verify(ctx, jwt, nil)
	if err != nil {
		return fail(err)
	}
	if err := CheckRuntime(tok.Claims, nonce, key.RSA, ev.HCL.RuntimeData); err != nil {
		return fail(err)
	}
	ok = true
	dec := &tpmDecrypter{p: p, key: key}
	return attest.NewAttestation(tok, dec, p.opts.Enc, dec.flush), nil
}

// osRelease reads the distribution, build and version for the request's
// OS fields from /etc/os-release (MAA echoes them as claims).
func osRelease() (distro, build string, major, minor int) {
	b, err := os.ReadFile("/etc/os-release")
	if err != nil {
		return "", "", 0, 0
	}
	kv := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			kv[k] = strings.Trim(v, `"'`)
		}
	}
	distro, build = kv["NAME"], kv["VERSION"]
	ver := strings.SplitN(kv["VERSION_ID"], ".", 3)
	if len(ver) > 0 {
		major, _ = strconv.Atoi(ver[0])
	}
	if len(ver) > 1 {
		minor, _ = strconv.Atoi(ver[1])
	}
	return distro, build, major, minor
}

// RequestParts are the TPM outputs of one attestation.
type RequestParts struct {
	Nonce                 string
	Quote, QuoteSig       []byte
	PCRs                  [][]byte
	EncKey                *Key
	CertifyInfo           []byte
	CertifySig            []byte
	VCEKChainPEM          []byte
	EventLog              []byte
	OSDistro, OSBuild     string
	OSVersionMajor, Minor int
}

// Request builds the AzureGuest request body.
func Request(ev *Evidence, r RequestParts) ([]byte, error) {
	b64 := base64.StdEncoding.EncodeToString
	b64u := base64.URLEncoding.EncodeToString
	proof, err := json.Marshal(SnpProof{SnpReport: b64u(ev.HCL.HWReport), VcekCertChain: b64u(r.VCEKChainPEM)})
	if err != nil {
		return nil, err
	}
	cp, err := json.Marshal(ClientPayload{Nonce: r.Nonce})
	if err != nil {
		return nil, err
	}
	ai := AttestationInfo{
		AttestationProtocolVersion: "2.0",
		OSType:                     b64([]byte("Linux")),
		OSDistro:                   b64([]byte(orDefault(r.OSDistro, "Linux"))),
		OSBuild:                    b64([]byte(orDefault(r.OSBuild, "NotApplication"))),
		OSVersionMajor:             r.OSVersionMajor,
		OSVersionMinor:             r.Minor,
		TcgLogs:                    r.EventLog,
		ClientPayload:              cp,
		TpmInfo: TpmInfo{
			AikPub: tpm2.Marshal(ev.AK.Public), PcrQuote: r.Quote, PcrSignature: r.QuoteSig,
			EncKeyPub: tpm2.Marshal(r.EncKey.Public), EncKeyCertifyInfo: r.CertifyInfo, EncKeyCertifyInfoSignature: r.CertifySig,
		},
		IsolationInfo: IsolationInfo{Type: "SevSnp", Evidence: IsolationEvidence{Proof: proof, RunTimeData: ev.HCL.RuntimeData}},
	}
	for i, d := range r.PCRs {
		ai.TpmInfo.PcrSet = append(ai.TpmInfo.PcrSet, int(QuotePCRs[i]))
		ai.TpmInfo.PCRs = append(ai.TpmInfo.PCRs, PCR{Index: int(QuotePCRs[i]), Digest: d})
	}
	inner, err := json.Marshal(ai)
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]string{"AttestationInfo": base64.URLEncoding.EncodeToString(inner)})
}

// tpmDecrypter is the TPM-resident key as a crypto.Decrypter: RSA-OAEP in
// the TPM (TPM2_RSA_Decrypt under the PCR policy).
type tpmDecrypter struct {
	p       *Provider
	key     *Key
	flushed bool
}

func (d *tpmDecrypter) Public() crypto.PublicKey { return d.key.RSA }

func (d *tpmDecrypter) Decrypt(_ io.Reader, msg []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	o, ok := opts.(*rsa.OAEPOptions)
	if !ok || len(o.Label) != 0 || (o.MGFHash != 0 && o.MGFHash != o.Hash) {
		return nil, errors.New("cvm: the TPM key decrypts RSA-OAEP without label only")
	}
	var h tpm2.TPMIAlgHash
	switch o.Hash {
	case crypto.SHA1:
		h = tpm2.TPMAlgSHA1
	case crypto.SHA256:
		h = tpm2.TPMAlgSHA256
	case crypto.SHA384:
		h = tpm2.TPMAlgSHA384
	default:
		return nil, fmt.Errorf("cvm: OAEP hash %v", o.Hash)
	}
	d.p.mu.Lock()
	defer d.p.mu.Unlock()
	if d.flushed || d.p.tpm == nil {
		return nil, errors.New("cvm: the TPM key is gone")
	}
	return Decrypt(d.p.tpm, d.key, msg, tpm2.TPMAlgOAEP, h)
}

func (d *tpmDecrypter) flush() {
	d.p.mu.Lock()
	defer d.p.mu.Unlock()
	if !d.flushed && d.p.tpm != nil {
		Flush(d.p.tpm, d.key.Handle)
	}
	d.flushed = true
}
