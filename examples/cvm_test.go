package examples_test

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/skrfs/skrfs/internal/config"
)

// cvmARMTemplate is the part of an ARM template the CVM example uses.
type cvmARMTemplate struct {
	Schema         string                     `json:"$schema"`
	ContentVersion string                     `json:"contentVersion"`
	Parameters     map[string]json.RawMessage `json:"parameters"`
	Variables      map[string]string          `json:"variables"`
	Resources      []cvmARMResource           `json:"resources"`
	Outputs        map[string]struct {
		Type     string            `json:"type"`
		Value    string            `json:"value"`
		Metadata map[string]string `json:"metadata"`
	} `json:"outputs"`
}

type cvmARMResource struct {
	Type       string                 `json:"type"`
	APIVersion string                 `json:"apiVersion"`
	Name       string                 `json:"name"`
	Location   string                 `json:"location"`
	DependsOn  []string               `json:"dependsOn"`
	Identity   *struct{ Type string } `json:"identity"`
	SKU        json.RawMessage        `json:"sku"`
	Properties json.RawMessage        `json:"properties"`
}

// cvmVM is the confidential VM's properties, decoded strictly.
type cvmVM struct {
	HardwareProfile struct {
		VMSize string `json:"vmSize"`
	} `json:"hardwareProfile"`
	SecurityProfile struct {
		SecurityType string `json:"securityType"`
		UEFISettings struct {
			SecureBootEnabled bool `json:"secureBootEnabled"`
			VTPMEnabled       bool `json:"vTpmEnabled"`
		} `json:"uefiSettings"`
	} `json:"securityProfile"`
	StorageProfile struct {
		ImageReference struct{ Publisher, Offer, SKU, Version string } `json:"imageReference"`
		OSDisk         struct {
			CreateOption string `json:"createOption"`
			ManagedDisk  struct {
				StorageAccountType string `json:"storageAccountType"`
				SecurityProfile    struct {
					SecurityEncryptionType string `json:"securityEncryptionType"`
				} `json:"securityProfile"`
			} `json:"managedDisk"`
		} `json:"osDisk"`
	} `json:"storageProfile"`
	OSProfile      json.RawMessage `json:"osProfile"`
	NetworkProfile json.RawMessage `json:"networkProfile"`
}

type cvmVault struct {
	TenantID string `json:"tenantId"`
	SKU      struct {
		Family string `json:"family"`
		Name   string `json:"name"`
	} `json:"sku"`
	EnableRbacAuthorization bool `json:"enableRbacAuthorization"`
	EnableSoftDelete        bool `json:"enableSoftDelete"`
	EnablePurgeProtection   bool `json:"enablePurgeProtection"`
	AccessPolicies          []struct {
		TenantID    string `json:"tenantId"`
		ObjectID    string `json:"objectId"`
		Permissions struct {
			Keys []string `json:"keys"`
		} `json:"permissions"`
	} `json:"accessPolicies"`
}

func strictJSON(t *testing.T, b []byte, v any) {
	t.Helper()
	d := json.NewDecoder(strings.NewReader(string(b)))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		t.Fatalf("%T: %v", v, err)
	}
}

