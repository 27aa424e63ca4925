// Package config loads and validates the skrfs configuration file
// (docs/config.md): which keys may be released and how they appear under
// keys/, which datasets are served, how to attest, and which identity talks
// to Key Vault and storage. Validation errors name the field and the reason.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/skrfs/skrfs/keyrelease"
)

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("invalid configuration")

// Config is the whole file.
type Config struct {
	// Attestation selects the evidence provider and the MAA instance.
	Attestation Attestation `yaml:"attestation"`
	// Identity selects how Microsoft Entra tokens are obtained for Key
	// Vault (and storage, when a dataset uses identity).
	Identity Identity `yaml:"identity"`
	// TLS adds trusted roots (for the devstack or a TLS-inspecting proxy).
	TLS TLS `yaml:"tls"`
	// Keys lists the only keys that may ever be released.
	Keys []Key `yaml:"keys"`
	// Datasets lists the encrypted trees served as plaintext.
	Datasets []Dataset `yaml:"datasets"`
	// Mount holds ownership and permission settings of the mount.
	Mount Mount `yaml:"mount"`
	// Cache tunes the key cache.
	Cache Cache `yaml:"cache"`
	// Serve configures the sidecar-compatible HTTP API (docs/sidecar.md).
	Serve Serve `yaml:"serve"`
	// Metrics configures the Prometheus, health and readiness endpoints.
	Metrics Metrics `yaml:"metrics"`
	// Audit configures the audit events of key and object opens.
	Audit Audit `yaml:"audit"`
	// Delivery configures FUSE-free delivery (skrfs fetch, skrfs run
	// --no-fuse): delivery.go.
	Delivery Delivery `yaml:"delivery"`
	// Write tunes the staging of writes to writable datasets.
	Write Write `yaml:"write"`

	dir string // directory of the file, for relative paths
}

// Attestation providers.
const (
	ProviderAuto = "auto" // detect SEV-SNP hardware (configfs-tsm, /dev/sev-guest)
	ProviderSNP  = "snp"  // require SEV-SNP hardware
	ProviderFake = "fake" // the devstack's fake SEV-SNP device: development only
	// ProviderAzureCVM: an Azure confidential VM's vTPM (HCL report,
	// attest/AzureGuest, a TPM-resident wrapping key).
	ProviderAzureCVM = "azure-cvm"
	// ProviderSGX: an Intel SGX enclave under Gramine (/dev/attestation in
	// DCAP mode, attest/SgxEnclave, a wrapping key in enclave memory).
	ProviderSGX = "sgx"
)

// Attestation configures evidence and MAA.
type Attestation struct {
	// Provider is auto (default), snp, azure-cvm, sgx, or fake.
	Provider string `yaml:"provider"`
	// MAA is the attestation instance URL, e.g.
	// https://sharedeus.eus.attest.azure.net. Required.
	MAA string `yaml:"maa"`
	// SecurityContextDir overrides $UVM_SECURITY_CONTEXT_DIR (ACI).
	SecurityContextDir string `yaml:"security_context_dir"`
	// Fake describes the fake TEE; allowed and required only with provider fake.
	Fake *FakeTEE `yaml:"fake"`
	// CVM tunes the azure-cvm provider (also used when auto detects a
	// CVM); allowed with provider auto or azure-cvm.
	CVM *CVMAttestation `yaml:"cvm"`
	// SGX tunes the sgx provider (also used when auto detects Gramine);
	// allowed with provider auto or sgx.
	SGX *SGXAttestation `yaml:"sgx"`
}

// SGXAttestation configures the sgx provider.
type SGXAttestation struct {
	// Dir is Gramine's attestation directory (default /dev/attestation;
	// the devstack's fake enclave serves one elsewhere).
	Dir string `yaml:"dir"`
	// Enc is the key export algorithm requested from Key Vault (default
	// CKM_RSA_AES_KEY_WRAP; RSA_AES_KEY_WRAP_256 and RSA_AES_KEY_WRAP_384
	// also accepted).
	Enc string `yaml:"enc"`
}

