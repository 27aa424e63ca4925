package maa

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/skrfs/skrfs/keyrelease/attest/cvm"
	"github.com/skrfs/skrfs/keyrelease/evidence"
)

// attestAzureGuest serves attest/AzureGuest (protocol.md 13.2) as Azure
// CVM guests use it, checking what MAA is understood to check: the quote
// is signed by AikPub over the client nonce and matches the PCR values;
// the encryption key is TPM-bound and certified by AikPub; AikPub is the
// HCL report's HCLAkPub; the HCL runtime JSON is bound into the SEV-SNP
// report, whose signature and chain verify. The token carries the
// AzureGuest claim shape (x-ms-isolation-tee nested claims, x-ms-runtime
// with the client payload and the TPM key) and is returned in the
// encrypted envelope only the TPM key opens.
func (s *Server) attestAzureGuest(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		s.cloudError(w, 400, "InvalidRequest", err.Error())
		return
	}
	ai, err := cvm.ParseRequest(body)
	if err != nil {
		s.cloudError(w, 400, "InvalidRequest", err.Error())
		return
	}
	if ai.IsolationInfo.Type != "SevSnp" {
		s.cloudError(w, 400, "InvalidIsolationType", "IsolationInfo.Type "+ai.IsolationInfo.Type+": this service serves SevSnp")
		return
	}
	tpm, err := cvm.VerifyTPM(ai)
	if err != nil {
		s.cloudError(w, 400, "InvalidTpmEvidence", err.Error())
		return
	}
	var proof cvm.SnpProof
	if err := json.Unmarshal(ai.IsolationInfo.Evidence.Proof, &proof); err != nil {
		s.cloudError(w, 400, "InvalidRequest", "IsolationInfo.Evidence.Proof is not {SnpReport, VcekCertChain}")
		return
	}
	report, err1 := b64(proof.SnpReport)
	chainPEM, err2 := b64(proof.VcekCertChain)
	if err1 != nil || err2 != nil {
		s.cloudError(w, 400, "InvalidRequest", "SnpReport or VcekCertChain is not base64url")
		return
	}
	chain, err := evidence.ParseChainPEM(chainPEM)
	if err != nil {
		s.cloudError(w, 400, "InvalidCertificateChain", err.Error())
		return
	}
	now := s.opts.Now()
	runtime := ai.IsolationInfo.Evidence.RunTimeData
	claims, rt, err := evidence.VerifyCVM(report, runtime, chain, evidence.Options{ExtraRoots: s.opts.ExtraRoots, Now: now})
	if err != nil {
		s.cloudError(w, 400, "InvalidEvidence", err.Error())
		return
	}
	if rt.AkPub.N.Cmp(tpm.AK.N) != 0 || rt.AkPub.E != tpm.AK.E {
		s.cloudError(w, 400, "InvalidTpmEvidence", "AikPub is not the HCL report's HCLAkPub")
		return
	}
	tee := claims["x-ms-isolation-tee"].(map[string]any)
	tee["x-ms-compliance-status"] = "azure-compliant-cvm"
	claims["x-ms-azurevm-attested-pcrs"] = tpm.PCRs
	claims["x-ms-azurevm-is-debuggable"] = tee["x-ms-sevsnpvm-is-debuggable"]
	if rt.VMConfig != nil {
		claims["secureboot"] = rt.VMConfig["secure-boot"] == true
	}
	claims["x-ms-runtime"] = map[string]any{
		"client-payload": map[string]any{"nonce": tpm.Nonce},
		"keys":           []any{cvm.JWK(cvm.EncKeyKID, tpm.EncKey, "encrypt")},
	}
	signed, err := s.sign(claims)
	if err != nil {
		s.cloudError(w, 500, "InternalError", err.Error())
		return
	}
	aesKey, iv := make([]byte, 32), make([]byte, 12)
	rand.Read(aesKey)
	rand.Read(iv)
	env, err := cvm.Seal(signed, aesKey, iv, func(k []byte) ([]byte, error) {
		return rsa.EncryptPKCS1v15(rand.Reader, tpm.EncKey, k)
	})
	clear(aesKey)
	if err != nil {
		s.cloudError(w, 500, "InternalError", err.Error())
		return
	}
	s.ok.Add(1)
	writeJSON(w, 200, map[string]string{"token": env})
}

// sign issues a token with claims and the standard ones.
func (s *Server) sign(claims map[string]any) (string, error) {
	now := s.opts.Now()
	tok := jwt.New()
	for k, v := range claims {
		tok.Set(k, v)
	}
	jti := make([]byte, 16)
	rand.Read(jti)
	for k, v := range map[string]any{
		jwt.IssuerKey: s.opts.Issuer, jwt.IssuedAtKey: now.Unix(), jwt.NotBeforeKey: now.Unix(),
		jwt.ExpirationKey: now.Add(s.opts.Lifetime).Unix(), jwt.JwtIDKey: hex.EncodeToString(jti),
		"x-ms-ver": "1.0", "x-ms-policy-hash": "skrfs-devstack-default-policy",
	} {
		tok.Set(k, v)
	}
	hdr := jws.NewHeaders()
	hdr.Set(jws.KeyIDKey, s.kid)
	hdr.Set(jws.JWKSetURLKey, s.opts.Issuer+"/certs")
	hdr.Set(jws.TypeKey, "JWT")
	b, err := jwt.Sign(tok, jwt.WithKey(jwa.RS256, s.opts.Key, jws.WithProtectedHeaders(hdr)))
	return string(b), err
}
