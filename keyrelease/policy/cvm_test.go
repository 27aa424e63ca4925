package policy

import (
	"encoding/json"
	"strings"
	"testing"
)

// cvmToken is the claim set of an AzureGuest token (protocol.md 13.2 item
// 7) as the JWT library decodes it: nested objects, numbers as float64.
func cvmToken() map[string]any {
	var c map[string]any
	json.Unmarshal([]byte(`{
  "iss": "https://sharedweu.weu.attest.azure.net",
  "x-ms-attestation-type": "azurevm",
  "x-ms-azurevm-vmid": "6C6A2B9E-1C57-4D07-9C3A-2C37F3F8A0D1",
  "x-ms-azurevm-attested-pcrs": [0,1,2,3,4,5,6,7],
  "secureboot": true,
  "x-ms-isolation-tee": {
    "x-ms-attestation-type": "sevsnpvm",
    "x-ms-compliance-status": "azure-compliant-cvm",
    "x-ms-sevsnpvm-is-debuggable": false,
    "x-ms-sevsnpvm-vmpl": 0,
    "x-ms-runtime": {"keys": [{"kid": "HCLAkPub", "kty": "RSA"}], "vm-configuration": {"secure-boot": true, "vmUniqueId": "6C6A2B9E-1C57-4D07-9C3A-2C37F3F8A0D1"}}
  },
  "x-ms-runtime": {"client-payload": {"nonce": "n"}, "keys": [{"kid": "TpmEphemeralEncryptionKey", "kty": "RSA"}]}
}`), &c)
	return c
}

// dataDiskPolicy nests anyOf (sevsnpvm | tdxvm) in allOf, as Microsoft's
// confidential-disk policy does.
const dataDiskPolicy = `{"version":"1.0.0","anyOf":[{"authority":"https://sharedweu.weu.attest.azure.net","allOf":[
  {"claim":"x-ms-isolation-tee.x-ms-compliance-status","equals":"azure-compliant-cvm"},
  {"anyOf":[
    {"claim":"x-ms-isolation-tee.x-ms-attestation-type","equals":"sevsnpvm"},
    {"claim":"x-ms-isolation-tee.x-ms-attestation-type","equals":"tdxvm"}]},
  {"claim":"x-ms-isolation-tee.x-ms-runtime.vm-configuration.secure-boot","equals":true},
  {"claim":"x-ms-azurevm-vmid","equals":"6C6A2B9E-1C57-4D07-9C3A-2C37F3F8A0D1"}]}]}`

// TestCVMTokens: nested claims of AzureGuest tokens, including anyOf
// inside allOf, and a denial names each failed nested condition, with the
// full dotted claim path and the value the token has.
func TestCVMTokens(t *testing.T) {
	p, err := Parse([]byte(dataDiskPolicy))
	if err != nil {
		t.Fatal(err)
	}
	const iss = "https://sharedweu.weu.attest.azure.net"
	if r := p.Evaluate(iss, cvmToken()); !r.Allow {
		t.Fatalf("matching CVM token denied: %s", r.Reason)
	}
	// A TDX CVM token satisfies the anyOf through its other branch.
	c := cvmToken()
	c["x-ms-isolation-tee"].(map[string]any)["x-ms-attestation-type"] = "tdxvm"
	if r := p.Evaluate(iss, c); !r.Allow {
		t.Fatalf("tdxvm denied: %s", r.Reason)
	}
	// Neither branch of the anyOf: both nested conditions are named, and
	// nothing that passed is.
	c["x-ms-isolation-tee"].(map[string]any)["x-ms-attestation-type"] = "sgx"
	r := p.Evaluate(iss, c)
	if r.Allow || !strings.Contains(r.Reason, `claim x-ms-isolation-tee.x-ms-attestation-type: want equals "sevsnpvm", have "sgx"`) ||
		!strings.Contains(r.Reason, `claim x-ms-isolation-tee.x-ms-attestation-type: want equals "tdxvm", have "sgx"`) ||
		strings.Contains(r.Reason, "compliance-status") || strings.Contains(r.Reason, "vmid") {
		t.Fatalf("reason %q", r.Reason)
	}
	// The tree says which group failed and which children passed.
	o := r.Authorities[0].Outcome
	if o.Pass || !o.Children[0].Pass || o.Children[1].Pass || o.Children[1].Node.Group != "anyOf" || !o.Children[2].Pass || !o.Children[3].Pass {
		t.Fatalf("outcome tree %+v", o)
	}
	// A deeper nested claim (inside the HCL runtime JSON) and a missing one.
	c = cvmToken()
	c["x-ms-isolation-tee"].(map[string]any)["x-ms-runtime"].(map[string]any)["vm-configuration"].(map[string]any)["secure-boot"] = false
	delete(c, "x-ms-azurevm-vmid")
	r = p.Evaluate(iss, c)
	if r.Allow || !strings.Contains(r.Reason, `claim x-ms-isolation-tee.x-ms-runtime.vm-configuration.secure-boot: want equals true, have false`) ||
		!strings.Contains(r.Reason, `claim x-ms-azurevm-vmid: want equals "6C6A2B9E-1C57-4D07-9C3A-2C37F3F8A0D1", have missing`) {
		t.Fatalf("reason %q", r.Reason)
	}
	// Flat claims (Key Vault's --default-cvm-policy) never match an
	// AzureGuest token: the SNP claims are nested.
	flat, _ := Parse([]byte(`{"version":"1.0.0","anyOf":[{"authority":"` + iss + `","allOf":[
	  {"claim":"x-ms-attestation-type","equals":"sevsnpvm"},{"claim":"x-ms-compliance-status","equals":"azure-compliant-cvm"}]}]}`))
	if r := flat.Evaluate(iss, cvmToken()); r.Allow || !strings.Contains(r.Reason, `claim x-ms-attestation-type: want equals "sevsnpvm", have "azurevm"`) ||
		!strings.Contains(r.Reason, "x-ms-compliance-status: want equals \"azure-compliant-cvm\", have missing") {
		t.Fatalf("flat policy on a CVM token: %+v", r)
	}
}
