package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const valid = `
attestation:
  provider: fake
  maa: https://127.0.0.1:8443
  fake:
    measurement: "` + "aa" + `"
keys:
  - name: demo-rsa
    ref: https://127.0.0.1:8444/keys/demo-rsa
  - name: demo-oct
    ref: https://127.0.0.1:8444/keys/demo-oct
    views:
      - {format: default, file: data.key, mode: "0440"}
datasets:
  - name: data
    local: store/data
    keys: [demo-rsa, demo-oct]
cache:
  ttl: 30m
serve:
  listen: 127.0.0.1:8080
metrics:
  listen: "[::1]:9090"
`

func validYAML() string {
	return strings.Replace(valid, `"aa"`, `"`+strings.Repeat("ab", 48)+`"`, 1)
}

func TestParseValid(t *testing.T) {
	c, err := Parse([]byte(validYAML()))
	if err != nil {
		t.Fatal(err)
	}
	if time.Duration(c.Cache.TTL) != 30*time.Minute || c.Identity.Kind != IdentityDefault || c.Mount.FileMode != "0400" {
		t.Fatalf("defaults: %+v", c)
	}
	k, _ := c.KeyByName("demo-rsa")
	if len(k.Views) != 3 || k.Views[1].File != "demo-rsa.jwk" || k.Views[2].File != "demo-rsa.pub.pem" || k.Views[0].Mode != "0400" {
		t.Fatalf("default views: %+v", k.Views)
	}
	if o, _ := c.KeyByName("demo-oct"); len(o.Views) != 1 || o.Views[0].File != "data.key" {
		t.Fatalf("explicit views: %+v", o.Views)
	}
	// A remote address is accepted only when asked for.
	r, err := Parse([]byte(strings.Replace(validYAML(), "listen: 127.0.0.1:8080", "listen: 0.0.0.0:8080\n  allow_remote: true", 1)))
	if err != nil || !r.Serve.AllowRemote || r.Serve.Listen != "0.0.0.0:8080" {
		t.Fatalf("serve.allow_remote: %v %+v", err, r)
	}
}

