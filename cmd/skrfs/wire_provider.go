package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/skrfs/skrfs/internal/config"
	"github.com/skrfs/skrfs/keyrelease"
	"github.com/skrfs/skrfs/keyrelease/attest"
	"github.com/skrfs/skrfs/keyrelease/attest/cvm"
	"github.com/skrfs/skrfs/keyrelease/attest/sgx"
	"github.com/skrfs/skrfs/keyrelease/attest/snp"
	"github.com/skrfs/skrfs/keyrelease/attested"
	"github.com/skrfs/skrfs/keyrelease/maa"
)

// newProvider picks the attestation provider of cfg. It also returns the
// SEV-SNP evidence source of the sidecar's /attest/raw, /attest/combined
// and /attest/maa: under azure-cvm that source refuses with
// attest.ErrNoRawEvidence (caller runtime data cannot enter an HCL report).
func newProvider(cfg *config.Config, hc *http.Client, mc *maa.Client) (attest.Provider, evidenceProvider, error) {
	a := cfg.Attestation
	switch a.Provider {
	case config.ProviderSGX:
		p, err := sgx.Open(sgxOptions(cfg, mc))
		if err != nil {
			return nil, nil, err
		}
		return p, noRawEvidenceSGX{}, nil
	case config.ProviderAzureCVM:
		p, err := cvm.Open(cvmOptions(cfg, hc, mc))
		if err != nil {
			return nil, nil, err
		}
		return p, noRawEvidence{}, nil
	case config.ProviderAuto:
		ev, snpErr := newEvidence(cfg, hc)
		if snpErr == nil {
			log.Info().Str("provider", "snp").Msg("attestation.provider auto: a SEV-SNP guest interface was found (ACI, Kata or SNP VM)")
			return &snp.Provider{Evidence: attested.Evidence(ev), MAA: mc}, ev, nil
		}
		p, cvmErr := cvm.Open(cvmOptions(cfg, hc, mc))
		if cvmErr == nil {
			log.Info().Str("provider", "azure-cvm").Str("no_snp_device", snpErr.Error()).
				Msg("attestation.provider auto: no SEV-SNP guest device, but a vTPM holding an HCL report: an Azure confidential VM")
			return p, noRawEvidence{}, nil
		}
		sp, sgxErr := sgx.Open(sgxOptions(cfg, mc))
		if sgxErr == nil {
			log.Info().Str("provider", "sgx").Str("no_snp_device", snpErr.Error()).Str("no_cvm_vtpm", cvmErr.Error()).
				Msg("attestation.provider auto: no SEV-SNP device or vTPM, but Gramine's /dev/attestation in DCAP mode: an SGX enclave")
			return sp, noRawEvidenceSGX{}, nil
		}
		return nil, nil, fmt.Errorf("attestation.provider auto found no TEE: SEV-SNP: %v; Azure CVM vTPM: %v; SGX (Gramine): %v", snpErr, cvmErr, sgxErr)
	default:
		ev, err := newEvidence(cfg, hc)
		if err != nil {
			return nil, nil, err
		}
		return &snp.Provider{Evidence: attested.Evidence(ev), MAA: mc, ProviderName: a.Provider}, ev, nil
	}
}

func cvmOptions(cfg *config.Config, hc *http.Client, mc *maa.Client) cvm.Options {
	o := cvm.Options{MAA: mc, HTTPClient: hc, Logger: log}
	if c := cfg.Attestation.CVM; c != nil {
		o.TPM, o.Enc = c.TPM, c.Enc
		if c.EventLog != "" {
			o.EventLog = cfg.Path(c.EventLog)
		}
	}
	if e := cfg.Identity.IMDSEndpoint; e != "" {
		o.THIMURL = strings.TrimSuffix(e, "/") + "/metadata/THIM/amd/certification"
	}
	return o
}

// refuseInSGX refuses to hand plaintext to the kernel from an SGX enclave:
// a FUSE mount (every plaintext page goes through the kernel, and Gramine
// has no mount) and the sidecar API (Gramine forwards loopback sockets to
// the host kernel, so a served key would leave the enclave). what names the
// refused mode.
func refuseInSGX(rt *runtime, what string) error {
	if rt == nil || rt.skr == nil || rt.skr.Provider == nil || rt.skr.Provider.Name() != config.ProviderSGX {
		return nil
	}
	return usageError{fmt.Errorf("attestation provider sgx: %s would hand plaintext to the kernel, which is outside the enclave; in SGX use skrfs fetch or skrfs run --no-fuse --exec (into delivery.enclave_dir)", what)}
}

func sgxOptions(cfg *config.Config, mc *maa.Client) sgx.Options {
	o := sgx.Options{MAA: mc, Logger: log}
	if c := cfg.Attestation.SGX; c != nil {
		o.Enc = c.Enc
		if c.Dir != "" {
			o.Dir = cfg.Path(c.Dir)
		}
	}
	return o
}

// noRawEvidenceSGX is the sidecar's SEV-SNP evidence source under sgx:
// an enclave has no SEV-SNP report to give.
type noRawEvidenceSGX struct{}

func (noRawEvidenceSGX) Evidence(context.Context, [64]byte) (*attest.Evidence, error) {
	return nil, fmt.Errorf("%w: %w: SGX enclaves produce DCAP quotes, not SEV-SNP reports; use /key/release, or skrfs attest for the token", keyrelease.ErrAttestation, attest.ErrNoRawEvidence)
}

// noRawEvidence is the sidecar's evidence source under azure-cvm.
type noRawEvidence struct{}

func (noRawEvidence) Evidence(context.Context, [64]byte) (*attest.Evidence, error) {
	return nil, fmt.Errorf("%w: %w", keyrelease.ErrAttestation, attest.ErrNoRawEvidence)
}
