// Package akv performs Secure Key Release against Azure Key Vault Premium or
// Managed HSM with the Azure SDK's azkeys client (protocol.md section 5):
// it sends the attestation token, verifies the signed release response
// against its x5c certificate chain, and unwraps the key with the ephemeral
// wrapping key.
package akv

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/skrfs/skrfs/keyrelease"
	"github.com/skrfs/skrfs/keyrelease/wrapkey"
)

// ErrBadResponse: the release response is not signed by a certificate for
// the vault, is malformed, or releases another key than the one asked for.
var ErrBadResponse = errors.New("akv: release response failed verification")

// ErrVaultHost: the vault host is neither one of Client.Hosts nor in an
// Azure Key Vault or Managed HSM domain. It wraps keyrelease.ErrNotAllowed,
// and is returned before any request (or token request) is made.
var ErrVaultHost = fmt.Errorf("%w: vault host", keyrelease.ErrNotAllowed)

// vaultDomains are the DNS suffixes of Azure Key Vault and Managed HSM in
// the public and sovereign clouds (public, China, US Government, Germany,
// US Nat, US Sec). The token audience of a vault is https://<suffix>.
var vaultDomains = []string{
	"vault.azure.net", "managedhsm.azure.net",
	"vault.azure.cn", "managedhsm.azure.cn",
	"vault.usgovcloudapi.net", "managedhsm.usgovcloudapi.net",
	"vault.microsoftazure.de", "managedhsm.microsoftazure.de",
	"vault.cloudapi.eaglex.ic.gov", "vault.cloudapi.microsoft.scloud",
}

// DefaultScope is the token scope sent for Client.Hosts: the audience of
// Key Vault in the public cloud, which the devstack's vault expects too.
const DefaultScope = "https://vault.azure.net/.default"

// AzureScope returns the token scope of a vault host (host[:port]) in an
// Azure Key Vault or Managed HSM domain, e.g. https://vault.azure.cn/.default
// for myvault.vault.azure.cn, and false for any other host. The scope comes
// from the host's DNS suffix, never from the vault's 401 challenge.
func AzureScope(host string) (string, bool) {
	h := strings.ToLower(strings.TrimSuffix(hostOnly(host), "."))
	for _, d := range vaultDomains {
		if name, ok := strings.CutSuffix(h, "."+d); ok && name != "" {
			return "https://" + d + "/.default", true
		}
	}
	return "", false
}

// Client releases keys.
type Client struct {
	// Credential authenticates to Key Vault. The scope asked of it is
	// pinned by the vault's DNS suffix (AzureScope), or DefaultScope for
	// Hosts, whatever the vault's 401 challenge names.
	Credential azcore.TokenCredential
	// Hosts are the vault hosts (host[:port]) outside Azure's Key Vault and
	// Managed HSM domains that may be used: the vaults of configured keys,
	// such as the devstack's. Every other host outside those domains is
	// refused with ErrVaultHost before anything is sent to it.
	Hosts []string
	// Transport sends requests (nil = azcore's default). An *http.Client
	// satisfies it, so tests and the devstack can add a CA.
	Transport policy.Transporter
	// Retry configures azcore's retry policy (zero = azcore's defaults).
	Retry policy.RetryOptions
	// Roots verifies the certificate that signs release responses
	// (nil = the system roots): the system roots plus only the CAs
	// configured for release signing (tls.release_ca_files, the devstack's
	// CA), never a CA trusted for transport alone.
	Roots *x509.CertPool
	// Enc is the key export algorithm (default CKM_RSA_AES_KEY_WRAP, the
	// only one every vault supports).
	Enc string
	// Now is the clock for certificate validation (nil = time.Now).
	Now func() time.Time
}

// Scope returns the token scope for a vault host, or ErrVaultHost when the
// host may not be used: it is neither in an Azure vault domain nor one of
// Hosts.
func (c *Client) Scope(host string) (string, error) {
	if scope, ok := AzureScope(host); ok {
		return scope, nil
	}
	for _, h := range c.Hosts {
		if strings.EqualFold(h, host) {
			return DefaultScope, nil
		}
	}
	return "", fmt.Errorf("%w %q is neither the vault of a configured key nor in an Azure Key Vault or Managed HSM domain "+
		"(*.vault.azure.net, *.managedhsm.azure.net, or their sovereign-cloud counterparts)", ErrVaultHost, host)
}

func (c *Client) client(ref keyrelease.KeyRef) (*azkeys.Client, error) {
	scope, err := c.Scope(ref.Vault)
	if err != nil {
		return nil, err
	}
	opts := &azkeys.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: c.Transport, Retry: c.Retry}}
	// Outside Azure's own vault domains (the devstack) the 401 challenge's
	// resource cannot match the host; inside them keep the SDK's check. The
	// scope is pinned either way.
	if _, ok := AzureScope(ref.Vault); !ok {
		opts.DisableChallengeResourceVerification = true
	}
	return azkeys.NewClient("https://"+ref.Vault, pinnedScope{cred: c.Credential, scope: scope}, opts)
}

