package maa

import (
	"context"
	"encoding/json"
	"net/url"
)

// SgxRequest is the body of POST /attest/SgxEnclave (protocol.md section
// 14): the quote and the runtime data, both base64url; dataType JSON makes
// MAA put the runtime data into the token as x-ms-runtime, where Key Vault
// looks for the wrapping key.
func SgxRequest(quote, runtimeData []byte) ([]byte, error) {
	type data struct {
		Data     string `json:"data"`
		DataType string `json:"dataType"`
	}
	return json.Marshal(struct {
		Quote       string `json:"quote"`
		RuntimeData data   `json:"runtimeData"`
	}{Quote: b64u.EncodeToString(quote), RuntimeData: data{Data: b64u.EncodeToString(runtimeData), DataType: "JSON"}})
}

// AttestSgx sends an SGX DCAP quote whose REPORT_DATA[0:32] is
// SHA-256(runtimeData) to attest/SgxEnclave and returns the verified token
// (signature, issuer, validity). It does not check x-ms-runtime: that is
// the sgx provider's runtime check. Rejected evidence wraps
// keyrelease.ErrAttestation; an unreachable or failing service wraps
// keyrelease.ErrUnavailable.
func (c *Client) AttestSgx(ctx context.Context, quote, runtimeData []byte) (*Token, error) {
	body, err := SgxRequest(quote, runtimeData)
	if err != nil {
		return nil, err
	}
	v := c.APIVersion
	if v == "" {
		v = APIVersion
	}
	u := c.base() + "/attest/SgxEnclave?api-version=" + url.QueryEscape(v)
	tok, err := c.post(ctx, u, body)
	if err != nil {
		return nil, err
	}
	return c.Verify(ctx, tok, nil)
}
