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

// AzureGuestAPIVersion is the api-version Azure's CVM clients send to
// attest/AzureGuest (the public REST spec documents the path only from
// 2025-06-01).
const AzureGuestAPIVersion = "2020-10-01"

// AttestAzureGuest POSTs an AzureGuest request ({"AttestationInfo":
// b64url(JSON)}, built by keyrelease/attest/cvm) and returns the response's
// "token": not a JWT but the encrypted envelope only the TPM key opens.
// The caller opens it and verifies the JWT with Verify.
func (c *Client) AttestAzureGuest(ctx context.Context, body []byte) (string, error) {
	u := c.base() + "/attest/AzureGuest?api-version=" + url.QueryEscape(AzureGuestAPIVersion)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "skrfs")
	resp, err := c.http().Do(req)
	if err != nil {
		return "", fmt.Errorf("%w: MAA %s: %v", keyrelease.ErrUnavailable, c.base(), err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", fmt.Errorf("%w: MAA %s: %v", keyrelease.ErrUnavailable, c.base(), err)
	}
	if resp.StatusCode/100 != 2 {
		return "", serviceError(resp, rb)
	}
	var out struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(rb, &out); err != nil || out.Token == "" {
		return "", fmt.Errorf("%w: MAA returned no token", keyrelease.ErrAttestation)
	}
	return out.Token, nil
}