// PinScope returns a credential that asks cred for the token scope of a
// vault host (AzureScope, else DefaultScope) whatever azkeys requests, for
// the key CLIs' own azkeys clients; and whether the host is in an Azure
// vault domain (where azkeys' own challenge check can stay on).
func PinScope(cred azcore.TokenCredential, host string) (azcore.TokenCredential, bool) {
	scope, ok := AzureScope(host)
	if !ok {
		scope = DefaultScope
	}
	return pinnedScope{cred: cred, scope: scope}, ok
}

// pinnedScope asks its credential for one scope whatever azkeys requests:
// azkeys takes the scope from the vault's 401 challenge, which a vault
// that is not Key Vault could point at another resource (Azure Resource
// Manager, Storage) to receive a token for it.
type pinnedScope struct {
	cred  azcore.TokenCredential
	scope string
}

func (p pinnedScope) GetToken(ctx context.Context, opts policy.TokenRequestOptions) (azcore.AccessToken, error) {
	opts.Scopes = []string{p.scope}
	return p.cred.GetToken(ctx, opts)
}

func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}

// Release asks the vault to release ref to the TEE described by the MAA
// token, whose runtime data carries wk, and returns the key. A policy or
// permission refusal wraps keyrelease.ErrDenied and carries the vault's
// message; a missing key wraps keyrelease.ErrNotFound; throttling and
// service errors wrap keyrelease.ErrUnavailable.
func (c *Client) Release(ctx context.Context, ref keyrelease.KeyRef, maaToken string, wk *wrapkey.WrappingKey) (*keyrelease.Key, error) {
	var key crypto.Decrypter // nil unless given: never a typed nil
	if wk != nil && wk.Private != nil {
		key = wk.Private
	}
	return c.ReleaseTo(ctx, ref, maaToken, key, c.Enc)
}

// ReleaseTo is Release for any attestation provider: key is the decrypter
// of the key the token names (a software key, or a TPM key), enc the key
// export algorithm to request ("" = c.Enc, else CKM_RSA_AES_KEY_WRAP).
func (c *Client) ReleaseTo(ctx context.Context, ref keyrelease.KeyRef, maaToken string, key crypto.Decrypter, enc string) (*keyrelease.Key, error) {
	kc, err := c.client(ref)
	if err != nil {
		return nil, err
	}
	if enc == "" {
		enc = c.Enc
	}
	if enc == "" {
		enc = wrapkey.EncRSAAESKeyWrap
	}
	alg := azkeys.KeyEncryptionAlgorithm(enc)
	resp, err := kc.Release(ctx, ref.Name, ref.Version, azkeys.ReleaseParameters{TargetAttestationToken: &maaToken, Algorithm: &alg}, nil)
	if err != nil {
		return nil, classify(ref, err)
	}
	if resp.Value == nil {
		return nil, fmt.Errorf("%w: empty release response for %s", ErrBadResponse, ref)
	}
	payload, err := c.verify(*resp.Value, hostOnly(ref.Vault))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	return decode(ref, payload, key, enc)
}

// classify maps an azkeys error to the sentinel errors of keyrelease.
func classify(ref keyrelease.KeyRef, err error) error {
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		if errors.Is(err, context.Canceled) {
			return err
		}
		return fmt.Errorf("%w: release %s: %v", keyrelease.ErrUnavailable, ref, err)
	}
	msg := re.ErrorCode
	if re.RawResponse != nil && re.RawResponse.Body != nil {
		var body struct {
			Error struct {
				Code, Message string
			} `json:"error"`
		}
		if json.NewDecoder(re.RawResponse.Body).Decode(&body) == nil && body.Error.Message != "" {
			msg = body.Error.Code + ": " + body.Error.Message
		}
	}
	switch code := re.StatusCode; {
	case code == http.StatusNotFound:
		return fmt.Errorf("%w: %s: %s", keyrelease.ErrNotFound, ref, msg)
	case code == http.StatusUnauthorized || code == http.StatusForbidden || code == http.StatusBadRequest || code == http.StatusConflict:
		return fmt.Errorf("%w: %s: HTTP %d: %s", keyrelease.ErrDenied, ref, code, msg)
	default:
		return fmt.Errorf("%w: %s: HTTP %d: %s", keyrelease.ErrUnavailable, ref, code, msg)
	}
}

