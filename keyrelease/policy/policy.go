// Package policy parses and evaluates Key Vault / Managed HSM release
// policies (protocol.md section 6) against attestation token claims, and
// explains the outcome condition by condition: the devstack's Key Vault
// enforces policies with it and `skrfs explain` prints its reasons.
//
// Rules chosen where Azure's documentation is loose, each the reading that
// never allows more than Azure would:
//   - Parsing is strict: unknown members, a condition with zero or two
//     operators, an empty anyOf/allOf, or a value that is not a string,
//     number or boolean is an error naming its JSON path; a policy that
//     does not parse never allows anything.
//   - An authority applies when its URL equals the token issuer, compared
//     without trailing slashes and with a case-insensitive host.
//   - Claim paths are dotted: "x-ms-isolation-tee.x-ms-attestation-type"
//     walks nested objects.
//   - equals/notEquals compare the policy value with the claim by their
//     string forms (Azure's own policies write "false" and "0" for boolean
//     and numeric claims); less/greater and friends compare numerically and
//     fail when either side is not a number; exists: true/false tests
//     presence. A missing claim fails every operator except exists: false
//     and notEquals fails on a missing claim too.
package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
)

// ErrInvalid is wrapped by every parse error.
var ErrInvalid = errors.New("invalid release policy")

// Policy is a parsed release policy.
type Policy struct {
	Version     string
	Authorities []Authority
}

// Authority is one anyOf entry of the policy: conditions on tokens of one
// attestation authority.
type Authority struct {
	URL  string
	Root Node // an allOf or anyOf
}

// Node is a condition or a group.
type Node struct {
	// Group is "allOf" or "anyOf" for groups, "" for a claim condition.
	Group    string
	Children []Node
	Claim    string
	Op       string
	Value    any // string, float64 or bool
}

var operators = map[string]bool{"equals": true, "notEquals": true, "less": true, "lessOrEquals": true,
	"greater": true, "greaterOrEquals": true, "exists": true}

// Parse parses a policy document.
func Parse(b []byte) (*Policy, error) {
	var raw map[string]json.RawMessage
	if err := strictDecode(b, &raw); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	p := &Policy{}
	for k, v := range raw {
		switch k {
		case "version":
			if err := json.Unmarshal(v, &p.Version); err != nil {
				return nil, fmt.Errorf("%w: version: not a string", ErrInvalid)
			}
		case "anyOf":
			var list []json.RawMessage
			if err := json.Unmarshal(v, &list); err != nil || len(list) == 0 {
				return nil, fmt.Errorf("%w: anyOf: want a non-empty list of authorities", ErrInvalid)
			}
			for i, a := range list {
				auth, err := parseAuthority(a, fmt.Sprintf("anyOf[%d]", i))
				if err != nil {
					return nil, err
				}
				p.Authorities = append(p.Authorities, auth)
			}
		default:
			return nil, fmt.Errorf("%w: unknown member %q", ErrInvalid, k)
		}
	}
	if p.Version != "1.0.0" && p.Version != "0.2" {
		return nil, fmt.Errorf("%w: version: %q is not 1.0.0 or 0.2", ErrInvalid, p.Version)
	}
	if len(p.Authorities) == 0 {
		return nil, fmt.Errorf("%w: anyOf: no authority", ErrInvalid)
	}
	return p, nil
}

