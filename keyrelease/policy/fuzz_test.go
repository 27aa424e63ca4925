package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"net/url"
	"testing"
)

// FuzzPolicy parses arbitrary policy documents and evaluates whatever is
// accepted against arbitrary claims. Properties:
//   - a document that Parse rejects yields no policy and an ErrInvalid
//     error, so nothing can be evaluated (and the vault denies);
//   - a document that Parse accepts is well formed by an independent
//     check of the grammar (wellFormed below): a malformed policy is never
//     accepted, so it can never allow;
//   - a token from an issuer that is not an authority is never allowed;
//   - adding a condition that cannot hold (allOf with a claim that is
//     absent) to every authority turns any outcome into a denial;
//   - a denial always carries a reason, an allow never does.
func FuzzPolicy(f *testing.F) {
	claims, _ := json.Marshal(aciClaims())
	nested := []byte(`{"x-ms-isolation-tee":{"x-ms-attestation-type":"sevsnpvm","x-ms-compliance-status":"azure-compliant-cvm"}}`)
	f.Add([]byte(aciPolicy), claims, maa)
	f.Add([]byte(cvmPolicy), nested, "https://sharedweu.weu.attest.azure.net")
	f.Add([]byte(`{"version":"0.2","anyOf":[{"authority":"https://a","anyOf":[{"claim":"n","less":6},{"claim":"zz","exists":false}]}]}`),
		[]byte(`{"n":5}`), "https://a/")
	f.Add([]byte(`{"version":"1.0.0","anyOf":[{"authority":"https://a","allOf":[{"claim":"c","equals":1,"less":2}]}]}`),
		[]byte(`{"c":1}`), "https://a")
	f.Fuzz(func(t *testing.T, doc, claimsJSON []byte, issuer string) {
		p, err := Parse(doc)
		wf := wellFormed(doc)
		if err != nil {
			if p != nil || !errors.Is(err, ErrInvalid) {
				t.Fatalf("rejected policy: got %v, %v; want nil and ErrInvalid", p, err)
			}
			if wf {
				t.Fatalf("Parse rejected a well-formed policy: %v", err)
			}
			return
		}
		if !wf {
			t.Fatalf("Parse accepted a malformed policy")
		}
		var c map[string]any
		if json.Unmarshal(claimsJSON, &c) != nil {
			c = map[string]any{}
		}
		r := p.Evaluate(issuer, c)
		if r.Allow != (r.Reason == "") {
			t.Fatalf("allow=%v with reason %q", r.Allow, r.Reason)
		}
		if r.Allow {
			matched := false
			for _, a := range p.Authorities {
				matched = matched || sameAuthority(a.URL, issuer)
			}
			if !matched {
				t.Fatalf("allowed a token of issuer %q that is no authority of the policy", issuer)
			}
		}
		if p.Evaluate("https://not-an-authority.invalid", c).Allow {
			for _, a := range p.Authorities {
				if sameAuthority(a.URL, "https://not-an-authority.invalid") {
					return
				}
			}
			t.Fatal("allowed a foreign issuer")
		}
		impossible := Node{Claim: "skrfs-fuzz-absent-claim\x00", Op: "exists", Value: true}
		for i := range p.Authorities {
			a := &p.Authorities[i]
			a.Root = Node{Group: "allOf", Children: []Node{a.Root, impossible}}
		}
		if p.Evaluate(issuer, c).Allow {
			t.Fatal("a policy with a condition that cannot hold allowed")
		}
	})
}

// wellFormed is an independent statement of the policy grammar that Parse
// implements (protocol.md section 6), on a generic JSON decoding.
func wellFormed(doc []byte) bool {
	top, ok := decodeOne(doc).(map[string]any)
	if !ok {
		return false
	}
	for k := range top {
		if k != "version" && k != "anyOf" {
			return false
		}
	}
	if v, _ := top["version"].(string); v != "1.0.0" && v != "0.2" {
		return false
	}
	auths, _ := top["anyOf"].([]any)
	if len(auths) == 0 {
		return false
	}
	for _, a := range auths {
		obj, ok := a.(map[string]any)
		if !ok || len(obj) != 2 {
			return false
		}
		s, _ := obj["authority"].(string)
		u, err := url.Parse(s)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return false
		}
		delete(obj, "authority")
		if !groupWF(obj) {
			return false
		}
	}
	return true
}

func decodeOne(b []byte) any {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil || dec.More() {
		return nil
	}
	return v
}

func groupWF(obj map[string]any) bool {
	if len(obj) != 1 {
		return false
	}
	for k, v := range obj {
		list, ok := v.([]any)
		if (k != "allOf" && k != "anyOf") || !ok || len(list) == 0 {
			return false
		}
		for _, c := range list {
			if !nodeWF(c) {
				return false
			}
		}
	}
	return true
}

func nodeWF(v any) bool {
	obj, ok := v.(map[string]any)
	if !ok {
		return false
	}
	claim, isClaim := obj["claim"]
	if !isClaim {
		return groupWF(obj)
	}
	if s, ok := claim.(string); !ok || s == "" || len(obj) != 2 {
		return false
	}
	for op, val := range obj {
		switch op {
		case "claim":
		case "exists":
			if _, ok := val.(bool); !ok {
				return false
			}
		case "equals", "notEquals", "less", "lessOrEquals", "greater", "greaterOrEquals":
			switch x := val.(type) {
			case string, bool:
			case json.Number:
				if f, err := x.Float64(); err != nil || math.IsInf(f, 0) {
					return false
				}
			default:
				return false
			}
		default:
			return false
		}
	}
	return true
}