func TestParseErrors(t *testing.T) {
	base := validYAML()
	tests := []struct {
		name, from, to, wantErr string
	}{
		{"unknown field", "cache:", "cahce:", "field cahce not found"},
		{"bad provider", "provider: fake", "provider: tpm", "attestation.provider: \"tpm\" is not one of"},
		{"fake without fake block", "provider: fake", "provider: auto", "attestation.fake: only allowed with provider: fake"},
		{"short measurement", strings.Repeat("ab", 48), "abcd", "attestation.fake.measurement: want 96 hex digits"},
		{"http maa", "maa: https://", "maa: http://", "attestation.maa: \"http://127.0.0.1:8443\" is not an https URL"},
		{"bad key ref", "ref: https://127.0.0.1:8444/keys/demo-rsa", "ref: https://v/secrets/x", "keys[0].ref:"},
		{"duplicate key", "name: demo-oct", "name: demo-rsa", "keys[1].name: \"demo-rsa\" is used twice"},
		{"bad key name", "name: demo-rsa", "name: ../x", "keys[0].name"},
		{"view clash", "file: data.key", "file: demo-rsa.jwk", "keys[1].views[0].file: \"demo-rsa.jwk\" is also keys[0].views[1]"},
		{"bad view format", "format: default, file", "format: der, file", "keys[1].views[0].format"},
		{"bad mode", `mode: "0440"`, `mode: "rw"`, "keys[1].views[0].mode"},
		{"dataset named keys", "name: data", "name: keys", "datasets[0].name"},
		{"dataset without store", "local: store/data", "suffix: .x", "datasets[0]: set exactly one of local and azure"},
		{"dataset unknown key", "keys: [demo-rsa, demo-oct]", "keys: [demo-rsa, nope]", "datasets[0].keys[1]: \"nope\" is not the name"},
		{"bad ttl", "ttl: 30m", "ttl: soon", "is not a duration"},
		{"tiny ttl", "ttl: 30m", "ttl: 1ms", "cache.ttl"},
		{"serve on the network", "listen: 127.0.0.1:8080", "listen: 0.0.0.0:8080", "serve.listen: \"0.0.0.0:8080\" is not a loopback address"},
		{"serve without port", "listen: 127.0.0.1:8080", "listen: localhost", "serve.listen: \"localhost\" is not host:port"},
		{"metrics on the network", `listen: "[::1]:9090"`, "listen: 10.0.0.1:9090", "metrics.listen: \"10.0.0.1:9090\" is not a loopback"},
		{"metrics bad port", `listen: "[::1]:9090"`, `listen: "[::1]:99999"`, "metrics.listen: \"[::1]:99999\": bad port"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := strings.Replace(base, tc.from, tc.to, 1)
			if in == base {
				t.Fatalf("replacement %q not found", tc.from)
			}
			_, err := Parse([]byte(in))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse = %v, want ErrInvalid containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestKeyVersions(t *testing.T) {
	const v1, v2 = "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"
	withVersions := strings.Replace(validYAML(), "ref: https://127.0.0.1:8444/keys/demo-oct\n",
		"ref: https://127.0.0.1:8444/keys/demo-oct\n    versions: ["+v1+", "+v2+"]\n", 1)
	c, err := Parse([]byte(withVersions))
	if err != nil {
		t.Fatal(err)
	}
	if k, _ := c.KeyByName("demo-oct"); len(k.Versions) != 2 || k.Versions[1] != v2 {
		t.Fatalf("versions: %+v", k)
	}
	for _, tc := range []struct{ from, to, want string }{
		{v2, "not/a/version", `keys[1].versions[1]: "not/a/version" is not a Key Vault key version`},
		{"keys/demo-oct\n", "keys/demo-oct/" + v1 + "\n", "keys[1].versions: the ref already pins version"},
	} {
		_, err := Parse([]byte(strings.Replace(withVersions, tc.from, tc.to, 1)))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse = %v, want ErrInvalid containing %q", err, tc.want)
		}
	}
}

// TestSGXAttestation: the sgx provider and its options.
func TestSGXAttestation(t *testing.T) {
	sgxYAML := func(provider, block string) string {
		s := strings.Replace(validYAML(), "provider: fake", "provider: "+provider, 1)
		i := strings.Index(s, "  fake:")
		j := strings.Index(s, "\nkeys:")
		if i < 0 || j < i {
			t.Fatalf("fixture changed: %s", s)
		}
		return s[:i] + block + s[j+1:]
	}
	c, err := Parse([]byte(sgxYAML("sgx", "  sgx:\n    dir: /tmp/fake/attestation\n    enc: RSA_AES_KEY_WRAP_256\n")))
	if err != nil {
		t.Fatal(err)
	}
	if c.Attestation.Provider != ProviderSGX || c.Attestation.SGX.Dir != "/tmp/fake/attestation" || c.Attestation.SGX.Enc != "RSA_AES_KEY_WRAP_256" {
		t.Fatalf("%+v", c.Attestation)
	}
	for _, ok := range []string{sgxYAML("sgx", ""), sgxYAML("auto", "  sgx:\n    dir: /dev/attestation\n")} {
		if _, err := Parse([]byte(ok)); err != nil {
			t.Errorf("%v\n%s", err, ok)
		}
	}
	for _, tc := range []struct{ yaml, want string }{
		{sgxYAML("sgx", "  sgx:\n    enc: A256KW\n"), "attestation.sgx.enc"},
		{sgxYAML("snp", "  sgx:\n    dir: /dev/attestation\n"), "attestation.sgx"},
		{sgxYAML("azure-cvm", "  sgx:\n    dir: /dev/attestation\n"), "attestation.sgx"},
		{sgxYAML("sgx", "  cvm:\n    tpm: /dev/tpmrm0\n"), "attestation.provider"},
		{strings.Replace(validYAML(), "  fake:", "  sgx:\n    dir: /x\n  fake:", 1), "attestation.sgx"},
	} {
		if _, err := Parse([]byte(tc.yaml)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want an error naming %s, got %v\n%s", tc.want, err, tc.yaml)
		}
	}
}

func TestDeliveryConfig(t *testing.T) {
	for _, tc := range []struct {
		yaml    string
		max     int64
		wantErr string
	}{
		{"", DefaultDeliveryMaxSize, ""},
		{"delivery: {max_size: 512MiB, enclave_dir: /secrets}", 512 << 20, ""},
		{"delivery: {max_size: '2G'}", 2 << 30, ""},
		{"delivery: {max_size: '1000'}", 1000, ""},
		{"delivery: {max_size: lots}", 0, "delivery.max_size"},
		{"delivery: {max_size: '0'}", 0, "delivery.max_size"},
		{"delivery: {enclave_dir: secrets}", 0, "delivery.enclave_dir"},
		{"delivery: {dir: /dev/shm/x, bogus: 1}", 0, "bogus"},
	} {
		c, err := Parse([]byte(validYAML() + "\n" + tc.yaml + "\n"))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: err = %v, want %q", tc.yaml, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.yaml, err)
		} else if c.Delivery.MaxBytes() != tc.max {
			t.Errorf("%s: max %d, want %d", tc.yaml, c.Delivery.MaxBytes(), tc.max)
		}
	}
}

// TestMAAAlwaysHTTPS: attestation.maa must be https whenever it is set,
// also without keys (skrfs serve and skrfs attest use it then); it is
// required only with keys.
func TestMAAAlwaysHTTPS(t *testing.T) {
	for _, tc := range []struct {
		yaml    string
		wantErr string
	}{
		{"attestation:\n  maa: http://sharedeus.eus.attest.azure.net\n", `attestation.maa: "http://sharedeus.eus.attest.azure.net" is not an https URL`},
		{"attestation:\n  maa: sharedeus.eus.attest.azure.net\n", "is not an https URL"},
		{"attestation:\n  maa: https://\n", "is not an https URL"},
		{"attestation:\n  maa: https://sharedeus.eus.attest.azure.net\n", ""},
		{"serve:\n  any_key: true\n", ""},
	} {
		_, err := Parse([]byte(tc.yaml))
		if (tc.wantErr == "") != (err == nil) || (err != nil && (!strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrInvalid))) {
			t.Errorf("%q: %v, want %q", tc.yaml, err, tc.wantErr)
		}
	}
}