// CVMAttestation configures the azure-cvm provider.
type CVMAttestation struct {
	// TPM is the vTPM: a device (default /dev/tpmrm0) or tcp:HOST:PORT
	// (swtpm or a simulator, for the devstack).
	TPM string `yaml:"tpm"`
	// EventLog is the TCG event log sent to MAA (default
	// /sys/kernel/security/tpm0/binary_bios_measurements).
	EventLog string `yaml:"event_log"`
	// Enc is the key export algorithm requested from Key Vault (default
	// RSA_AES_KEY_WRAP_256; CKM_RSA_AES_KEY_WRAP and RSA_AES_KEY_WRAP_384
	// also accepted).
	Enc string `yaml:"enc"`
}

// FakeTEE is the identity of the devstack's fake SEV-SNP device.
type FakeTEE struct {
	// Measurement is the launch measurement, 96 hex digits.
	Measurement string `yaml:"measurement"`
	// HostData is the 32-byte HOST_DATA in hex; or set HostDataPolicy.
	HostData string `yaml:"host_data"`
	// HostDataPolicy is a file whose SHA-256 becomes HOST_DATA, as ACI does
	// with the confidential computing enforcement policy.
	HostDataPolicy string `yaml:"host_data_policy"`
	// Debug sets the guest policy's debug bit.
	Debug bool `yaml:"debug"`
}

// Identity kinds.
const (
	IdentityDefault  = "default"  // azidentity.DefaultAzureCredential
	IdentityManaged  = "managed"  // IMDS managed identity
	IdentityWorkload = "workload" // AKS workload identity (federated token file)
	IdentityToken    = "token"    // a static bearer token from a file
)

// Identity configures Entra tokens.
type Identity struct {
	// Kind is default (default), managed, workload, or token.
	Kind string `yaml:"kind"`
	// ClientID selects a user-assigned managed identity, or the workload
	// identity's application (default $AZURE_CLIENT_ID).
	ClientID string `yaml:"client_id"`
	// TenantID for workload identity (default $AZURE_TENANT_ID).
	TenantID string `yaml:"tenant_id"`
	// TokenFile holds a bearer token (kind token) or the federated token
	// (kind workload; default $AZURE_FEDERATED_TOKEN_FILE).
	TokenFile string `yaml:"token_file"`
	// AuthorityHost for workload identity (default $AZURE_AUTHORITY_HOST).
	AuthorityHost string `yaml:"authority_host"`
	// IMDSEndpoint replaces http://169.254.169.254 (devstack only).
	IMDSEndpoint string `yaml:"imds_endpoint"`
}

// TLS configures extra trust.
type TLS struct {
	// CAFiles are PEM files of extra trusted roots for connections (a
	// TLS-inspecting proxy, the devstack), added to the system pool. They
	// are not trusted to sign key releases.
	CAFiles []string `yaml:"ca_files"`
	// ReleaseCAFiles are PEM files of extra roots trusted to sign Key
	// Vault's release responses, added to the system pool (the devstack's
	// CA). Real Key Vault needs none.
	ReleaseCAFiles []string `yaml:"release_ca_files"`
}

// Key is one releasable key and its files under keys/.
type Key struct {
	// Name is the file name under keys/ (and the base of the views).
	Name string `yaml:"name"`
	// Ref is the Key Vault key identifier https://<vault>/keys/<name>[/<version>].
	Ref string `yaml:"ref"`
	// Views lists the files shown for the key; default: the key itself
	// (PEM for RSA/EC, raw bytes for oct), <name>.jwk and, for RSA/EC,
	// <name>.pub.pem.
	Views []View `yaml:"views"`
	// Versions, for a ref without a version, lists the only versions of
	// the key that dataset objects may be opened with (Key Vault version
	// identifiers). Without it, an object may name any version of the key,
	// and storage picks which one is released. Key Vault versions are
	// opaque, unordered identifiers, so there is no minimum version: list
	// the versions to accept.
	Versions []string `yaml:"versions"`
}

// View formats.
const (
	FormatDefault = "default" // PKCS#8 PEM for RSA/EC, raw bytes for oct
	FormatJWK     = "jwk"
	FormatPubPEM  = "pub.pem"
)

// View is one file showing a key.
type View struct {
	// Format is default, jwk or pub.pem.
	Format string `yaml:"format"`
	// File is the file name under keys/ (default <name>, <name>.jwk, <name>.pub.pem).
	File string `yaml:"file"`
	// Mode is the file mode in octal, default "0400".
	Mode string `yaml:"mode"`
}

