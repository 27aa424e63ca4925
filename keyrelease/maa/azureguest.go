package maa

import (
	"context"
	"net/url"
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
	return c.post(ctx, u, body)
}