// verify checks the compact JWS of a release response as the reference
// sidecar does, but against configurable roots: the signer certificate
// (x5c[0]) must chain to a trusted root through x5c[1:] and be valid for
// the vault's host name; only then is the signature checked and the
// payload returned.
func (c *Client) verify(compact, host string) ([]byte, error) {
	msg, err := jws.Parse([]byte(compact))
	if err != nil || len(msg.Signatures()) != 1 {
		return nil, fmt.Errorf("%w: not a compact JWS: %v", ErrBadResponse, err)
	}
	hdr := msg.Signatures()[0].ProtectedHeaders()
	chain := hdr.X509CertChain()
	if chain == nil || chain.Len() == 0 {
		return nil, fmt.Errorf("%w: no x5c certificate chain", ErrBadResponse)
	}
	var certs []*x509.Certificate
	for i := 0; i < chain.Len(); i++ {
		b, _ := chain.Get(i)
		der, err := base64.StdEncoding.DecodeString(string(b))
		if err != nil {
			return nil, fmt.Errorf("%w: x5c[%d]: %v", ErrBadResponse, i, err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%w: x5c[%d]: %v", ErrBadResponse, i, err)
		}
		certs = append(certs, cert)
	}
	inter := x509.NewCertPool()
	for _, ic := range certs[1:] {
		inter.AddCert(ic)
	}
	now := time.Now()
	if c.Now != nil {
		now = c.Now()
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: c.Roots, Intermediates: inter, DNSName: host, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("%w: signer certificate: %v", ErrBadResponse, err)
	}
	alg := hdr.Algorithm()
	switch alg {
	case jwa.RS256, jwa.RS384, jwa.RS512, jwa.PS256, jwa.PS384, jwa.PS512, jwa.ES256, jwa.ES384, jwa.ES512:
	default:
		return nil, fmt.Errorf("%w: signature algorithm %q", ErrBadResponse, alg)
	}
	payload, err := jws.Verify([]byte(compact), jws.WithKey(alg, certs[0].PublicKey))
	if err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrBadResponse, err)
	}
	return payload, nil
}

// releasePayload is the part of the release JWS payload we use.
type releasePayload struct {
	Request struct {
		Enc string `json:"enc"`
	} `json:"request"`
	Response struct {
		Key struct {
			Key struct {
				Kid    string   `json:"kid"`
				Kty    string   `json:"kty"`
				KeyHSM string   `json:"key_hsm"`
				KeyOps []string `json:"key_ops"`
			} `json:"key"`
		} `json:"key"`
	} `json:"response"`
}

func decode(ref keyrelease.KeyRef, payload []byte, wrapping crypto.Decrypter, enc string) (*keyrelease.Key, error) {
	var p releasePayload
	if err := json.Unmarshal(payload, &p); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrBadResponse, err)
	}
	if p.Request.Enc != "" {
		enc = p.Request.Enc
	}
	k := p.Response.Key.Key
	kid, err := checkKID(ref, k.Kid)
	if err != nil {
		return nil, err
	}
	if err := keyrelease.CheckOps(k.KeyOps); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadResponse, err)
	}
	hsmJSON, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(k.KeyHSM, "="))
	if err != nil {
		return nil, fmt.Errorf("%w: key_hsm: %v", ErrBadResponse, err)
	}
	var hsm struct {
		Ciphertext string `json:"ciphertext"`
	}
	if err := json.Unmarshal(hsmJSON, &hsm); err != nil {
		return nil, fmt.Errorf("%w: key_hsm: %v", ErrBadResponse, err)
	}
	ct, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(hsm.Ciphertext, "="))
	if err != nil {
		return nil, fmt.Errorf("%w: ciphertext: %v", ErrBadResponse, err)
	}
	if wrapping == nil {
		return nil, fmt.Errorf("%s: %w: no wrapping key", ref, wrapkey.ErrUnwrap)
	}
	material, err := wrapkey.UnwrapWith(wrapping, enc, ct)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	defer clear(material)
	var key *keyrelease.Key
	switch strings.TrimSuffix(k.Kty, "-HSM") {
	case "oct":
		key = &keyrelease.Key{Type: keyrelease.KeyTypeOct, Oct: append([]byte(nil), material...)}
	case "RSA", "EC":
		priv, err := x509.ParsePKCS8PrivateKey(material)
		if err != nil {
			return nil, fmt.Errorf("%w: released %s key is not PKCS#8: %v", ErrBadResponse, k.Kty, err)
		}
		if key, err = keyrelease.FromCrypto(priv); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%w: key type %q", ErrBadResponse, k.Kty)
	}
	key.Ref = ref
	key.Ref.Version = kid.Version // the version actually released
	key.Ops = k.KeyOps
	return key, nil
}

// checkKID binds a release response to its request: the payload's kid must
// name the key asked for (and its version, when the request pinned one).
// The response is signed by the vault, but a response of another request
// (another key of the same vault) must not be accepted for this one.
func checkKID(ref keyrelease.KeyRef, kid string) (keyrelease.KeyRef, error) {
	got, err := keyrelease.ParseKeyRef(kid)
	if err != nil {
		return keyrelease.KeyRef{}, fmt.Errorf("%w: payload kid %q is not a key identifier", ErrBadResponse, kid)
	}
	if !strings.EqualFold(got.Name, ref.Name) || (ref.Version != "" && !strings.EqualFold(got.Version, ref.Version)) {
		return keyrelease.KeyRef{}, fmt.Errorf("%w: released %s, asked for %s", ErrBadResponse, got, ref)
	}
	if got.Version == "" {
		return keyrelease.KeyRef{}, fmt.Errorf("%w: payload kid %q has no version", ErrBadResponse, kid)
	}
	return got, nil
}