// TestSidecarAndReleaseTrustKeys: serve.attest, serve.combined_report and
// tls.release_ca_files parse (off and empty by default).
func TestSidecarAndReleaseTrustKeys(t *testing.T) {
	c, err := Parse([]byte(validYAML()))
	if err != nil || c.Serve.Attest || c.Serve.CombinedReport || len(c.TLS.ReleaseCAFiles) != 0 {
		t.Fatalf("defaults: %v %+v %+v", err, c.Serve, c.TLS)
	}
	in := strings.Replace(validYAML(), "serve:\n", "serve:\n  attest: true\n  combined_report: true\n", 1) +
		"tls:\n  ca_files: [proxy.pem]\n  release_ca_files: [vault-ca.pem]\n"
	if c, err = Parse([]byte(in)); err != nil {
		t.Fatal(err)
	}
	if !c.Serve.Attest || !c.Serve.CombinedReport || c.Serve.AnyKey || len(c.TLS.CAFiles) != 1 || c.TLS.ReleaseCAFiles[0] != "vault-ca.pem" {
		t.Fatalf("parsed %+v %+v", c.Serve, c.TLS)
	}
}

func TestDatasetManifest(t *testing.T) {
	ds := "    keys: [demo-rsa, demo-oct]\n"
	parse := func(extra string) (*Config, error) {
		return Parse([]byte(strings.Replace(validYAML(), ds, ds+extra, 1)))
	}
	c, err := parse("")
	if err != nil || c.Datasets[0].Manifest != ManifestOff {
		t.Fatalf("no signers: manifest %q, %v (want off)", c.Datasets[0].Manifest, err)
	}
	c, err = parse("    signers: [producer.pub.pem, https://v.vault.azure.net/keys/signer]\n    id: ds-1\n    min_epoch: 4\n    max_age: 48h\n    anchor: https://v.vault.azure.net/secrets/ds-1-epoch\n")
	if err != nil {
		t.Fatal(err)
	}
	d := c.Datasets[0]
	if d.Manifest != ManifestRequire || d.ID != "ds-1" || d.MinEpoch != 4 || time.Duration(d.MaxAge) != 48*time.Hour ||
		time.Duration(d.ManifestRefresh) != time.Minute || len(d.Signers) != 2 {
		t.Fatalf("signers: %+v (manifest defaults to require)", d)
	}
	if c, err := parse("    signers: [a.pem]\n    manifest: prefer\n"); err != nil || c.Datasets[0].Manifest != ManifestPrefer {
		t.Fatalf("prefer: %v", err)
	}
	for _, tc := range []struct{ extra, want string }{
		{"    manifest: require\n", "datasets[0].manifest: require needs signers"},
		{"    manifest: sometimes\n    signers: [a.pem]\n", `"sometimes" is not require, prefer or off`},
		{"    min_epoch: 3\n", "datasets[0].manifest: off, yet"},
		{"    signers: [a.pem]\n    id: \"bad id\"\n", "datasets[0].id"},
		{"    signers: [https://v.vault.azure.net/secrets/x]\n", "datasets[0].signers[0]"},
		{"    signers: [a.pem]\n    anchor: https://v.vault.azure.net/keys/x\n", "datasets[0].anchor"},
		{"    signers: [a.pem]\n    anchor: http://v.vault.azure.net/secrets/x\n", "datasets[0].anchor"},
		{"    signers: [a.pem]\n    manifest_refresh: 10ms\n", "datasets[0].manifest_refresh"},
	} {
		if _, err := parse(tc.extra); err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: %v, want %q", tc.extra, err, tc.want)
		}
	}
}

