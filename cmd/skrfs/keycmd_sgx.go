package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/skrfs/skrfs/keyrelease/policy"
)

// sgxPolicyFlags are `skrfs key create --sgx-mrsigner HEX [--sgx-mrenclave
// HEX] --sgx-product-id N --sgx-min-svn N`.
type sgxPolicyFlags struct {
	mrsigner, mrenclave string
	productID, minSVN   int
}

func (f *sgxPolicyFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.mrsigner, "sgx-mrsigner", "", "SGX: the enclave signer's MRSIGNER (64 hex digits); writes the SGX release policy")
	cmd.Flags().StringVar(&f.mrenclave, "sgx-mrenclave", "", "SGX: also pin this MRENCLAVE (64 hex digits): one exact enclave build")
	cmd.Flags().IntVar(&f.productID, "sgx-product-id", -1, "SGX: the enclave's ISV product id (0-65535)")
	cmd.Flags().IntVar(&f.minSVN, "sgx-min-svn", -1, "SGX: the lowest ISV SVN allowed (0-65535)")
}

// set reports whether any SGX flag was given.
func (f *sgxPolicyFlags) set() bool {
	return f.mrsigner != "" || f.mrenclave != "" || f.productID != -1 || f.minSVN != -1
}

// sgxPolicy is the release policy for SGX enclaves (protocol.md sections 6
// and 14), for tokens of MAA's attest/SgxEnclave issued by authority:
//
//   - x-ms-attestation-type equals "sgx";
//   - x-ms-sgx-mrsigner equals the signer (lower-case hex, as MAA writes it);
//   - x-ms-sgx-mrenclave equals the enclave, when given;
//   - x-ms-sgx-product-id equals the product id;
//   - x-ms-sgx-svn greater than min-1 (that is, at least min): `greater` is
//     the operator Microsoft's SGX release policy examples use;
//   - x-ms-sgx-is-debuggable equals "false", always: a debug enclave's
//     memory is readable by the host.
func sgxPolicy(authority string, f sgxPolicyFlags) ([]byte, error) {
	signer, err := measurement("--sgx-mrsigner", f.mrsigner)
	if err != nil {
		return nil, err
	}
	var enclave string
	if f.mrenclave != "" {
		if enclave, err = measurement("--sgx-mrenclave", f.mrenclave); err != nil {
			return nil, err
		}
	}
	if f.productID < 0 || f.productID > 0xffff {
		return nil, fmt.Errorf("--sgx-product-id is required, 0 to 65535 (the enclave's ISVPRODID)")
	}
	if f.minSVN < 0 || f.minSVN > 0xffff {
		return nil, fmt.Errorf("--sgx-min-svn is required, 0 to 65535 (the lowest ISVSVN to release to)")
	}
	if authority == "" {
		return nil, fmt.Errorf("the SGX policy needs --authority (the MAA instance URL)")
	}
	type cond map[string]any
	conds := []cond{
		{"claim": "x-ms-attestation-type", "equals": "sgx"},
		{"claim": "x-ms-sgx-mrsigner", "equals": signer},
	}
	if enclave != "" {
		conds = append(conds, cond{"claim": "x-ms-sgx-mrenclave", "equals": enclave})
	}
	conds = append(conds,
		cond{"claim": "x-ms-sgx-product-id", "equals": fmt.Sprint(f.productID)},
		cond{"claim": "x-ms-sgx-svn", "greater": f.minSVN - 1},
		cond{"claim": "x-ms-sgx-is-debuggable", "equals": "false"})
	doc, err := json.Marshal(map[string]any{"version": "1.0.0", "anyOf": []any{
		map[string]any{"authority": strings.TrimSuffix(authority, "/"), "allOf": conds}}})
	if err != nil {
		return nil, err
	}
	if _, err := policy.Parse(doc); err != nil {
		return nil, err
	}
	return doc, nil
}

// measurement normalizes a 32-byte SGX measurement given in hex.
func measurement(flag, s string) (string, error) {
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != 32 {
		return "", fmt.Errorf("%s wants 64 hex digits (32 bytes), as `skrfs attest verify --sgx-quote` prints them", flag)
	}
	return hex.EncodeToString(b), nil
}

// sgxHint explains a failed SGX condition in words, for `skrfs explain`;
// "" when there is nothing to add.
func sgxHint(o policy.Outcome) string {
	if o.Pass || o.Node.Group != "" || !strings.HasPrefix(o.Node.Claim, "x-ms-sgx-") {
		return ""
	}
	if o.Missing {
		return "the token has no SGX claims: it is not from MAA's attest/SgxEnclave (is attestation.provider sgx?)"
	}
	switch o.Node.Claim {
	case "x-ms-sgx-is-debuggable":
		return "the enclave is a debug build (its memory is readable by the host); sign it for release mode"
	case "x-ms-sgx-svn":
		return fmt.Sprintf("the enclave's ISV SVN %v is below the policy's minimum: rebuild with a higher ISVSVN, or lower --sgx-min-svn", o.Actual)
	case "x-ms-sgx-mrsigner":
		return "the enclave was signed by another key than the policy names"
	case "x-ms-sgx-mrenclave":
		return "the enclave's measurement differs: another build or configuration (for Gramine, the manifest) than the policy pins"
	case "x-ms-sgx-product-id":
		return "the enclave's ISV product id differs from the policy's"
	}
	return ""
}
