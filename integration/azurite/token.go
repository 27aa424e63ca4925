package azurite

import (
	"context"
	"fmt"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// TestTenant is the tenant id in the tokens of TokenCredential.
const TestTenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"

// StorageAudience is the audience Azurite accepts for storage tokens.
const StorageAudience = "https://storage.azure.com"

// TokenCredential is an azcore.TokenCredential that mints unsigned JWTs with
// the claims Azurite's `--oauth basic` checks: iss
// https://sts.windows.net/<tenant>/, aud a single string (not an array), and
// nbf, iat, exp. Azurite does not verify signatures; real Azure would
// reject these tokens.
type TokenCredential struct {
	// Audience is the aud claim; "" means StorageAudience.
	Audience string
	// Lifetime is how long a token is valid; 0 means one hour. A negative
	// lifetime mints expired tokens.
	Lifetime time.Duration
}

var _ azcore.TokenCredential = (*TokenCredential)(nil)

// GetToken implements azcore.TokenCredential.
func (c *TokenCredential) GetToken(ctx context.Context, _ policy.TokenRequestOptions) (azcore.AccessToken, error) {
	if err := ctx.Err(); err != nil {
		return azcore.AccessToken{}, err
	}
	aud := c.Audience
	if aud == "" {
		aud = StorageAudience
	}
	life := c.Lifetime
	if life == 0 {
		life = time.Hour
	}
	now := time.Now()
	tok, err := jwt.NewBuilder().
		Issuer("https://sts.windows.net/"+TestTenant+"/").
		Audience([]string{aud}).
		Subject("skrfs-test").
		IssuedAt(now.Add(-5*time.Minute)).
		NotBefore(now.Add(-5*time.Minute)).
		Expiration(now.Add(life)).
		Claim("tid", TestTenant).
		Claim("oid", "00000000-0000-0000-0000-00000000c0de").
		Build()
	if err != nil {
		return azcore.AccessToken{}, fmt.Errorf("azurite: build token: %w", err)
	}
	// Azurite rejects "aud": ["…"]; a single audience must be a string.
	tok.Options().Enable(jwt.FlattenAudience)
	raw, err := jwt.Sign(tok, jwt.WithInsecureNoSignature())
	if err != nil {
		return azcore.AccessToken{}, fmt.Errorf("azurite: sign token: %w", err)
	}
	return azcore.AccessToken{Token: string(raw), ExpiresOn: now.Add(life)}, nil
}
