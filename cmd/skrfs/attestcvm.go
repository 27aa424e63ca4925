package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/skrfs/skrfs/keyrelease/evidence"
)

// isHCLRuntime reports whether a runtime-data file is an HCL's runtime
// JSON (it names HCLAkPub), so that --report --runtime-data verify it as
// Azure CVM evidence.
func isHCLRuntime(path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	_, err = evidence.ParseHCLRuntime(b)
	return err == nil
}

// verifyCVM is `attest verify` for Azure confidential-VM evidence: an HCL
// report, or its SEV-SNP report and runtime JSON given separately.
func verifyCVM(cmd *cobra.Command, hclFile, reportFile, runtimeFile, certsFile, at string) error {
	var report, runtime []byte
	var hcl *evidence.HCLReport
	switch {
	case hclFile != "" && (reportFile != "" || runtimeFile != ""):
		return usageError{errors.New("--hcl-report carries the report and runtime data: give it without --report or --runtime-data")}
	case hclFile != "":
		b, err := os.ReadFile(hclFile)
		if err != nil {
			return err
		}
		if hcl, err = evidence.ParseHCLReport(b); err != nil {
			return fmt.Errorf("%w: %s: %v", errAttestationFailed, hclFile, err)
		}
		report, runtime = hcl.HWReport, hcl.RuntimeData
	default:
		var err error
		if report, err = os.ReadFile(reportFile); err != nil {
			return err
		}
		if runtime, err = os.ReadFile(runtimeFile); err != nil {
			return err
		}
	}
	stderr := cmd.ErrOrStderr()
	if hcl != nil {
		fmt.Fprintf(stderr, "HCL report: version %d, %d bytes used, TEE %s, runtime data %d bytes\n",
			hcl.Version, hcl.ReportSize, hcl.TEE(), len(hcl.RuntimeData))
		if hcl.ReportType == evidence.HCLReportTypeTDX {
			binding := "holds"
			if err := hcl.CheckBinding(); err != nil {
				binding = "BROKEN"
			}
			fmt.Fprintf(stderr, "TDX TD report; runtime-data binding %s\n", binding)
			return fmt.Errorf("%w: %s: %w", errAttestationFailed, hclFile, evidence.ErrTDX)
		}
	}
	var chain *evidence.Chain
	if certsFile != "" {
		b, err := os.ReadFile(certsFile)
		if err != nil {
			return err
		}
		if chain, err = parseCerts(b); err != nil {
			return fmt.Errorf("%s: %w", certsFile, err)
		}
	}
	opts := evidence.Options{}
	if at != "" {
		var err error
		if opts.Now, err = time.Parse(time.RFC3339, at); err != nil {
			return usageError{fmt.Errorf("--at: %v", err)}
		}
	}
	claims, rt, err := evidence.VerifyCVM(report, runtime, chain, opts)
	if err != nil {
		return fmt.Errorf("%w: %v", errAttestationFailed, err)
	}
	out := map[string]any{"claims": claims, "HCLAkPub": evidence.AkPubSummary(rt.AkPub)}
	if rt.VMConfig != nil {
		out["vm-configuration"] = rt.VMConfig
	}
	if chain == nil {
		out["signature"] = "not verified (no certificates)"
	} else {
		out["signature"] = "verified (VCEK, ASK, ARK)"
	}
	if err := printJSON(cmd.OutOrStdout(), out); err != nil {
		return err
	}
	fmt.Fprintln(stderr, "runtime-data binding: verified")
	if chain == nil {
		fmt.Fprintln(stderr, "signature: not verified (no certificates)")
		return exitError{exitUnverified}
	}
	fmt.Fprintln(stderr, "signature: verified (VCEK -> ASK -> ARK)")
	return nil
}
