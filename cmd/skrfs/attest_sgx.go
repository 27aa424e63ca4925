package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/skrfs/skrfs/keyrelease/evidence/sgxquote"
)

// sgxVerifyFlags are `skrfs attest verify --sgx-quote FILE [--held-data FILE]`.
type sgxVerifyFlags struct {
	quoteFile, heldDataFile string
}

// tcbNotEvaluated is printed with every verified SGX quote: the PCK chain
// and signatures hold, but whether the platform's TCB is up to date needs
// Intel's collateral (TCB info, QE identity, CRLs), which is not given.
const tcbNotEvaluated = "not evaluated (no collateral)"

// runSGXVerify verifies an SGX quote offline and prints its claims as JSON
// on stdout; the TCB status and what was not checked go to stderr.
func runSGXVerify(cmd *cobra.Command, f sgxVerifyFlags, snpFlags bool, at string) error {
	if snpFlags {
		return usageError{fmt.Errorf("--sgx-quote cannot be combined with --report, --certs, --policy or --runtime-data")}
	}
	quote, err := os.ReadFile(f.quoteFile)
	if err != nil {
		return err
	}
	var opts sgxquote.Options
	if at != "" {
		if opts.Now, err = time.Parse(time.RFC3339, at); err != nil {
			return usageError{fmt.Errorf("--at: %v", err)}
		}
	}
	if f.heldDataFile != "" {
		if opts.HeldData, err = os.ReadFile(f.heldDataFile); err != nil {
			return err
		}
	}
	res, err := sgxquote.Verify(quote, opts)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", errAttestationFailed, f.quoteFile, err)
	}
	claims := sgxquote.Claims(res.Quote, opts.HeldData)
	claims["skrfs-sgx-tcb-status"] = tcbNotEvaluated
	if err := printJSON(cmd.OutOrStdout(), claims); err != nil {
		return err
	}
	w := cmd.ErrOrStderr()
	fmt.Fprintf(w, "Quote signatures and PCK chain verified up to %q.\n", res.Chain[len(res.Chain)-1].Subject.CommonName)
	fmt.Fprintf(w, "TCB status: %s; Intel PCS TCB info for FMSPC %s, PCE-ID %s, QE identity and CRLs were not checked.\n", tcbNotEvaluated, orUnknown(res.FMSPC), orUnknown(res.PCEID))
	if opts.HeldData == nil {
		fmt.Fprintln(w, "Report data: not checked (no --held-data).")
	} else {
		fmt.Fprintln(w, "Report data: SHA-256 of the held data.")
	}
	if res.Quote.Report.Debuggable() {
		fmt.Fprintln(w, "Warning: the enclave is debuggable: its memory is readable from outside; never release keys to it.")
	}
	return nil
}

func orUnknown(s string) string {
	if s == "" {
		return "(unknown)"
	}
	return s
}
