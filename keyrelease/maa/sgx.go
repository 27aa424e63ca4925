package maa

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/skrfs/skrfs/keyrelease"
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
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "skrfs")
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: MAA %s: %v", keyrelease.ErrUnavailable, c.base(), err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("%w: MAA %s: %v", keyrelease.ErrUnavailable, c.base(), err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, serviceError(resp, rb)
	}
	var out struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(rb, &out); err != nil || out.Token == "" {
		return nil, fmt.Errorf("%w: MAA returned no token", keyrelease.ErrAttestation)
	}
	return c.Verify(ctx, out.Token, nil)
}
