package maa

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/skrfs/skrfs/keyrelease/evidence/sgxquote"
)

// attestSgx serves attest/SgxEnclave (protocol.md section 14) as MAA does
// before collateral: the quote verifies offline up to the Intel SGX Root CA
// or a configured devstack root (keyrelease/evidence/sgxquote), and
// REPORT_DATA[0:32] is SHA-256 of the runtime data. dataType JSON puts the
// runtime data into the token as x-ms-runtime (where Key Vault looks for
// the wrapping key); Binary fills x-ms-sgx-ehd instead. TCB status is not
// evaluated (no Intel collateral): x-ms-sgx-collateral is absent.
func (s *Server) attestSgx(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Quote       string `json:"quote"`
		RuntimeData *struct {
			Data     string `json:"data"`
			DataType string `json:"dataType"`
		} `json:"runtimeData"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		s.cloudError(w, 400, "InvalidRequest", "request body is not JSON: "+err.Error())
		return
	}
	quote, err := b64(req.Quote)
	if err != nil || len(quote) == 0 {
		s.cloudError(w, 400, "InvalidRequest", "quote is missing or not base64url")
		return
	}
	var runtime []byte
	var runtimeClaim any
	dataType := ""
	if req.RuntimeData != nil {
		if runtime, err = b64(req.RuntimeData.Data); err != nil {
			s.cloudError(w, 400, "InvalidRequest", "runtimeData.data is not base64url")
			return
		}
		dataType = req.RuntimeData.DataType
		switch dataType {
		case "JSON":
			if err := json.Unmarshal(runtime, &runtimeClaim); err != nil {
				s.cloudError(w, 400, "InvalidRequest", "runtime data of type JSON is not JSON")
				return
			}
		case "Binary":
		default:
			s.cloudError(w, 400, "InvalidRequest", fmt.Sprintf("runtimeData.dataType %q is not JSON or Binary", dataType))
			return
		}
	}
	var roots []*x509.Certificate
	if len(s.opts.SGXRoots) > 0 {
		intel, err := sgxquote.IntelRoot()
		if err != nil {
			s.cloudError(w, 500, "InternalError", err.Error())
			return
		}
		roots = append([]*x509.Certificate{intel}, s.opts.SGXRoots...)
	}
	res, err := sgxquote.Verify(quote, sgxquote.Options{Roots: roots, Now: s.opts.Now()})
	if err != nil {
		s.cloudError(w, 400, "InvalidEvidence", err.Error())
		return
	}
	if runtime != nil {
		sum := sha256.Sum256(runtime)
		if !bytes.Equal(res.Quote.Report.ReportData[:32], sum[:]) {
			s.cloudError(w, 400, "InvalidEvidence", "the quote's REPORT_DATA[0:32] is not SHA-256 of the runtime data")
			return
		}
	}
	claims := sgxquote.Claims(res.Quote, nil)
	delete(claims, "x-ms-sgx-report-data") // not an MAA claim
	switch dataType {
	case "JSON":
		claims["x-ms-runtime"] = runtimeClaim
	case "Binary":
		claims["x-ms-sgx-ehd"] = base64.RawURLEncoding.EncodeToString(runtime)
	}
	signed, err := s.sign(claims)
	if err != nil {
		s.cloudError(w, 500, "InternalError", err.Error())
		return
	}
	s.ok.Add(1)
	writeJSON(w, 200, map[string]string{"token": signed})
}
