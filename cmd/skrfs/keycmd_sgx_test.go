package main

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/skrfs/skrfs/keyrelease"
	"github.com/skrfs/skrfs/keyrelease/evidence/sgxquote"
	"github.com/skrfs/skrfs/keyrelease/policy"
)

const (
	testMAA       = "https://sharedeus.eus.attest.azure.net"
	testMRSigner  = "feb995eb86c349ac98e5afbbb5732ca7376ec9979002702ea17ad476e0853a04"
	testMREnclave = "d37d983a85d63fb49649610e2eba0930ecdbff6d113aca3ff3fc7261696c0134"
)

func TestSGXPolicyText(t *testing.T) {
	doc, err := sgxPolicy(testMAA+"/", sgxPolicyFlags{mrsigner: strings.ToUpper(testMRSigner), productID: 1, minSVN: 2})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"anyOf":[{"allOf":[{"claim":"x-ms-attestation-type","equals":"sgx"},` +
		`{"claim":"x-ms-sgx-mrsigner","equals":"` + testMRSigner + `"},` +
		`{"claim":"x-ms-sgx-product-id","equals":"1"},` +
		`{"claim":"x-ms-sgx-svn","greater":1},` +
		`{"claim":"x-ms-sgx-is-debuggable","equals":"false"}],"authority":"` + testMAA + `"}],"version":"1.0.0"}`
	if string(doc) != want {
		t.Fatalf("policy\n got %s\nwant %s", doc, want)
	}
	doc, err = sgxPolicy(testMAA, sgxPolicyFlags{mrsigner: testMRSigner, mrenclave: testMREnclave, productID: 1, minSVN: 0})
	if err != nil || !strings.Contains(string(doc), `{"claim":"x-ms-sgx-mrenclave","equals":"`+testMREnclave+`"}`) ||
		!strings.Contains(string(doc), `"greater":-1`) {
		t.Fatalf("with mrenclave: %v %s", err, doc)
	}
}

func TestSGXPolicyFlagErrors(t *testing.T) {
	ok := sgxPolicyFlags{mrsigner: testMRSigner, productID: 1, minSVN: 1}
	for _, tc := range []struct {
		name      string
		f         sgxPolicyFlags
		authority string
		wantErr   string
	}{
		{"short signer", sgxPolicyFlags{mrsigner: "abcd", productID: 1, minSVN: 1}, testMAA, "--sgx-mrsigner wants 64 hex digits"},
		{"not hex", sgxPolicyFlags{mrsigner: strings.Repeat("zz", 32), productID: 1, minSVN: 1}, testMAA, "--sgx-mrsigner wants"},
		{"bad enclave", sgxPolicyFlags{mrsigner: testMRSigner, mrenclave: "00", productID: 1, minSVN: 1}, testMAA, "--sgx-mrenclave wants"},
		{"no product id", sgxPolicyFlags{mrsigner: testMRSigner, productID: -1, minSVN: 1}, testMAA, "--sgx-product-id is required"},
		{"product id too big", sgxPolicyFlags{mrsigner: testMRSigner, productID: 65536, minSVN: 1}, testMAA, "--sgx-product-id"},
		{"no svn", sgxPolicyFlags{mrsigner: testMRSigner, productID: 1, minSVN: -1}, testMAA, "--sgx-min-svn is required"},
		{"no authority", ok, "", "--authority"},
		{"no signer", sgxPolicyFlags{productID: 1, minSVN: 1}, testMAA, "--sgx-mrsigner wants"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := sgxPolicy(tc.authority, tc.f)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// sgxClaims are the claims of an attest/SgxEnclave token for the genuine
// release quote, as MAA issues them (numbers as JSON decodes them).
func sgxClaims(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile("../../keyrelease/evidence/sgxquote/testdata/" + name + ".quote")
	if err != nil {
		t.Fatal(err)
	}
	q, err := sgxquote.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	c := sgxquote.Claims(q, nil)
	for k, v := range c {
		if n, ok := v.(int); ok {
			c[k] = float64(n)
		}
	}
	c["iss"] = testMAA
	return c
}

// TestExplainSGX: the policy key create writes, evaluated the way `skrfs
// explain` prints it, against SGX-shaped claim sets.
func TestExplainSGX(t *testing.T) {
	doc, err := sgxPolicy(testMAA, sgxPolicyFlags{mrsigner: testMRSigner, mrenclave: testMREnclave, productID: 1, minSVN: 1})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	debug := sgxClaims(t, "debug")
	lowSVN := sgxClaims(t, "release")
	lowSVN["x-ms-sgx-svn"] = 0.0
	snp := map[string]any{"iss": testMAA, "x-ms-attestation-type": "sevsnpvm", "x-ms-sevsnpvm-is-debuggable": false}
	for _, tc := range []struct {
		name   string
		claims map[string]any
		allow  bool
		want   []string
	}{
		{"release enclave", sgxClaims(t, "release"), true, []string{"release would be allowed",
			`ok   claim x-ms-sgx-svn: want greater 0, have 1 (passes)`,
			`ok   claim x-ms-sgx-is-debuggable: want equals "false", have false (passes)`}},
		{"debug enclave denied", debug, false, []string{"RELEASE WOULD BE DENIED",
			`FAIL claim x-ms-sgx-is-debuggable: want equals "false", have true (fails)`,
			"the enclave is a debug build",
			`FAIL claim x-ms-sgx-mrenclave`}},
		{"svn too low", lowSVN, false, []string{"RELEASE WOULD BE DENIED",
			`FAIL claim x-ms-sgx-svn: want greater 0, have 0 (fails)`,
			"ISV SVN 0 is below the policy's minimum",
			`ok   claim x-ms-sgx-mrenclave`}},
		{"SNP token", snp, false, []string{`FAIL claim x-ms-attestation-type: want equals "sgx", have "sevsnpvm"`,
			"FAIL claim x-ms-sgx-mrsigner: want equals \"" + testMRSigner + "\", have missing",
			"the token has no SGX claims"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := pol.Evaluate(testMAA, tc.claims)
			if res.Allow != tc.allow {
				t.Fatalf("allow = %v, reason %s", res.Allow, res.Reason)
			}
			var out bytes.Buffer
			ref, _ := keyrelease.ParseKeyRef("https://v.vault.azure.net/keys/sgx")
			printExplanation(&out, ref, testMAA, res)
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("explanation lacks %q:\n%s", w, out.String())
				}
			}
			if !tc.allow && !strings.Contains(res.Reason, "x-ms-sgx-") && !strings.Contains(res.Reason, "x-ms-attestation-type") {
				t.Errorf("reason does not name the failed claim: %s", res.Reason)
			}
		})
	}
}