// TestCVMAttestation: the azure-cvm provider and its options.
func TestCVMAttestation(t *testing.T) {
	cvmYAML := func(block string) string {
		s := strings.Replace(validYAML(), "provider: fake", "provider: azure-cvm", 1)
		i := strings.Index(s, "  fake:")
		j := strings.Index(s, "\nkeys:") // the fake block ends at keys:
		if i < 0 || j < i {
			t.Fatalf("fixture changed: %s", s)
		}
		return s[:i] + block + s[j+1:]
	}
	c, err := Parse([]byte(cvmYAML("  cvm:\n    tpm: tcp:127.0.0.1:2321\n    event_log: /tmp/log\n    enc: CKM_RSA_AES_KEY_WRAP\n")))
	if err != nil {
		t.Fatal(err)
	}
	if c.Attestation.Provider != ProviderAzureCVM || c.Attestation.CVM.TPM != "tcp:127.0.0.1:2321" || c.Attestation.CVM.Enc != "CKM_RSA_AES_KEY_WRAP" {
		t.Fatalf("%+v", c.Attestation)
	}
	if _, err := Parse([]byte(cvmYAML(""))); err != nil {
		t.Fatalf("azure-cvm with defaults: %v", err)
	}
	for _, tc := range []struct{ block, want string }{
		{"  cvm:\n    tpm: tpm0\n", "attestation.cvm.tpm"},
		{"  cvm:\n    tpm: tcp:host\n", "attestation.cvm.tpm"},
		{"  cvm:\n    enc: A256KW\n", "attestation.cvm.enc"},
	} {
		if _, err := Parse([]byte(cvmYAML(tc.block))); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v", tc.block, err)
		}
	}
	// A cvm block with the fake SEV-SNP device is a mistake.
	s := strings.Replace(validYAML(), "  fake:", "  cvm:\n    tpm: /dev/tpmrm0\n  fake:", 1)
	if _, err := Parse([]byte(s)); err == nil || !strings.Contains(err.Error(), "attestation.cvm") {
		t.Fatalf("cvm with fake: %v", err)
	}
}

