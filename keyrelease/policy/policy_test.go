package policy

import (
	"errors"
	"strings"
	"testing"
)

const maa = "https://sharedeus.eus.attest.azure.net"

const aciPolicy = `{"version":"1.0.0","anyOf":[{"authority":"https://sharedeus.eus.attest.azure.net","allOf":[
  {"claim":"x-ms-sevsnpvm-hostdata","equals":"cadd74f71ebb8fbf9782baab649612520f3c416bc5ce9ac768808ddc8d9b031c"},
  {"claim":"x-ms-compliance-status","equals":"azure-compliant-uvm"},
  {"claim":"x-ms-sevsnpvm-is-debuggable","equals":"false"},
  {"claim":"x-ms-sevsnpvm-vmpl","equals":"0"}]}]}`

const cvmPolicy = `{"version":"1.0.0","anyOf":[{"authority":"https://sharedweu.weu.attest.azure.net/","allOf":[
  {"claim":"x-ms-isolation-tee.x-ms-attestation-type","equals":"sevsnpvm"},
  {"claim":"x-ms-isolation-tee.x-ms-compliance-status","equals":"azure-compliant-cvm"}]}]}`

func aciClaims() map[string]any {
	return map[string]any{
		"x-ms-sevsnpvm-hostdata":      "cadd74f71ebb8fbf9782baab649612520f3c416bc5ce9ac768808ddc8d9b031c",
		"x-ms-compliance-status":      "azure-compliant-uvm",
		"x-ms-sevsnpvm-is-debuggable": false,
		"x-ms-sevsnpvm-vmpl":          float64(0),
		"x-ms-sevsnpvm-guestsvn":      float64(2),
	}
}

func TestTypicalPolicies(t *testing.T) {
	aci, err := Parse([]byte(aciPolicy))
	if err != nil {
		t.Fatal(err)
	}
	if r := aci.Evaluate(maa, aciClaims()); !r.Allow {
		t.Fatalf("ACI policy denied matching claims: %s", r.Reason)
	}
	c := aciClaims()
	c["x-ms-sevsnpvm-hostdata"] = "0000"
	c["x-ms-sevsnpvm-is-debuggable"] = true
	r := aci.Evaluate(maa, c)
	if r.Allow || !strings.Contains(r.Reason, `claim x-ms-sevsnpvm-hostdata: want equals "cadd74f7`) ||
		!strings.Contains(r.Reason, `have "0000"`) || !strings.Contains(r.Reason, "x-ms-sevsnpvm-is-debuggable") {
		t.Fatalf("reason %q", r.Reason)
	}
	if r := aci.Evaluate("https://evil.attest.azure.net", aciClaims()); r.Allow || !strings.Contains(r.Reason, "not an authority") {
		t.Fatalf("foreign issuer: %+v", r)
	}
	if r := aci.Evaluate(maa+"/", aciClaims()); !r.Allow {
		t.Fatal("trailing slash on the issuer must be tolerated")
	}
	cvm, err := Parse([]byte(cvmPolicy))
	if err != nil {
		t.Fatal(err)
	}
	nested := map[string]any{"x-ms-isolation-tee": map[string]any{"x-ms-attestation-type": "sevsnpvm", "x-ms-compliance-status": "azure-compliant-cvm"}}
	if r := cvm.Evaluate("https://sharedweu.weu.attest.azure.net", nested); !r.Allow {
		t.Fatalf("CVM policy: %s", r.Reason)
	}
	delete(nested["x-ms-isolation-tee"].(map[string]any), "x-ms-compliance-status")
	if r := cvm.Evaluate("https://sharedweu.weu.attest.azure.net", nested); r.Allow || !strings.Contains(r.Reason, "have missing") {
		t.Fatalf("missing nested claim: %+v", r)
	}
}

