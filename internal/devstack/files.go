package devstack

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"text/template"
)

// ConfigFile and EnvFile are the files written for clients.
const (
	ConfigFile = "skrfs.yaml"
	EnvFile    = "devstack.env"
)

var configTmpl = template.Must(template.New("cfg").Parse(`# skrfs configuration for the devstack's seeded world (written by skrfs devstack).
# Mount it with:  skrfs mount --config {{.Dir}}/skrfs.yaml MOUNTPOINT
attestation:
  # The devstack's FAKE SEV-SNP device: development only, never auto-detected.
  provider: fake
  maa: {{.MAA}}
  # An ACI-style security context: the fake TEE's UVM endorsement, CCE policy
  # and AMD certificates, as ACI mounts them into confidential containers.
  security_context_dir: {{.Dir}}/security-context
  fake:
    measurement: "{{.Measurement}}"
    host_data: "{{.HostData}}"   # SHA-256 of {{.Dir}}/cce-policy.rego
identity:
  kind: managed
  client_id: {{.ClientID}}
  imds_endpoint: {{.IMDS}}
tls:
  ca_files: [{{.Dir}}/ca.pem]           # the services' TLS certificates
  release_ca_files: [{{.Dir}}/ca.pem]   # the vault's release-signing certificate
keys:
  - name: demo-rsa
    ref: {{.Vault}}/keys/demo-rsa
  - name: demo-oct
    ref: {{.Vault}}/keys/demo-oct
  - name: denied        # its policy wants another HOST_DATA: reading it gives EACCES
    ref: {{.Vault}}/keys/denied
datasets:
  - name: data
    local: {{.Dir}}/store/data
    keys: [demo-rsa, demo-oct]
`))

var envTmpl = template.Must(template.New("env").Parse(`# skrfs devstack environment: . {{.Dir}}/devstack.env
export SKRFS_DEVSTACK_DIR='{{.Dir}}'
export SKRFS_CONFIG='{{.Dir}}/skrfs.yaml'
export SKRFS_MAA_URL='{{.MAA}}'
export SKRFS_VAULT_URL='{{.Vault}}'
export SKRFS_CA_FILE='{{.Dir}}/ca.pem'
# Go programs (azidentity, azkeys) trust the system roots plus the devstack CA:
export SSL_CERT_FILE='{{.Dir}}/ca-bundle.pem'
# azidentity's managed identity, App Service style (works with DefaultAzureCredential):
export IDENTITY_ENDPOINT='{{.IMDS}}/msi/token'
export IDENTITY_HEADER='{{.Secret}}'
export AZURE_CLIENT_ID='{{.ClientID}}'
export AZURE_TENANT_ID='{{.Tenant}}'
# Workload identity (AKS style) instead: unset IDENTITY_ENDPOINT and export
#   AZURE_FEDERATED_TOKEN_FILE='{{.Dir}}/federated-token' AZURE_AUTHORITY_HOST='{{.Entra}}/'
{{if .Storage}}export AZURE_STORAGE_CONNECTION_STRING='{{.Storage}}'
{{end}}`))

func (s *Stack) writeClientFiles() error {
	data := map[string]string{"Dir": s.Dir, "MAA": s.MAAURL, "Vault": s.VaultURL, "IMDS": s.IMDSURL, "Entra": s.EntraURL,
		"Measurement": hex.EncodeToString(s.TEE.Measurement[:]), "HostData": hex.EncodeToString(s.TEE.HostData[:]),
		"ClientID": ClientID, "Tenant": TenantID, "Secret": s.secret, "Storage": s.opts.AzuriteConnectionString}
	for name, t := range map[string]*template.Template{ConfigFile: configTmpl, EnvFile: envTmpl} {
		var b bytes.Buffer
		if err := t.Execute(&b, data); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(s.Dir, name), b.Bytes(), 0o600); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(s.Dir, "cce-policy.rego"), []byte(CCEPolicy), 0o644); err != nil {
		return err
	}
	sc := filepath.Join(s.Dir, "security-context")
	if err := os.MkdirAll(sc, 0o755); err != nil {
		return err
	}
	b64 := base64.StdEncoding.EncodeToString
	for name, content := range map[string][]byte{"reference-info-base64": s.Endorsement,
		"security-policy-base64": []byte(CCEPolicy), "host-amd-cert-base64": s.Device.THIM()} {
		if err := os.WriteFile(filepath.Join(sc, name), []byte(b64(content)), 0o644); err != nil {
			return err
		}
	}
	ca, err := os.ReadFile(s.CAFile)
	if err != nil {
		return err
	}
	system, _ := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	return os.WriteFile(filepath.Join(s.Dir, "ca-bundle.pem"), append(append(system, '\n'), ca...), 0o644)
}
