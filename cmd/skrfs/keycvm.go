package main

import (
	"fmt"
	"regexp"
	"strings"
)

var guidRE = regexp.MustCompile(`^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$`)

// cvmPolicy is the release policy for attested Azure confidential VMs
// (protocol.md 13.3): the AzureGuest token's nested claims say a genuine
// Azure SEV-SNP CVM, not debuggable; vmID ("" = any) pins one VM by
// x-ms-azurevm-vmid. Key Vault's --default-cvm-policy checks flat claims
// that AzureGuest tokens do not have.
func cvmPolicy(authority, vmID string) ([]byte, error) {
	if vmID != "" && !guidRE.MatchString(vmID) {
		return nil, fmt.Errorf("--vm-id %q is not a GUID (the VM's vmId, e.g. from IMDS compute/vmId)", vmID)
	}
	doc := `{"version":"1.0.0","anyOf":[{"authority":"` + strings.TrimSuffix(authority, "/") + `","allOf":[` +
		`{"claim":"x-ms-isolation-tee.x-ms-attestation-type","equals":"sevsnpvm"},` +
		`{"claim":"x-ms-isolation-tee.x-ms-compliance-status","equals":"azure-compliant-cvm"},` +
		`{"claim":"x-ms-isolation-tee.x-ms-sevsnpvm-is-debuggable","equals":"false"}`
	if vmID != "" {
		doc += `,{"claim":"x-ms-azurevm-vmid","equals":"` + vmID + `"}`
	}
	return []byte(doc + `]}]}`), nil
}