func TestOperators(t *testing.T) {
	claims := map[string]any{"n": float64(5), "s": "abc", "b": true, "ns": "7"}
	for _, tc := range []struct {
		cond string
		want bool
	}{
		{`{"claim":"n","equals":5}`, true}, {`{"claim":"n","equals":"5"}`, true}, {`{"claim":"n","equals":6}`, false},
		{`{"claim":"s","notEquals":"abd"}`, true}, {`{"claim":"s","notEquals":"abc"}`, false}, {`{"claim":"zz","notEquals":"x"}`, false},
		{`{"claim":"b","equals":"true"}`, true}, {`{"claim":"b","equals":true}`, true}, {`{"claim":"b","equals":false}`, false},
		{`{"claim":"n","less":6}`, true}, {`{"claim":"n","less":5}`, false}, {`{"claim":"n","lessOrEquals":5}`, true},
		{`{"claim":"n","greater":4}`, true}, {`{"claim":"n","greater":5}`, false}, {`{"claim":"n","greaterOrEquals":5}`, true},
		{`{"claim":"ns","greater":6}`, true}, {`{"claim":"s","greater":1}`, false}, {`{"claim":"zz","less":1}`, false},
		{`{"claim":"s","exists":true}`, true}, {`{"claim":"zz","exists":true}`, false}, {`{"claim":"zz","exists":false}`, true},
		{`{"anyOf":[{"claim":"n","equals":1},{"claim":"s","equals":"abc"}]}`, true},
		{`{"allOf":[{"claim":"n","equals":5},{"anyOf":[{"claim":"s","equals":"x"},{"claim":"b","equals":false}]}]}`, false},
	} {
		p, err := Parse([]byte(`{"version":"1.0.0","anyOf":[{"authority":"` + maa + `","allOf":[` + tc.cond + `]}]}`))
		if err != nil {
			t.Fatalf("%s: %v", tc.cond, err)
		}
		if got := p.Evaluate(maa, claims).Allow; got != tc.want {
			t.Errorf("%s = %v, want %v", tc.cond, got, tc.want)
		}
	}
}

func TestMalformed(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{`not json`, "invalid release policy"},
		{`{"version":"2.0","anyOf":[{"authority":"https://a","allOf":[{"claim":"c","equals":1}]}]}`, "version"},
		{`{"version":"1.0.0"}`, "no authority"},
		{`{"version":"1.0.0","anyOf":[]}`, "non-empty list of authorities"},
		{`{"version":"1.0.0","anyOf":[{"allOf":[{"claim":"c","equals":1}]}]}`, "anyOf[0].authority"},
		{`{"version":"1.0.0","anyOf":[{"authority":"http://a","allOf":[{"claim":"c","equals":1}]}]}`, "not an https URL"},
		{`{"version":"1.0.0","anyOf":[{"authority":"https://a","allOf":[]}]}`, "anyOf[0].allOf: want a non-empty list"},
		{`{"version":"1.0.0","anyOf":[{"authority":"https://a","allOf":[{"claim":"c"}]}]}`, "exactly one operator"},
		{`{"version":"1.0.0","anyOf":[{"authority":"https://a","allOf":[{"claim":"c","equals":1,"less":2}]}]}`, "exactly one operator"},
		{`{"version":"1.0.0","anyOf":[{"authority":"https://a","allOf":[{"claim":"c","matches":"x"}]}]}`, `unknown operator "matches"`},
		{`{"version":"1.0.0","anyOf":[{"authority":"https://a","allOf":[{"claim":"c","equals":[1]}]}]}`, "string, number or boolean"},
		{`{"version":"1.0.0","anyOf":[{"authority":"https://a","allOf":[{"claim":"c","exists":"yes"}]}]}`, "true or false"},
		{`{"version":"1.0.0","anyOf":[{"authority":"https://a","allOf":[{"claim":"c","equals":1}],"anyOf":[{"claim":"d","equals":1}]}]}`, "exactly one of allOf or anyOf"},
		{`{"version":"1.0.0","anyOf":[{"authority":"https://a","allOf":[{"claim":"c","equals":1}]}],"extra":1}`, `unknown member "extra"`},
		{`{"version":"1.0.0","anyOf":[{"authority":"https://a","allOf":[{"oneOf":[{"claim":"c","equals":1}]}]}]}`, `unknown member "oneOf"`},
	} {
		_, err := Parse([]byte(tc.doc))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%s) = %v, want ErrInvalid containing %q", tc.doc, err, tc.want)
		}
	}
}
