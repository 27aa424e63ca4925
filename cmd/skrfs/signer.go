package main

import (
	"context"
	gocrypto "crypto"
	"fmt"
	"net/http"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/keyrelease"
)

// Manifest signers and pinned signer keys (docs/format.md section 12).

// loadSigner returns the manifest signer named by arg: a private key file
// (PEM or JWK: EC P-256, P-384, RSA 2048-4096) or a Key Vault / Managed HSM
// key URL, used through azkeys Sign so that the key never leaves the HSM.
func loadSigner(ctx context.Context, arg string, cred azcore.TokenCredential, tr *azcore.ClientOptions) (crypto.ManifestSigner, error) {
	if strings.HasPrefix(arg, "https://") {
		ref, err := keyrelease.ParseKeyRef(arg)
		if err != nil {
			return nil, usageError{fmt.Errorf("--sign: %w", err)}
		}
		if cred == nil {
			if cred, err = azidentity.NewDefaultAzureCredential(nil); err != nil {
				return nil, fmt.Errorf("azure credential: %w", err)
			}
		}
		return newVaultSigner(ctx, ref, cred, tr)
	}
	k, err := loadKey(arg)
	if err != nil {
		return nil, err
	}
	signer, ok := k.Private.(gocrypto.Signer)
	if !ok {
		k.Wipe()
		return nil, usageError{fmt.Errorf("--sign %s: needs a private EC or RSA key", arg)}
	}
	return crypto.NewLocalSigner(signer)
}

// vaultSigner signs manifest digests with a Key Vault key's Sign operation.
type vaultSigner struct {
	client *azkeys.Client
	ref    keyrelease.KeyRef
	alg    string
	pub    gocrypto.PublicKey
}

func newVaultSigner(ctx context.Context, ref keyrelease.KeyRef, cred azcore.TokenCredential, tr *azcore.ClientOptions) (*vaultSigner, error) {
	c, err := vaultClient(ref, cred, tr)
	if err != nil {
		return nil, err
	}
	pub, err := vaultPublicKey(ctx, c, ref)
	if err != nil {
		return nil, err
	}
	alg, err := crypto.AlgForKey(pub)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", ref, err)
	}
	return &vaultSigner{client: c, ref: ref, alg: alg, pub: pub}, nil
}

func (s *vaultSigner) Alg() string                { return s.alg }
func (s *vaultSigner) Public() gocrypto.PublicKey { return s.pub }

// SignDigest asks Key Vault to sign: for ES256/ES384 it returns R || S and
// for PS256 the RSASSA-PSS signature, which is the JWS form. SignManifest
// verifies the result against the public key before anything is published.
func (s *vaultSigner) SignDigest(digest []byte) ([]byte, error) {
	alg := azkeys.SignatureAlgorithm(s.alg)
	resp, err := s.client.Sign(context.Background(), s.ref.Name, s.ref.Version, azkeys.SignParameters{Algorithm: &alg, Value: digest}, nil)
	if err != nil {
		return nil, fmt.Errorf("sign with Key Vault key %s: %w", s.ref, err)
	}
	return resp.Result, nil
}

// vaultPublicKey fetches the public part of a Key Vault key (keys/get).
func vaultPublicKey(ctx context.Context, c *azkeys.Client, ref keyrelease.KeyRef) (gocrypto.PublicKey, error) {
	resp, err := c.GetKey(ctx, ref.Name, ref.Version, nil)
	if err != nil {
		return nil, fmt.Errorf("get key %s (needs keys/get): %w", ref, err)
	}
	if resp.Key == nil {
		return nil, fmt.Errorf("get key %s: empty response", ref)
	}
	raw, err := resp.Key.MarshalJSON()
	if err != nil {
		return nil, err
	}
	k, err := keyrelease.ParseKey(raw)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", ref, err)
	}
	if k.Public == nil {
		return nil, fmt.Errorf("%w: key %s has no public part (oct keys cannot sign manifests)", crypto.ErrKeyType, ref)
	}
	return k.Public, nil
}

// pinnedKeys loads the signer public keys pinned by a dataset: PEM or JWK
// files (public or private; only the public part is kept), or Key Vault key
// URLs whose public part is fetched once, over TLS, with cred.
func pinnedKeys(ctx context.Context, specs []string, cred azcore.TokenCredential, hc *http.Client, path func(string) string) (*crypto.ManifestVerifier, error) {
	var pubs []gocrypto.PublicKey
	for _, s := range specs {
		if strings.HasPrefix(s, "https://") {
			ref, err := keyrelease.ParseKeyRef(s)
			if err != nil {
				return nil, fmt.Errorf("signer %s: %w", s, err)
			}
			if cred == nil {
				if cred, err = azidentity.NewDefaultAzureCredential(nil); err != nil {
					return nil, fmt.Errorf("azure credential: %w", err)
				}
			}
			var co *azcore.ClientOptions
			if hc != nil {
				co = &azcore.ClientOptions{Transport: hc}
			}
			c, err := vaultClient(ref, cred, co)
			if err != nil {
				return nil, err
			}
			pub, err := vaultPublicKey(ctx, c, ref)
			if err != nil {
				return nil, fmt.Errorf("signer %s: %w", s, err)
			}
			pubs = append(pubs, pub)
			continue
		}
		p := s
		if path != nil {
			p = path(s)
		}
		k, err := loadKey(p)
		if err != nil {
			return nil, fmt.Errorf("signer: %w", err)
		}
		pub := k.Public
		k.Wipe()
		if pub == nil {
			return nil, fmt.Errorf("signer %s: %w: not an EC or RSA key", s, crypto.ErrKeyType)
		}
		pubs = append(pubs, pub)
	}
	return crypto.NewManifestVerifier(pubs...)
}

var _ policy.Transporter = (*http.Client)(nil)