// Dataset is one encrypted tree.
type Dataset struct {
	// Name is the directory name at the mount root.
	Name string `yaml:"name"`
	// Local is a local directory of objects.
	Local string `yaml:"local"`
	// Azure is a container or prefix URL, optionally with a SAS.
	Azure string `yaml:"azure"`
	// Suffix is stripped from object names, e.g. ".skrfs".
	Suffix string `yaml:"suffix"`
	// Keys names the entries of Keys whose objects this dataset may hold;
	// an object naming any other key is refused. Default: all keys.
	Keys []string `yaml:"keys"`

	// Manifest is require, prefer or off (docs/format.md section 12):
	// whether the dataset's signed manifest is enforced. Default: require
	// when Signers is set, else off.
	Manifest string `yaml:"manifest"`
	// Signers pins the manifest signer public keys: each a PEM file, a JWK
	// file, or a Key Vault key URL https://<vault>/keys/<name>[/<version>]
	// (its public part is fetched once at mount; needs keys/get).
	Signers []string `yaml:"signers"`
	// ID is the dataset id the manifest must carry ("" = the first one seen
	// is pinned for the life of the mount).
	ID string `yaml:"id"`
	// MinEpoch refuses manifests with a lower epoch.
	MinEpoch uint64 `yaml:"min_epoch"`
	// MaxAge refuses manifests created longer ago (0 = no limit).
	MaxAge Duration `yaml:"max_age"`
	// ManifestRefresh is how often the manifest is re-read (default 1m;
	// SIGHUP re-reads it at once).
	ManifestRefresh Duration `yaml:"manifest_refresh"`
	// Anchor is a Key Vault secret URL https://<vault>/secrets/<name>
	// holding the dataset's current epoch: lower epochs are refused. The
	// mount's identity needs secrets/get on it.
	Anchor string `yaml:"anchor"`

	// Writable makes the dataset read-write (docs/writes.md): files
	// written through the mount are sealed for WriteKey and committed to
	// the dataset's storage. Default false: writes get EROFS.
	Writable bool `yaml:"writable"`
	// WriteKey names the key (one of the dataset's keys) that seals what
	// the mount writes. Required when Writable. With an RSA or EC key only
	// its public part is needed: a mount that only writes needs no release.
	WriteKey string `yaml:"write_key"`
	// SignKey signs the manifests that a writable dataset with an
	// enforced manifest publishes at every commit, unlink and rename: a
	// private key file (PEM or JWK, EC P-256/P-384 or RSA) or a Key Vault
	// or Managed HSM key URL, used through its Sign operation (keys/sign;
	// the key never leaves the HSM). Its public key must be one of
	// Signers. Without it such a dataset refuses writes (EROFS).
	SignKey string `yaml:"sign_key"`
}

// Manifest modes of Dataset.Manifest.
const (
	ManifestRequire = "require"
	ManifestPrefer  = "prefer"
	ManifestOff     = "off"
)

// Mount configures the filesystem.
type Mount struct {
	UID        *int   `yaml:"uid"`
	GID        *int   `yaml:"gid"`
	FileMode   string `yaml:"file_mode"` // default "0400"
	DirMode    string `yaml:"dir_mode"`  // default "0500"
	AllowOther bool   `yaml:"allow_other"`
}

// Write tunes the staging of writes (docs/writes.md).
type Write struct {
	// StagingBytes bounds the plaintext written but not yet committed
	// that is held in memory, across all files (default 64 MiB, at least
	// 1 MiB). Past it, staged chunks are sealed under a per-file key that
	// lives only in memory and spilled to SpillDir.
	StagingBytes int64 `yaml:"staging_bytes"`
	// SpillDir holds the (unlinked) spill files (default the system's
	// temporary directory). Only ciphertext is written there.
	SpillDir string `yaml:"spill_dir"`
}

// DefaultStagingBytes is the default of write.staging_bytes.
const DefaultStagingBytes = 64 << 20

// Cache tunes released-key caching.
type Cache struct {
	// TTL is how long a released key is kept before it is released again
	// (default 1h).
	TTL Duration `yaml:"ttl"`
	// MaxStale is how long a key may be served after refreshes fail
	// (default 0: fail closed at expiry).
	MaxStale Duration `yaml:"max_stale"`
}

