package main

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/skrfs/skrfs/keyrelease/evidence"
)

func newAttestCmd() *cobra.Command {
	var cfgFile string
	cmd := &cobra.Command{
		Use:   "attest [--config FILE]",
		Short: "Attest now and print the token's claims as JSON",
		Long: `Attest with the configured provider (SEV-SNP: evidence for a fresh wrapping
key to attest/SevSnpVm; azure-cvm: the vTPM's HCL report, quote and TPM key to
attest/AzureGuest), verify the token, and print its claims as JSON. Nothing
is released.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cfgFile)
			if err != nil {
				return err
			}
			rt, err := newRuntime(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			defer rt.close()
			if rt.skr == nil {
				return usageError{fmt.Errorf("%s configures no keys, so no attestation service", cfgFile)}
			}
			tok, err := rt.skr.Attest(cmd.Context())
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), tok.Claims)
		},
	}
	cmd.Flags().StringVar(&cfgFile, "config", "", "configuration file (docs/config.md)")
	cmd.AddCommand(noHarden(newAttestVerifyCmd())) // public evidence only
	return cmd
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newAttestVerifyCmd() *cobra.Command {
	var reportFile, certsFile, policyFile, runtimeFile, at, hclFile string
	var endorsementFiles []string
	var sgx sgxVerifyFlags
	cmd := &cobra.Command{
		Use:   "verify (--report FILE --certs FILE [--endorsement FILE] [--policy FILE] [--runtime-data FILE] | --hcl-report FILE [--certs FILE] | --sgx-quote FILE [--held-data FILE])",
		Short: "Verify given SEV-SNP evidence offline and print its claims",
		Long: `Verify a raw 1184-byte SEV-SNP report against its AMD certificates offline,
as MAA does: the report signature by the VCEK, the VCEK -> ASK -> ARK chain to
AMD's genuine roots (product taken from the report), and the TCB. Prints the
MAA-style claims as JSON and exits non-zero on any failure.

--certs is THIM's JSON, an ACI host-amd-cert-base64 file, or "VCEK||ASK||ARK"
PEM. --policy is a CCE policy (Rego, or its base64 as in an ARM template):
HOST_DATA must be its SHA-256. --runtime-data: REPORT_DATA must be the
SHA-256 of this file's bytes followed by zeros.

--endorsement is a UVM endorsement: the raw COSE_Sign1 or its base64 (an ACI
security context's reference-info-base64). It must be signed by the leaf of
its x5chain (with the algorithm its protected header names, which must suit
the leaf's key; Microsoft's are PS384), chain up to the CA that Microsoft's did:x509 issuer
names, come from the ContainerPlat-AMD-UVM feed, and endorse the report's
launch measurement; then the claims carry x-ms-compliance-status:
azure-compliant-uvm, as MAA's do. Repeat the flag for several.

--sgx-quote FILE verifies an Intel SGX DCAP quote v3 instead: the enclave
report signature by the attestation key, the QE report signature by the PCK
certificate, the QE's binding of the attestation key, and the PCK chain up
to the Intel SGX Root CA (pinned by its key). --held-data FILE: REPORT_DATA
must be its SHA-256 followed by zeros. Prints the x-ms-sgx-* claims; the TCB
status needs Intel's collateral and is reported as not evaluated.

Azure confidential VMs (vTPM): --hcl-report is the HCL report read from vTPM
NV index 0x01400001 (e.g. tpm2_nvread 0x01400001 -C o). Its runtime JSON
must be bound into the SEV-SNP REPORT_DATA and carry HCLAkPub; with --certs
(the VCEK from THIM, then ASK and ARK) the report's signature and chain are
verified too. The same check runs for --report with --runtime-data when
the runtime data is an HCL's JSON. Claims are printed AzureGuest-style:
x-ms-isolation-tee.* with the HCL JSON (HCLAkPub, vm-configuration) as its
x-ms-runtime. Without --certs the claims are printed, stderr says
"signature: not verified (no certificates)" and the exit status is 22. A
TDX HCL report is reported as TDX and refused (exit 21): TDX confidential
VMs are not supported yet.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if sgx.quoteFile != "" {
				return runSGXVerify(cmd, sgx, reportFile != "" || certsFile != "" || policyFile != "" || runtimeFile != "" || len(endorsementFiles) > 0 || hclFile != "", at)
			}
			if hclFile != "" || (reportFile != "" && runtimeFile != "" && policyFile == "" && isHCLRuntime(runtimeFile)) {
				return verifyCVM(cmd, hclFile, reportFile, runtimeFile, certsFile, at)
			}
			if reportFile == "" || certsFile == "" {
				return usageError{fmt.Errorf("--report and --certs (or --hcl-report) are required")}
			}
			report, err := os.ReadFile(reportFile)
			if err != nil {
				return err
			}
			certs, err := os.ReadFile(certsFile)
			if err != nil {
				return err
			}
			chain, err := parseCerts(certs)
			if err != nil {
				return fmt.Errorf("%s: %w", certsFile, err)
			}
			opts := evidence.Options{}
			if at != "" {
				if opts.Now, err = time.Parse(time.RFC3339, at); err != nil {
					return usageError{fmt.Errorf("--at: %v", err)}
				}
			}
			if runtimeFile != "" {
				if opts.RuntimeData, err = os.ReadFile(runtimeFile); err != nil {
					return err
				}
			}
			endorsements, err := verifyEndorsementFiles(endorsementFiles)
			if err != nil {
				return err
			}
			for _, e := range endorsements {
				opts.Endorsements = append(opts.Endorsements, e.raw)
			}
			claims, err := evidence.Verify(report, chain, opts)
			if err != nil {
				return fmt.Errorf("%w: %v", errAttestationFailed, err)
			}
			for _, e := range endorsements {
				if e.LaunchMeasurement != claims["x-ms-sevsnpvm-launchmeasurement"] {
					// Every endorsement given must hold: no compliance claim
					// even when another one matched.
					delete(claims, "x-ms-compliance-status")
					printJSON(cmd.OutOrStdout(), claims)
					return fmt.Errorf("%w: %s endorses launch measurement %s, but the report's is %v",
						errAttestationFailed, e.file, e.LaunchMeasurement, claims["x-ms-sevsnpvm-launchmeasurement"])
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "%s: UVM endorsement by %s (feed %s, guest SVN %s, signed %s) endorses the report's launch measurement\n",
					e.file, e.Issuer, e.Feed, e.GuestSVN, e.SigningTime.UTC().Format(time.RFC3339))
			}
			if policyFile != "" {
				pol, err := os.ReadFile(policyFile)
				if err != nil {
					return err
				}
				want := hex.EncodeToString(hostData(pol))
				if claims["x-ms-sevsnpvm-hostdata"] != want {
					printJSON(cmd.OutOrStdout(), claims)
					return fmt.Errorf("%w: host_data %v is not SHA-256 of the policy (%s)", errAttestationFailed, claims["x-ms-sevsnpvm-hostdata"], want)
				}
			}
			return printJSON(cmd.OutOrStdout(), claims)
		},
	}
	cmd.Flags().StringVar(&reportFile, "report", "", "raw SEV-SNP attestation report (1184 bytes)")
	cmd.Flags().StringVar(&certsFile, "certs", "", "AMD certificates: THIM JSON, host-amd-cert-base64, or PEM chain")
	cmd.Flags().StringArrayVar(&endorsementFiles, "endorsement", nil, "UVM endorsement (COSE_Sign1, raw or base64) that must endorse the report's launch measurement")
	cmd.Flags().StringVar(&policyFile, "policy", "", "CCE policy whose SHA-256 HOST_DATA must be")
	cmd.Flags().StringVar(&runtimeFile, "runtime-data", "", "runtime data bound into REPORT_DATA")
	cmd.Flags().StringVar(&hclFile, "hcl-report", "", "Azure CVM HCL report (vTPM NV index 0x01400001)")
	cmd.Flags().StringVar(&at, "at", "", "check certificates at this RFC 3339 time instead of now")
	cmd.Flags().StringVar(&sgx.quoteFile, "sgx-quote", "", "verify this SGX DCAP quote v3 instead (up to the Intel SGX Root CA)")
	cmd.Flags().StringVar(&sgx.heldDataFile, "held-data", "", "with --sgx-quote: enclave-held data whose SHA-256 REPORT_DATA must be")
	return cmd
}