// TestDatasetWritable: writable, write_key and the write block.
func TestDatasetWritable(t *testing.T) {
	ds := "    keys: [demo-rsa, demo-oct]\n"
	parse := func(extra, top string) (*Config, error) {
		return Parse([]byte(strings.Replace(validYAML(), ds, ds+extra, 1) + top))
	}
	c, err := parse("", "")
	if err != nil || c.Datasets[0].Writable || c.Write.StagingBytes != DefaultStagingBytes || c.Write.SpillDir != "" {
		t.Fatalf("defaults: %v %+v %+v", err, c.Datasets[0], c.Write)
	}
	c, err = parse("    writable: true\n    write_key: demo-rsa\n", "write:\n  staging_bytes: 16777216\n  spill_dir: /var/tmp\n")
	if err != nil || !c.Datasets[0].Writable || c.Datasets[0].WriteKey != "demo-rsa" || c.Write.StagingBytes != 16<<20 || c.Write.SpillDir != "/var/tmp" {
		t.Fatalf("writable: %v %+v %+v", err, c.Datasets[0], c.Write)
	}
	for _, tc := range []struct{ extra, top, want string }{
		{"    writable: true\n", "", "datasets[0].write_key: required when writable"},
		{"    write_key: demo-rsa\n", "", "datasets[0].write_key: set, but writable is not true"},
		{"    writable: true\n    write_key: nope\n", "", `datasets[0].write_key: "nope" is not the name of a configured key`},
		{"    writable: yes please\n", "", "into bool"},
		{"", "write:\n  staging_bytes: 1000\n", "write.staging_bytes: 1000 is less than 1 MiB"},
		{"", "write:\n  staging_bytes: -1\n", "write.staging_bytes"},
		{"", "write:\n  spill_dir: tmp\n", `write.spill_dir: "tmp" is not an absolute path`},
		{"", "write:\n  spill: /tmp\n", "field spill not found"},
		{"    sign_key: signer.pem\n", "", "datasets[0].sign_key: set, but writable is not true"},
		{"    writable: true\n    write_key: demo-rsa\n    sign_key: signer.pem\n", "", "datasets[0].sign_key: set, but the dataset has no manifest"},
		{"    writable: true\n    write_key: demo-rsa\n    signers: [p.pem]\n    sign_key: http://v.example/keys/s\n", "", "datasets[0].sign_key"},
	} {
		if _, err := parse(tc.extra, tc.top); err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrInvalid) {
			t.Errorf("%q %q: %v, want %q", tc.extra, tc.top, err, tc.want)
		}
	}
	c, err = parse("    writable: true\n    write_key: demo-rsa\n    signers: [p.pem]\n    sign_key: https://v.vault.azure.net/keys/signer\n", "")
	if err != nil || c.Datasets[0].SignKey != "https://v.vault.azure.net/keys/signer" {
		t.Fatalf("sign_key: %v", err)
	}
	// The write key must be one of the dataset's keys.
	one := strings.Replace(validYAML(), ds, "    keys: [demo-oct]\n    writable: true\n    write_key: demo-rsa\n", 1)
	if _, err := Parse([]byte(one)); err == nil || !strings.Contains(err.Error(), "is not one of the dataset's keys") {
		t.Errorf("write key outside the dataset's keys: %v", err)
	}
}