// Serve configures the HTTP API of the reference SKR sidecar.
type Serve struct {
	// Listen is the API's address: the default of skrfs serve --listen
	// (default 127.0.0.1:8080), and, when set, skrfs mount serves the API
	// too, sharing its key cache.
	Listen string `yaml:"listen"`
	// AnyKey lets callers release any key the identity may release, as the
	// reference sidecar does. By default only the keys listed under keys:
	// can be released through the API.
	AnyKey bool `yaml:"any_key"`
	// Attest turns on /attest/raw, /attest/combined and /attest/maa. They
	// hand out evidence and MAA tokens bound to the caller's runtime data,
	// with which a caller can release any key the identity may release, so
	// they are off (403) unless this or AnyKey is set.
	Attest bool `yaml:"attest"`
	// CombinedReport makes /attest/combined answer the older upstream
	// shape {"combined_report": "<JSON string>"} instead of the newer
	// top-level fields.
	CombinedReport bool `yaml:"combined_report"`
	// AllowRemote permits a listen address that is not a loopback address.
	// The API releases keys to whoever can reach it: the reference sidecar
	// binds to localhost only, and so does skrfs unless this is set.
	AllowRemote bool `yaml:"allow_remote"`
}

// Metrics configures the observability endpoints.
type Metrics struct {
	// Listen is the address of /metrics, /healthz and /readyz (default:
	// off). Loopback addresses only, unless Serve.AllowRemote is set.
	Listen string `yaml:"listen"`
}

// Audit configures audit events.
type Audit struct {
	// File receives one JSON line per audit event (appended; default: the
	// standard error, alongside the log). Audit events are written whatever
	// the log level.
	File string `yaml:"file"`
	// Disabled turns audit events off.
	Disabled bool `yaml:"disabled"`
}

// Duration is a time.Duration written as "90s", "1h".
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration such as 90s or 1h", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Load reads and validates a configuration file.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	abs, _ := filepath.Abs(path)
	c.dir = filepath.Dir(abs)
	return c, nil
}

// Parse decodes and validates configuration bytes. Unknown fields are errors.
func Parse(b []byte) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	c.defaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Path resolves p relative to the configuration file's directory.
func (c *Config) Path(p string) string {
	if p == "" || filepath.IsAbs(p) || c.dir == "" {
		return p
	}
	return filepath.Join(c.dir, p)
}

// KeyByName returns the key entry called name.
func (c *Config) KeyByName(name string) (*Key, bool) {
	for i := range c.Keys {
		if c.Keys[i].Name == name {
			return &c.Keys[i], true
		}
	}
	return nil, false
}

func (c *Config) defaults() {
	if c.Attestation.Provider == "" {
		c.Attestation.Provider = ProviderAuto
	}
	if c.Identity.Kind == "" {
		c.Identity.Kind = IdentityDefault
	}
	if c.Mount.FileMode == "" {
		c.Mount.FileMode = "0400"
	}
	if c.Mount.DirMode == "" {
		c.Mount.DirMode = "0500"
	}
	if c.Cache.TTL == 0 {
		c.Cache.TTL = Duration(time.Hour)
	}
	if c.Write.StagingBytes == 0 {
		c.Write.StagingBytes = DefaultStagingBytes
	}
	for i := range c.Datasets {
		d := &c.Datasets[i]
		if d.Manifest == "" {
			d.Manifest = ManifestOff
			if len(d.Signers) > 0 {
				d.Manifest = ManifestRequire
			}
		}
		if d.ManifestRefresh == 0 {
			d.ManifestRefresh = Duration(time.Minute)
		}
	}
	for i := range c.Keys {
		k := &c.Keys[i]
		if len(k.Views) == 0 {
			k.Views = []View{{Format: FormatDefault}, {Format: FormatJWK}, {Format: FormatPubPEM}}
		}
		for j := range k.Views {
			v := &k.Views[j]
			if v.Format == "" {
				v.Format = FormatDefault
			}
			if v.File == "" {
				v.File = k.Name
				if v.Format != FormatDefault {
					v.File += "." + v.Format
				}
			}
			if v.Mode == "" {
				v.Mode = c.Mount.FileMode
			}
		}
	}
}

var tcpAddrRE = regexp.MustCompile(`^tcp:[A-Za-z0-9.:\[\]-]+:[0-9]{1,5}$`)

var fileNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$`)

// versionRE matches a key version: Key Vault's are 32 hex digits.
var versionRE = regexp.MustCompile(`^[A-Za-z0-9]{1,64}$`)

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalid, field, fmt.Sprintf(format, args...))
}

func (c *Config) validate() error {
	a := c.Attestation
	if a.SGX != nil {
		if a.Provider != ProviderSGX && a.Provider != ProviderAuto {
			return invalid("attestation.sgx", "only allowed with provider: sgx or auto")
		}
		switch a.SGX.Enc {
		case "", "RSA_AES_KEY_WRAP_256", "CKM_RSA_AES_KEY_WRAP", "RSA_AES_KEY_WRAP_384":
		default:
			return invalid("attestation.sgx.enc", "%q is not one of CKM_RSA_AES_KEY_WRAP, RSA_AES_KEY_WRAP_256, RSA_AES_KEY_WRAP_384", a.SGX.Enc)
		}
	}
	switch a.Provider {
	case ProviderSGX:
		if a.Fake != nil || a.CVM != nil {
			return invalid("attestation.provider", "sgx takes no fake or cvm block")
		}
	case ProviderAuto, ProviderSNP, ProviderAzureCVM:
		if a.Fake != nil {
			return invalid("attestation.fake", "only allowed with provider: fake")
		}
		if a.CVM != nil {
			if a.Provider == ProviderSNP {
				return invalid("attestation.cvm", "only allowed with provider: azure-cvm or auto")
			}
			if t := a.CVM.TPM; t != "" && !strings.HasPrefix(t, "/") && !tcpAddrRE.MatchString(t) {
				return invalid("attestation.cvm.tpm", "%q is neither a device path nor tcp:HOST:PORT", t)
			}
			switch a.CVM.Enc {
			case "", "RSA_AES_KEY_WRAP_256", "CKM_RSA_AES_KEY_WRAP", "RSA_AES_KEY_WRAP_384":
			default:
				return invalid("attestation.cvm.enc", "%q is not one of RSA_AES_KEY_WRAP_256, CKM_RSA_AES_KEY_WRAP, RSA_AES_KEY_WRAP_384", a.CVM.Enc)
			}
		}
	case ProviderFake:
		if a.Fake == nil {
			return invalid("attestation.fake", "required with provider: fake")
		}
		if a.CVM != nil {
			return invalid("attestation.cvm", "only allowed with provider: azure-cvm or auto")
		}
		if err := checkHex("attestation.fake.measurement", a.Fake.Measurement, 48, true); err != nil {
			return err
		}
		if a.Fake.HostData != "" && a.Fake.HostDataPolicy != "" {
			return invalid("attestation.fake.host_data", "set host_data or host_data_policy, not both")
		}
		if err := checkHex("attestation.fake.host_data", a.Fake.HostData, 32, true); err != nil {
			return err
		}
	default:
		return invalid("attestation.provider", "%q is not one of auto, snp, azure-cvm, sgx, fake", a.Provider)
	}
	// The MAA URL is https whenever it is set (skrfs serve and attest use
	// it without keys), and required when keys are configured.
	if err := checkHTTPS("attestation.maa", a.MAA, len(c.Keys) > 0); err != nil {
		return err
	}
	switch c.Identity.Kind {
	case IdentityDefault, IdentityManaged, IdentityWorkload:
	case IdentityToken:
		if c.Identity.TokenFile == "" {
			return invalid("identity.token_file", "required with kind: token")
		}
	default:
		return invalid("identity.kind", "%q is not one of default, managed, workload, token", c.Identity.Kind)
	}
	if err := checkHTTPS("identity.authority_host", c.Identity.AuthorityHost, false); err != nil {
		return err
	}
	if c.Identity.IMDSEndpoint != "" {
		if u, err := url.Parse(c.Identity.IMDSEndpoint); err != nil || u.Host == "" {
			return invalid("identity.imds_endpoint", "%q is not a URL", c.Identity.IMDSEndpoint)
		}
	}
	files := map[string]string{}
	names := map[string]bool{}
	for i, k := range c.Keys {
		f := fmt.Sprintf("keys[%d]", i)
		if !fileNameRE.MatchString(k.Name) {
			return invalid(f+".name", "%q must be a file name (letters, digits, '.', '_', '-')", k.Name)
		}
		if names[k.Name] {
			return invalid(f+".name", "%q is used twice", k.Name)
		}
		names[k.Name] = true
		ref, err := keyrelease.ParseKeyRef(k.Ref)
		if err != nil {
			return invalid(f+".ref", "%v", err)
		}
		if len(k.Versions) > 0 && ref.Version != "" {
			return invalid(f+".versions", "the ref already pins version %s; list versions only for a ref without one", ref.Version)
		}
		for j, v := range k.Versions {
			if !versionRE.MatchString(v) {
				return invalid(fmt.Sprintf("%s.versions[%d]", f, j), "%q is not a Key Vault key version (letters and digits)", v)
			}
		}
		for j, v := range k.Views {
			vf := fmt.Sprintf("%s.views[%d]", f, j)
			switch v.Format {
			case FormatDefault, FormatJWK, FormatPubPEM:
			default:
				return invalid(vf+".format", "%q is not one of default, jwk, pub.pem", v.Format)
			}
			if !fileNameRE.MatchString(v.File) {
				return invalid(vf+".file", "%q must be a file name", v.File)
			}
			if prev, ok := files[v.File]; ok {
				return invalid(vf+".file", "%q is also %s", v.File, prev)
			}
			files[v.File] = vf
			if _, err := ParseMode(v.Mode); err != nil {
				return invalid(vf+".mode", "%v", err)
			}
		}
	}
	if len(c.Keys) == 0 && len(c.Datasets) > 0 {
		return invalid("keys", "datasets need at least one key")
	}
	dsNames := map[string]bool{"keys": true}
	for i, d := range c.Datasets {
		f := fmt.Sprintf("datasets[%d]", i)
		if !fileNameRE.MatchString(d.Name) {
			return invalid(f+".name", "%q must be a file name", d.Name)
		}
		if dsNames[d.Name] {
			return invalid(f+".name", "%q is used twice (or is the reserved name keys)", d.Name)
		}
		dsNames[d.Name] = true
		if (d.Local == "") == (d.Azure == "") {
			return invalid(f, "set exactly one of local and azure")
		}
		if d.Azure != "" {
			if u, err := url.Parse(d.Azure); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				return invalid(f+".azure", "%q is not a container URL", d.Azure)
			}
		}
		for j, kn := range d.Keys {
			if !names[kn] {
				return invalid(fmt.Sprintf("%s.keys[%d]", f, j), "%q is not the name of a configured key", kn)
			}
		}
		if err := d.validateManifest(f); err != nil {
			return err
		}
		if err := d.validateWrite(f, names); err != nil {
			return err
		}
	}
	if c.Write.StagingBytes < 1<<20 {
		return invalid("write.staging_bytes", "%d is less than 1 MiB (1048576)", c.Write.StagingBytes)
	}
	if sd := c.Write.SpillDir; sd != "" && !filepath.IsAbs(sd) {
		return invalid("write.spill_dir", "%q is not an absolute path", sd)
	}
	for _, m := range []struct{ field, v string }{{"mount.file_mode", c.Mount.FileMode}, {"mount.dir_mode", c.Mount.DirMode}} {
		if _, err := ParseMode(m.v); err != nil {
			return invalid(m.field, "%v", err)
		}
	}
	if c.Cache.TTL < Duration(time.Second) {
		return invalid("cache.ttl", "%v is shorter than 1s", time.Duration(c.Cache.TTL))
	}
	if c.Cache.MaxStale < 0 {
		return invalid("cache.max_stale", "negative")
	}
	for _, l := range []struct{ field, addr string }{{"serve.listen", c.Serve.Listen}, {"metrics.listen", c.Metrics.Listen}} {
		if l.addr == "" {
			continue
		}
		if err := CheckListen(l.addr, c.Serve.AllowRemote); err != nil {
			return invalid(l.field, "%v", err)
		}
	}
	return c.Delivery.validate()
}

// CheckListen checks a listen address: host:port, and a loopback host
// (localhost, 127.0.0.0/8, ::1) unless remote is allowed.
func CheckListen(addr string, allowRemote bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("%q: bad port", addr)
	}
	if allowRemote {
		return nil
	}
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		return nil
	}
	return fmt.Errorf("%q is not a loopback address: the API would release keys to the network (set serve.allow_remote to allow it)", addr)
}

// ParseMode parses an octal permission string such as "0400".
func ParseMode(s string) (os.FileMode, error) {
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil || v > 0o777 {
		return 0, fmt.Errorf("%q is not an octal permission such as 0400", s)
	}
	return os.FileMode(v), nil
}

func checkHex(field, s string, n int, optional bool) error {
	if s == "" && optional {
		return nil
	}
	if len(s) != 2*n || strings.Trim(strings.ToLower(s), "0123456789abcdef") != "" {
		return invalid(field, "want %d hex digits", 2*n)
	}
	return nil
}

func checkHTTPS(field, s string, required bool) error {
	if s == "" {
		if required {
			return invalid(field, "required")
		}
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return invalid(field, "%q is not an https URL", s)
	}
	return nil
}

var datasetIDRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

func (d *Dataset) validateManifest(f string) error {
	switch d.Manifest {
	case ManifestRequire, ManifestPrefer:
		if len(d.Signers) == 0 {
			return invalid(f+".manifest", "%s needs signers (the pinned public keys of the dataset's producers)", d.Manifest)
		}
	case ManifestOff:
		if d.ID != "" || d.MinEpoch != 0 || d.MaxAge != 0 || d.Anchor != "" {
			return invalid(f+".manifest", "off, yet id, min_epoch, max_age or anchor is set: they need manifest: require or prefer")
		}
	default:
		return invalid(f+".manifest", "%q is not require, prefer or off", d.Manifest)
	}
	for j, s := range d.Signers {
		if s == "" {
			return invalid(fmt.Sprintf("%s.signers[%d]", f, j), "empty")
		}
		if strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://") {
			if err := checkKeyVaultURL(s, "keys"); err != nil {
				return invalid(fmt.Sprintf("%s.signers[%d]", f, j), "%v", err)
			}
		}
	}
	if d.ID != "" && !datasetIDRE.MatchString(d.ID) {
		return invalid(f+".id", "%q: 1-128 of A-Z a-z 0-9 . _ -", d.ID)
	}
	if d.MaxAge < 0 {
		return invalid(f+".max_age", "negative")
	}
	if d.ManifestRefresh < Duration(time.Second) {
		return invalid(f+".manifest_refresh", "%v is shorter than 1s", time.Duration(d.ManifestRefresh))
	}
	if d.Anchor != "" {
		if err := checkKeyVaultURL(d.Anchor, "secrets"); err != nil {
			return invalid(f+".anchor", "%v", err)
		}
	}
	return nil
}

// validateWrite checks writable and write_key.
func (d *Dataset) validateWrite(f string, names map[string]bool) error {
	if d.WriteKey == "" {
		if d.Writable {
			return invalid(f+".write_key", "required when writable is true: name the key (one of the dataset's keys) that seals what the mount writes")
		}
		return d.validateSignKey(f)
	}
	if !d.Writable {
		return invalid(f+".write_key", "set, but writable is not true")
	}
	if !names[d.WriteKey] {
		return invalid(f+".write_key", "%q is not the name of a configured key", d.WriteKey)
	}
	if len(d.Keys) > 0 && !slices.Contains(d.Keys, d.WriteKey) {
		return invalid(f+".write_key", "%q is not one of the dataset's keys %v", d.WriteKey, d.Keys)
	}
	return d.validateSignKey(f)
}

// validateSignKey checks sign_key: a writable dataset with a manifest.
func (d *Dataset) validateSignKey(f string) error {
	if d.SignKey == "" {
		return nil
	}
	if !d.Writable {
		return invalid(f+".sign_key", "set, but writable is not true (only writes publish manifests)")
	}
	if d.Manifest != ManifestRequire && d.Manifest != ManifestPrefer {
		return invalid(f+".sign_key", "set, but the dataset has no manifest (manifest: require or prefer, with signers)")
	}
	if strings.HasPrefix(d.SignKey, "http://") || strings.HasPrefix(d.SignKey, "https://") {
		if err := checkKeyVaultURL(d.SignKey, "keys"); err != nil {
			return invalid(f+".sign_key", "%v", err)
		}
	}
	return nil
}

// checkKeyVaultURL checks https://<vault>/<kind>/<name>[/<version>].
func checkKeyVaultURL(s, kind string) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q is not an https Key Vault URL", s)
	}
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] != kind || parts[1] == "" {
		return fmt.Errorf("%q is not https://<vault>/%s/<name>[/<version>]", s, kind)
	}
	return nil
}