// parseCerts accepts THIM JSON, its base64 (ACI's host-amd-cert-base64),
// or a PEM chain.
func parseCerts(b []byte) (*evidence.Chain, error) {
	s := strings.TrimSpace(string(b))
	if !strings.HasPrefix(s, "{") && !strings.HasPrefix(s, "-----") {
		if dec, err := base64.StdEncoding.DecodeString(s); err == nil {
			s = strings.TrimSpace(string(dec))
		}
	}
	if strings.HasPrefix(s, "{") {
		c, _, err := evidence.ParseTHIM([]byte(s))
		return c, err
	}
	return evidence.ParseChainPEM([]byte(s))
}

// hostData is SHA-256 of a CCE policy, given as Rego or as its base64.
func hostData(pol []byte) []byte {
	s := strings.TrimSpace(string(pol))
	if dec, err := base64.StdEncoding.DecodeString(s); err == nil && len(dec) > 0 && !strings.HasPrefix(s, "package") {
		pol = dec
	}
	h := sha256.Sum256(pol)
	return h[:]
}

// fileEndorsement is a verified UVM endorsement and the file it came from.
type fileEndorsement struct {
	*evidence.Endorsement
	file string
	raw  []byte
}

// verifyEndorsementFiles reads and verifies UVM endorsements against
// Microsoft's UVM endorser. Each file holds the raw COSE_Sign1 or its
// base64 (reference-info-base64 of an ACI security context).
func verifyEndorsementFiles(files []string) ([]fileEndorsement, error) {
	var out []fileEndorsement
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		raw := decodeEndorsement(b)
		e, err := evidence.VerifyEndorsement(raw, []evidence.Endorser{evidence.MicrosoftUVM})
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", errAttestationFailed, f, err)
		}
		out = append(out, fileEndorsement{Endorsement: e, file: f, raw: raw})
	}
	return out, nil
}

// decodeEndorsement returns the COSE_Sign1 bytes of a file: as they are
// when they start like CBOR (tag 18, or the bare 4-element array), else
// decoded from base64 when they are base64 text.
func decodeEndorsement(b []byte) []byte {
	if len(b) > 0 && (b[0] == 0xd2 || b[0] == 0x84) {
		return b
	}
	s := strings.TrimSpace(string(b))
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if dec, err := enc.DecodeString(s); err == nil && len(dec) > 0 {
			return dec
		}
	}
	return b
}