// TestCVMExample validates examples/cvm: the ARM template (resource types,
// apiVersions, the confidential VM's and the vault's properties, every
// parameter and variable it uses defined), skrfs.yaml, the systemd unit
// (no private mount namespace; systemd-analyze verify), and nginx reading
// a key file the configuration serves.
func TestCVMExample(t *testing.T) {
	dir := filepath.Join(examplesDir(t), "cvm")
	raw, err := os.ReadFile(filepath.Join(dir, "azuredeploy.json"))
	if err != nil {
		t.Fatal(err)
	}
	var tmpl cvmARMTemplate
	strictJSON(t, raw, &tmpl)
	if !strings.Contains(tmpl.Schema, "deploymentTemplate.json") || tmpl.ContentVersion == "" {
		t.Fatalf("schema %q", tmpl.Schema)
	}
	want := map[string]string{
		"Microsoft.Compute/virtualMachines":       "2024-07-01",
		"Microsoft.KeyVault/vaults":               "2023-07-01",
		"Microsoft.Network/networkInterfaces":     "2023-11-01",
		"Microsoft.Network/virtualNetworks":       "2023-11-01",
		"Microsoft.Network/publicIPAddresses":     "2023-11-01",
		"Microsoft.Network/networkSecurityGroups": "2023-11-01",
	}
	got := map[string]cvmARMResource{}
	for _, r := range tmpl.Resources {
		if want[r.Type] != r.APIVersion {
			t.Errorf("resource %s apiVersion %s, want %s", r.Type, r.APIVersion, want[r.Type])
		}
		got[r.Type] = r
	}
	if len(got) != len(want) {
		t.Fatalf("resources %v", got)
	}
	vm := got["Microsoft.Compute/virtualMachines"]
	if vm.Identity == nil || vm.Identity.Type != "SystemAssigned" {
		t.Fatal("the VM needs a system-assigned identity")
	}
	var p cvmVM
	strictJSON(t, vm.Properties, &p)
	if p.SecurityProfile.SecurityType != "ConfidentialVM" || !p.SecurityProfile.UEFISettings.VTPMEnabled || !p.SecurityProfile.UEFISettings.SecureBootEnabled ||
		p.StorageProfile.OSDisk.ManagedDisk.SecurityProfile.SecurityEncryptionType != "VMGuestStateOnly" ||
		p.StorageProfile.ImageReference.Offer != "0001-com-ubuntu-confidential-vm-jammy" || p.StorageProfile.ImageReference.SKU != "22_04-lts-cvm" {
		t.Fatalf("VM properties %+v", p)
	}
	var vmSize struct {
		AllowedValues []string `json:"allowedValues"`
	}
	json.Unmarshal(tmpl.Parameters["vmSize"], &vmSize)
	for _, s := range vmSize.AllowedValues {
		if !regexp.MustCompile(`^Standard_[DE]C\d+as_v5$`).MatchString(s) {
			t.Errorf("vmSize %s is not an AMD SEV-SNP confidential size", s)
		}
	}
	var v cvmVault
	strictJSON(t, got["Microsoft.KeyVault/vaults"].Properties, &v)
	if v.SKU.Name != "premium" || len(v.AccessPolicies) != 1 || !slices.Contains(v.AccessPolicies[0].Permissions.Keys, "release") ||
		!strings.Contains(v.AccessPolicies[0].ObjectID, "identity.principalId") || !strings.Contains(v.AccessPolicies[0].ObjectID, "Microsoft.Compute/virtualMachines") {
		t.Fatalf("vault %+v", v)
	}
	if !strings.Contains(tmpl.Outputs["vmId"].Value, ".vmId") {
		t.Fatal("the template must output the vmId to pin")
	}
	for _, m := range regexp.MustCompile(`parameters\('([^']+)'\)`).FindAllStringSubmatch(string(raw), -1) {
		if _, ok := tmpl.Parameters[m[1]]; !ok {
			t.Errorf("parameter %s used but not defined", m[1])
		}
	}
	for _, m := range regexp.MustCompile(`variables\('([^']+)'\)`).FindAllStringSubmatch(string(raw), -1) {
		if _, ok := tmpl.Variables[m[1]]; !ok {
			t.Errorf("variable %s used but not defined", m[1])
		}
	}

	// skrfs.yaml: valid, the azure-cvm provider on the VM's identity.
	cfg, err := config.Load(filepath.Join(dir, "skrfs.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Attestation.Provider != config.ProviderAzureCVM || cfg.Identity.Kind != config.IdentityManaged {
		t.Fatalf("config %+v", cfg.Attestation)
	}

	// The unit: mounts at boot after the network, reaches the vTPM, and
	// has no option that runs it in a private mount namespace.
	unit := readUnit(t, filepath.Join(dir, "skrfs.service"))
	for _, k := range []string{"ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateMounts", "ProtectKernelTunables",
		"ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectProc", "ProcSubset", "ReadOnlyPaths", "ReadWritePaths",
		"InaccessiblePaths", "TemporaryFileSystem", "BindPaths", "BindReadOnlyPaths", "MountFlags", "RootDirectory", "RootImage", "DynamicUser",
		"PrivateUsers", "PrivateNetwork", "NetworkNamespacePath", "LogsDirectory", "StateDirectory", "CacheDirectory", "RuntimeDirectory"} {
		if _, ok := unit[k]; ok {
			t.Errorf("skrfs.service sets %s, which gives it a private mount namespace (or needs one): other services would not see the mount", k)
		}
	}
	if !slices.Contains(unit["After"], "network-online.target") || !slices.Contains(unit["Wants"], "network-online.target") ||
		!slices.Contains(unit["DeviceAllow"], "/dev/tpmrm0 rw") || !slices.Contains(unit["DeviceAllow"], "/dev/fuse rw") ||
		!slices.Contains(unit["LimitCORE"], "0") || !slices.Contains(unit["WantedBy"], "multi-user.target") {
		t.Fatalf("skrfs.service: %v", unit)
	}
	execStart := strings.Fields(unit["ExecStart"][0])
	if execStart[0] != "/usr/local/bin/skrfs" || execStart[1] != "mount" || execStart[len(execStart)-1] != "/mnt/skrfs" ||
		!slices.Contains(execStart, "/etc/skrfs/skrfs.yaml") {
		t.Fatalf("ExecStart %v", execStart)
	}
	if sa, err := exec.LookPath("systemd-analyze"); err == nil {
		// Verify a copy whose ExecStart names the binary built here.
		b, _ := os.ReadFile(filepath.Join(dir, "skrfs.service"))
		tmp := filepath.Join(t.TempDir(), "skrfs.service")
		os.WriteFile(tmp, []byte(strings.ReplaceAll(string(b), "/usr/local/bin/skrfs", bin(t, "skrfs"))), 0o644)
		out, err := exec.Command(sa, "verify", tmp).CombinedOutput()
		if err != nil || strings.Contains(string(out), "skrfs.service:") {
			t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
		}
	} else {
		t.Log("systemd-analyze not installed: unit checked by parsing only")
	}
	drop := readUnit(t, filepath.Join(dir, "nginx-skrfs.conf"))
	if !slices.Contains(drop["Requires"], "skrfs.service") || !slices.Contains(drop["After"], "skrfs.service") {
		t.Fatalf("nginx drop-in %v", drop)
	}

	// nginx reads a key file that the configuration serves at the mount
	// point of the unit.
	site, _ := os.ReadFile(filepath.Join(dir, "nginx-site.conf"))
	m := regexp.MustCompile(`ssl_certificate_key\s+/mnt/skrfs/keys/([^;\s]+);`).FindSubmatch(site)
	if m == nil {
		t.Fatal("nginx-site.conf reads no key under /mnt/skrfs/keys")
	}
	if k, ok := cfg.KeyByName(string(m[1])); !ok || len(k.Views) == 0 || k.Views[0].File != string(m[1]) {
		t.Fatalf("nginx reads keys/%s, which skrfs.yaml does not serve", m[1])
	}
}

// readUnit parses a systemd unit file: key -> values (in order).
func readUnit(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "[") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: %q", path, line)
		}
		for _, w := range []string{v} {
			if k == "After" || k == "Wants" || k == "Before" || k == "Requires" || k == "WantedBy" {
				out[k] = append(out[k], strings.Fields(w)...)
			} else {
				out[k] = append(out[k], w)
			}
		}
	}
	return out
}
