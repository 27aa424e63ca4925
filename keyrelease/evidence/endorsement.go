package evidence

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/veraison/go-cose"
)

// Endorser is a trusted issuer of UVM endorsements: a did:x509 issuer and
// a feed, as in the protected header of an ACI security context's
// reference-info-base64.
type Endorser struct {
	Issuer string
	Feed   string
}

// MicrosoftUVM endorses the utility VMs of Azure confidential containers.
var MicrosoftUVM = Endorser{
	Issuer: "did:x509:0:sha256:I__iuL25oXEVFdTP_aBLx_eT1RPHbCQ_ECBQfYZpt9s::eku:1.3.6.1.4.1.311.76.59.1.2",
	Feed:   "ContainerPlat-AMD-UVM",
}

// Endorsement is a verified UVM endorsement.
type Endorsement struct {
	Endorser
	LaunchMeasurement string // hex
	GuestSVN          string
	SigningTime       time.Time
}

// VerifyEndorsement checks a UVM endorsement (COSE_Sign1): its signature
// by the leaf certificate of its x5chain, the chain up to the CA that its
// did:x509 issuer names by fingerprint, the leaf's EKU from the did, and
// that (issuer, feed) is trusted. Certificates are checked at the
// endorsement's signing time.
func VerifyEndorsement(b []byte, trusted []Endorser) (*Endorsement, error) {
	var msg cose.Sign1Message
	if err := msg.UnmarshalCBOR(b); err != nil {
		return nil, fmt.Errorf("%w: UVM endorsement is not a COSE_Sign1: %v", ErrInvalid, err)
	}
	ph := msg.Headers.Protected
	alg, err := ph.Algorithm()
	if err != nil {
		return nil, fmt.Errorf("%w: UVM endorsement: %v", ErrInvalid, err)
	}
	iss, _ := ph["iss"].(string)
	feed, _ := ph["feed"].(string)
	e := &Endorsement{Endorser: Endorser{Issuer: iss, Feed: feed}}
	if t, ok := ph["signingtime"].(time.Time); ok {
		e.SigningTime = t
	}
	ok := false
	for _, t := range trusted {
		ok = ok || t == e.Endorser
	}
	if !ok {
		return nil, fmt.Errorf("%w: UVM endorsement by untrusted issuer %q, feed %q", ErrInvalid, iss, feed)
	}
	var certs []*x509.Certificate
	rawChain, _ := ph[cose.HeaderLabelX5Chain].([]any)
	if single, ok := ph[cose.HeaderLabelX5Chain].([]byte); ok {
		rawChain = []any{single}
	}
	for _, c := range rawChain {
		der, _ := c.([]byte)
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%w: UVM endorsement x5chain: %v", ErrInvalid, err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w: UVM endorsement has no x5chain", ErrInvalid)
	}
	verifier, err := cose.NewVerifier(alg, certs[0].PublicKey)
	if err != nil {
		return nil, fmt.Errorf("%w: UVM endorsement: %v", ErrInvalid, err)
	}
	if err := msg.Verify(nil, verifier); err != nil {
		return nil, fmt.Errorf("%w: UVM endorsement signature: %v", ErrInvalid, err)
	}
	if err := checkDID(iss, certs, e.SigningTime); err != nil {
		return nil, err
	}
	var payload struct {
		Measurement string `json:"x-ms-sevsnpvm-launchmeasurement"`
		GuestSVN    string `json:"x-ms-sevsnpvm-guestsvn"`
	}
	if err := json.Unmarshal(msg.Payload, &payload); err != nil || payload.Measurement == "" {
		return nil, fmt.Errorf("%w: UVM endorsement payload has no launch measurement", ErrInvalid)
	}
	e.LaunchMeasurement, e.GuestSVN = strings.ToLower(payload.Measurement), payload.GuestSVN
	return e, nil
}

// checkDID verifies a did:x509:0:sha256:<fingerprint>::eku:<oid> issuer:
// the chain from the leaf verifies up to the certificate with that
// SHA-256 fingerprint, and the leaf carries the EKU.
func checkDID(did string, certs []*x509.Certificate, at time.Time) error {
	rest, ok := strings.CutPrefix(did, "did:x509:0:sha256:")
	if !ok {
		return fmt.Errorf("%w: UVM endorsement issuer %q is not a did:x509 with a SHA-256 fingerprint", ErrInvalid, did)
	}
	fp, policy, ok := strings.Cut(rest, "::")
	eku, isEKU := strings.CutPrefix(policy, "eku:")
	if !ok || !isEKU {
		return fmt.Errorf("%w: UVM endorsement issuer %q has no eku policy", ErrInvalid, did)
	}
	var anchor *x509.Certificate
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		sum := sha256.Sum256(c.Raw)
		if base64.RawURLEncoding.EncodeToString(sum[:]) == fp {
			anchor = c
		}
		inter.AddCert(c)
	}
	if anchor == nil {
		return fmt.Errorf("%w: UVM endorsement chain lacks the CA its issuer names", ErrInvalid)
	}
	roots := x509.NewCertPool()
	roots.AddCert(anchor)
	if at.IsZero() {
		at = time.Now()
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: at,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("%w: UVM endorsement chain: %v", ErrInvalid, err)
	}
	for _, u := range certs[0].UnknownExtKeyUsage {
		if u.String() == eku {
			return nil
		}
	}
	return fmt.Errorf("%w: UVM endorsement signer lacks EKU %s", ErrInvalid, eku)
}

// UVMEndorserOID is the EKU of UVM endorsement signers named by the
// did:x509 issuers (Microsoft's; the devstack's fake endorser uses it too).
var UVMEndorserOID = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 76, 59, 1, 2}

// DID returns the did:x509 issuer that names ca by fingerprint and the UVM
// endorser EKU.
func DID(ca *x509.Certificate) string {
	sum := sha256.Sum256(ca.Raw)
	return "did:x509:0:sha256:" + base64.RawURLEncoding.EncodeToString(sum[:]) + "::eku:" + UVMEndorserOID.String()
}

// SignEndorsement creates a UVM endorsement for a launch measurement in the
// shape of Microsoft's (PS384 COSE_Sign1 with x5chain, iss, feed,
// signingtime), signed by key whose certificate is chain[0]; chain ends
// with the CA that the issuer names. The devstack endorses its fake TEE
// with it.
func SignEndorsement(key crypto.Signer, chain []*x509.Certificate, feed string, measurement []byte, guestSVN int) ([]byte, error) {
	msg := cose.NewSign1Message()
	msg.Headers.Protected.SetAlgorithm(cose.AlgorithmPS384)
	msg.Headers.Protected[cose.HeaderLabelContentType] = "application/json"
	var x5 []any
	for _, c := range chain {
		x5 = append(x5, c.Raw)
	}
	msg.Headers.Protected[cose.HeaderLabelX5Chain] = x5
	msg.Headers.Protected["iss"] = DID(chain[len(chain)-1])
	msg.Headers.Protected["feed"] = feed
	msg.Headers.Protected["signingtime"] = time.Now().UTC().Truncate(time.Second)
	payload, _ := json.Marshal(map[string]string{"x-ms-sevsnpvm-guestsvn": fmt.Sprint(guestSVN),
		"x-ms-sevsnpvm-launchmeasurement": hex.EncodeToString(measurement)})
	msg.Payload = payload
	signer, err := cose.NewSigner(cose.AlgorithmPS384, key)
	if err != nil {
		return nil, err
	}
	if err := msg.Sign(rand.Reader, nil, signer); err != nil {
		return nil, err
	}
	return msg.MarshalCBOR()
}