func strictDecode(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

func parseAuthority(b []byte, path string) (Authority, error) {
	var raw map[string]json.RawMessage
	if err := strictDecode(b, &raw); err != nil {
		return Authority{}, fmt.Errorf("%w: %s: not an object", ErrInvalid, path)
	}
	var a Authority
	if err := json.Unmarshal(raw["authority"], &a.URL); err != nil || a.URL == "" {
		return Authority{}, fmt.Errorf("%w: %s.authority: want the https URL of an attestation service", ErrInvalid, path)
	}
	if u, err := url.Parse(a.URL); err != nil || u.Scheme != "https" || u.Host == "" {
		return Authority{}, fmt.Errorf("%w: %s.authority: %q is not an https URL", ErrInvalid, path, a.URL)
	}
	delete(raw, "authority")
	root, err := parseGroup(raw, path)
	if err != nil {
		return Authority{}, err
	}
	a.Root = root
	return a, nil
}

// parseGroup parses an object that must hold exactly one of allOf/anyOf.
func parseGroup(raw map[string]json.RawMessage, path string) (Node, error) {
	if len(raw) != 1 {
		return Node{}, fmt.Errorf("%w: %s: want exactly one of allOf or anyOf", ErrInvalid, path)
	}
	for k, v := range raw {
		if k != "allOf" && k != "anyOf" {
			return Node{}, fmt.Errorf("%w: %s: unknown member %q", ErrInvalid, path, k)
		}
		var list []json.RawMessage
		if err := json.Unmarshal(v, &list); err != nil || len(list) == 0 {
			return Node{}, fmt.Errorf("%w: %s.%s: want a non-empty list", ErrInvalid, path, k)
		}
		n := Node{Group: k}
		for i, c := range list {
			child, err := parseNode(c, fmt.Sprintf("%s.%s[%d]", path, k, i))
			if err != nil {
				return Node{}, err
			}
			n.Children = append(n.Children, child)
		}
		return n, nil
	}
	panic("unreachable")
}

func parseNode(b []byte, path string) (Node, error) {
	var raw map[string]json.RawMessage
	if err := strictDecode(b, &raw); err != nil {
		return Node{}, fmt.Errorf("%w: %s: not an object", ErrInvalid, path)
	}
	if _, isClaim := raw["claim"]; !isClaim {
		return parseGroup(raw, path)
	}
	var n Node
	if err := json.Unmarshal(raw["claim"], &n.Claim); err != nil || n.Claim == "" {
		return Node{}, fmt.Errorf("%w: %s.claim: want a claim name", ErrInvalid, path)
	}
	delete(raw, "claim")
	if len(raw) != 1 {
		return Node{}, fmt.Errorf("%w: %s: want exactly one operator (equals, notEquals, less, lessOrEquals, greater, greaterOrEquals, exists), have %d", ErrInvalid, path, len(raw))
	}
	for op, v := range raw {
		if !operators[op] {
			return Node{}, fmt.Errorf("%w: %s: unknown operator %q", ErrInvalid, path, op)
		}
		n.Op = op
		var val any
		if err := strictDecode(v, &val); err != nil {
			return Node{}, fmt.Errorf("%w: %s.%s: %v", ErrInvalid, path, op, err)
		}
		switch x := val.(type) {
		case string, bool:
			n.Value = x
		case json.Number:
			f, err := x.Float64()
			if err != nil {
				return Node{}, fmt.Errorf("%w: %s.%s: %v", ErrInvalid, path, op, err)
			}
			n.Value = f
		default:
			return Node{}, fmt.Errorf("%w: %s.%s: value must be a string, number or boolean", ErrInvalid, path, op)
		}
		if op == "exists" {
			if _, ok := n.Value.(bool); !ok {
				return Node{}, fmt.Errorf("%w: %s.exists: value must be true or false", ErrInvalid, path)
			}
		}
	}
	return n, nil
}

// Outcome is the evaluation of one node.
type Outcome struct {
	Node     *Node
	Pass     bool
	Actual   any  // the claim's value (claim conditions)
	Missing  bool // the claim is absent
	Children []Outcome
}

// Result is the evaluation of a whole policy.
type Result struct {
	Allow bool
	// Authorities holds one outcome per authority of the policy, with
	// Matched telling whether it applies to the token's issuer.
	Authorities []AuthorityOutcome
	// Reason explains a denial in one line, naming the failing claims.
	Reason string
}

// AuthorityOutcome is the evaluation under one authority.
type AuthorityOutcome struct {
	URL     string
	Matched bool
	Outcome Outcome
}

// Evaluate evaluates the policy for a token of issuer with claims.
func (p *Policy) Evaluate(issuer string, claims map[string]any) Result {
	var r Result
	var reasons []string
	for i := range p.Authorities {
		a := &p.Authorities[i]
		ao := AuthorityOutcome{URL: a.URL, Matched: sameAuthority(a.URL, issuer)}
		if ao.Matched {
			ao.Outcome = eval(&a.Root, claims)
			if ao.Outcome.Pass {
				r.Allow = true
			} else {
				reasons = append(reasons, failures(ao.Outcome)...)
			}
		}
		r.Authorities = append(r.Authorities, ao)
	}
	switch {
	case r.Allow:
	case len(reasons) == 0:
		var urls []string
		for _, a := range p.Authorities {
			urls = append(urls, a.URL)
		}
		r.Reason = fmt.Sprintf("token issuer %q is not an authority of the policy (%s)", issuer, strings.Join(urls, ", "))
	default:
		r.Reason = strings.Join(reasons, "; ")
	}
	return r
}

func sameAuthority(a, b string) bool {
	ua, err1 := url.Parse(strings.TrimSuffix(a, "/"))
	ub, err2 := url.Parse(strings.TrimSuffix(b, "/"))
	return err1 == nil && err2 == nil && ua.Scheme == ub.Scheme && strings.EqualFold(ua.Host, ub.Host) &&
		strings.TrimSuffix(ua.Path, "/") == strings.TrimSuffix(ub.Path, "/")
}

// failures lists the failing claim conditions under a failed outcome.
func failures(o Outcome) []string {
	if o.Pass {
		return nil
	}
	if o.Node.Group == "" {
		return []string{Describe(o)}
	}
	var out []string
	for _, c := range o.Children {
		out = append(out, failures(c)...)
	}
	return out
}

// Describe renders a claim condition's outcome, e.g.
// `claim x-ms-sevsnpvm-hostdata: want equals "ab12…", have "cd34…"`.
func Describe(o Outcome) string {
	n := o.Node
	have := "missing"
	if !o.Missing {
		b, _ := json.Marshal(o.Actual)
		have = string(b)
	}
	want, _ := json.Marshal(n.Value)
	verdict := "fails"
	if o.Pass {
		verdict = "passes"
	}
	return fmt.Sprintf("claim %s: want %s %s, have %s (%s)", n.Claim, n.Op, want, have, verdict)
}

func eval(n *Node, claims map[string]any) Outcome {
	if n.Group != "" {
		o := Outcome{Node: n, Pass: n.Group == "allOf"}
		for i := range n.Children {
			c := eval(&n.Children[i], claims)
			o.Children = append(o.Children, c)
			if n.Group == "allOf" {
				o.Pass = o.Pass && c.Pass
			} else {
				o.Pass = o.Pass || c.Pass
			}
		}
		return o
	}
	actual, ok := lookup(claims, n.Claim)
	o := Outcome{Node: n, Actual: actual, Missing: !ok}
	switch n.Op {
	case "exists":
		o.Pass = ok == n.Value.(bool)
	case "equals":
		o.Pass = ok && str(actual) == str(n.Value)
	case "notEquals":
		o.Pass = ok && str(actual) != str(n.Value)
	default:
		a, aok := num(actual)
		b, bok := num(n.Value)
		if ok && aok && bok {
			switch n.Op {
			case "less":
				o.Pass = a < b
			case "lessOrEquals":
				o.Pass = a <= b
			case "greater":
				o.Pass = a > b
			case "greaterOrEquals":
				o.Pass = a >= b
			}
		}
	}
	return o
}

// lookup walks a dotted claim path through nested objects.
func lookup(claims map[string]any, path string) (any, bool) {
	if v, ok := claims[path]; ok { // a flat claim whose name contains dots
		return v, true
	}
	var cur any = claims
	for _, part := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func str(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case bool:
		return strconv.FormatBool(x)
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1e15 {
			return strconv.FormatInt(int64(x), 10)
		}
		return strconv.FormatFloat(x, 'g', -1, 64)
	case int:
		return strconv.Itoa(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case json.Number:
		return x.String()
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func num(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	case string:
		f, err := strconv.ParseFloat(x, 64)
		return f, err == nil
	}
	return 0, false
}
