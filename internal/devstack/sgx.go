package devstack

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/skrfs/skrfs/internal/devstack/fakesgx"
)

// The fake SGX enclave's identity (TEE sgx).
var (
	SGXMRSigner  = sha256.Sum256([]byte("skrfs devstack FAKE SGX enclave signer"))
	SGXMREnclave = sha256.Sum256([]byte("skrfs devstack FAKE SGX enclave (skrfs + app under Gramine)"))
)

// SGX product id and SVN of the fake enclave.
const (
	SGXProductID = 1
	SGXSVN       = 2
)

// SGX attestation directories under DIR/sgx/dev: the release enclave and
// a debug build of the same enclave (same MRENCLAVE and MRSIGNER, DEBUG
// attribute set), which release policies must refuse.
const (
	SGXEnclaveDir      = "attestation"
	SGXDebugEnclaveDir = "attestation-debug"
)

// SGXEnclave returns the fake enclave's identity.
func SGXEnclave(debug bool) fakesgx.Enclave {
	return fakesgx.Enclave{MREnclave: SGXMREnclave, MRSigner: SGXMRSigner, ProductID: SGXProductID, SVN: SGXSVN, Debug: debug}
}

// startSGX creates the fake SGX platform and serves its Gramine
// /dev/attestation stand-ins over FUSE at DIR/sgx/dev.
func (s *Stack) startSGX() error {
	p, err := fakesgx.NewPlatform()
	if err != nil {
		return err
	}
	d, err := fakesgx.MountDev(filepath.Join(s.Dir, "sgx", "dev"), p, map[string]fakesgx.Enclave{
		SGXEnclaveDir: SGXEnclave(false), SGXDebugEnclaveDir: SGXEnclave(true)})
	if err != nil {
		return err
	}
	s.SGX, s.SGXDev = p, d
	return nil
}

// SGXAttestationDir is the /dev/attestation stand-in of the fake enclave
// (debug: of its debug build).
func (s *Stack) SGXAttestationDir(debug bool) string {
	if debug {
		return s.SGXDev.Path(SGXDebugEnclaveDir)
	}
	return s.SGXDev.Path(SGXEnclaveDir)
}

// SGXPolicy is the release policy for SGX enclaves of protocol.md section
// 14, the one `skrfs key create --sgx-*` writes: MRSIGNER, MRENCLAVE,
// product id, at least SVN minSVN, never debuggable.
func (s *Stack) SGXPolicy(mrsigner string, minSVN int) []byte {
	return []byte(`{"version":"1.0.0","anyOf":[{"authority":"` + s.MAAURL + `","allOf":[` +
		`{"claim":"x-ms-attestation-type","equals":"sgx"},` +
		`{"claim":"x-ms-sgx-mrsigner","equals":"` + mrsigner + `"},` +
		`{"claim":"x-ms-sgx-mrenclave","equals":"` + hex.EncodeToString(SGXMREnclave[:]) + `"},` +
		fmt.Sprintf(`{"claim":"x-ms-sgx-product-id","equals":"%d"},`, SGXProductID) +
		fmt.Sprintf(`{"claim":"x-ms-sgx-svn","greater":%d},`, minSVN-1) +
		`{"claim":"x-ms-sgx-is-debuggable","equals":"false"}]}]}`)
}

// writeSGXConfig rewrites skrfs.yaml's attestation block for the fake
// SGX enclave, and writes skrfs-debug.yaml, the same configuration
// attesting as the debug build.
func (s *Stack) writeSGXConfig() error {
	p := filepath.Join(s.Dir, ConfigFile)
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	start := bytes.Index(b, []byte("attestation:\n"))
	end := bytes.Index(b, []byte("\nidentity:\n"))
	if start < 0 || end < start {
		return fmt.Errorf("devstack: %s has no attestation block", p)
	}
	block := func(debug bool) []byte {
		what := "the release build"
		if debug {
			what = "its DEBUG build (release policies refuse it)"
		}
		return fmt.Appendf(nil, `attestation:
  # The devstack's FAKE Intel SGX enclave, %s: Gramine's /dev/attestation
  # files served over FUSE, quotes signed under a fake PCK chain that only
  # the devstack's MAA trusts. The provider is the real sgx one. Plaintext
  # goes through skrfs fetch / skrfs run --no-fuse, never a FUSE mount, in SGX.
  provider: sgx
  maa: %s
  sgx:
    dir: %s
`, what, s.MAAURL, s.SGXAttestationDir(debug))
	}
	rest := b[end+1:]
	out := append(append(bytes.Clone(b[:start]), block(false)...), rest...)
	out = bytes.Replace(out, []byte("# its policy wants another HOST_DATA"), []byte("# its policy wants another MRSIGNER"), 1)
	if err := os.WriteFile(p, out, 0o600); err != nil {
		return err
	}
	dbg := append(append(bytes.Clone(b[:start]), block(true)...), rest...)
	return os.WriteFile(filepath.Join(s.Dir, DebugConfigFile), dbg, 0o600)
}

// DebugConfigFile is the TEE sgx configuration attesting as the debug
// enclave.
const DebugConfigFile = "skrfs-debug.yaml"

func sgxMRSignerHex() string { return strings.ToLower(hex.EncodeToString(SGXMRSigner[:])) }
