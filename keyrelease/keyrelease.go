// Package keyrelease turns "I need key X" into key material inside the TEE.
// This root package holds only the types and interfaces the filesystem
// consumes (KeyRef, Key, Releaser) and the sentinel errors; the Azure Secure
// Key Release client and the attestation providers live in subpackages and
// are wired in by cmd/skrfs.
package keyrelease

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// Sentinel errors, classified by fs/errno.go.
var (
	// ErrDenied: the key service refused to release the key (release policy
	// not satisfied, missing role, 401/403).
	ErrDenied = errors.New("keyrelease: release denied")
	// ErrAttestation: evidence could not be produced or was rejected.
	ErrAttestation = errors.New("keyrelease: attestation failed")
	// ErrNotFound: no such key.
	ErrNotFound = errors.New("keyrelease: key not found")
	// ErrNotAllowed: the key is not in the configured allow-list.
	ErrNotAllowed = errors.New("keyrelease: key not allowed by configuration")
	// ErrUnavailable: the key or attestation service could not be reached
	// after retries.
	ErrUnavailable = errors.New("keyrelease: service unavailable")
	// ErrInvalidKeyRef: a key reference that is not a Key Vault key URL.
	ErrInvalidKeyRef = errors.New("keyrelease: invalid key reference")
	// ErrKeyFormat: key material that cannot be parsed.
	ErrKeyFormat = errors.New("keyrelease: unrecognised key format")
)

// KeyRef names a key in Azure Key Vault or Managed HSM by its key identifier
// URL, https://<vault-host>/keys/<name>[/<version>].
type KeyRef struct {
	Vault   string // host[:port], e.g. myvault.vault.azure.net
	Name    string
	Version string // "" = the current version
}

// Key Vault object names: 1-127 characters, letters, digits and dashes.
var (
	keyNameRE    = regexp.MustCompile(`^[0-9A-Za-z-]{1,127}$`)
	keyVersionRE = regexp.MustCompile(`^[0-9A-Za-z]{1,64}$`)
)

// ParseKeyRef parses a Key Vault key identifier.
func ParseKeyRef(s string) (KeyRef, error) {
	u, err := url.Parse(s)
	if err != nil {
		return KeyRef{}, fmt.Errorf("%w: %q: %v", ErrInvalidKeyRef, s, err)
	}
	if u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return KeyRef{}, fmt.Errorf("%w: %q: want https://<vault-host>/keys/<name>[/<version>]", ErrInvalidKeyRef, s)
	}
	parts := strings.Split(strings.TrimSuffix(u.Path, "/"), "/")
	if len(parts) < 3 || len(parts) > 4 || parts[0] != "" || parts[1] != "keys" {
		return KeyRef{}, fmt.Errorf("%w: %q: path must be /keys/<name>[/<version>]", ErrInvalidKeyRef, s)
	}
	r := KeyRef{Vault: strings.ToLower(u.Host), Name: parts[2]}
	if !keyNameRE.MatchString(r.Name) {
		return KeyRef{}, fmt.Errorf("%w: %q: key name must be 1-127 letters, digits or dashes", ErrInvalidKeyRef, s)
	}
	if len(parts) == 4 {
		r.Version = parts[3]
		if !keyVersionRE.MatchString(r.Version) {
			return KeyRef{}, fmt.Errorf("%w: %q: bad key version", ErrInvalidKeyRef, s)
		}
	}
	return r, nil
}

// String returns the key identifier URL.
func (r KeyRef) String() string {
	s := "https://" + r.Vault + "/keys/" + r.Name
	if r.Version != "" {
		s += "/" + r.Version
	}
	return s
}

// Matches reports whether a reference found in an object header names this
// key: same vault (case-insensitive) and name, and, when both carry a
// version, the same version. A versionless configured key accepts any
// version of that key.
func (r KeyRef) Matches(other KeyRef) bool {
	return strings.EqualFold(r.Vault, other.Vault) && r.Name == other.Name &&
		(r.Version == "" || other.Version == "" || r.Version == other.Version)
}

// Releaser releases keys. Implementations: the Azure SKR client, a static
// key file, and the cache that decorates either. Release may be called
// concurrently; it returns a Key the caller owns and must Wipe when done.
type Releaser interface {
	Release(ctx context.Context, ref KeyRef) (*Key, error)
}
