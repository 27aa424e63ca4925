package examples_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	corev1 "k8s.io/api/core/v1"

	"github.com/skrfs/skrfs/internal/config"
)

// gramineManifest is what the aks-sgx Gramine manifest template must set;
// decoding is strict (an unknown top-level key is an error).
type gramineManifest struct {
	Libos struct {
		Entrypoint string `toml:"entrypoint"`
	} `toml:"libos"`
	Loader struct {
		Entrypoint struct {
			URI string `toml:"uri"`
		} `toml:"entrypoint"`
		LogLevel string            `toml:"log_level"`
		Argv     []string          `toml:"argv"`
		Env      map[string]string `toml:"env"`
	} `toml:"loader"`
	FS struct {
		Mounts []struct {
			Path string `toml:"path"`
			URI  string `toml:"uri"`
			Type string `toml:"type"`
		} `toml:"mounts"`
	} `toml:"fs"`
	Sys map[string]any `toml:"sys"`
	SGX struct {
		Debug             bool     `toml:"debug"`
		RemoteAttestation string   `toml:"remote_attestation"`
		EnclaveSize       string   `toml:"enclave_size"`
		MaxThreads        int      `toml:"max_threads"`
		ISVProdID         int      `toml:"isvprodid"`
		ISVSVN            int      `toml:"isvsvn"`
		TrustedFiles      []string `toml:"trusted_files"`
		AllowedFiles      []string `toml:"allowed_files"`
	} `toml:"sgx"`
}

// renderGramine replaces the template's Jinja expressions with what
// gramine-manifest puts there on Ubuntu, and decodes the TOML strictly.
func renderGramine(t *testing.T, path string) gramineManifest {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.NewReplacer("{{ gramine.libos }}", "/usr/lib/x86_64-linux-gnu/gramine/libsysdb.so",
		"{{ gramine.runtimedir() }}", "/usr/lib/x86_64-linux-gnu/gramine/runtime/glibc",
		"{{ arch_libdir }}", "/lib/x86_64-linux-gnu").Replace(string(b))
	if m := regexp.MustCompile(`\{\{|\{%`).FindString(s); m != "" {
		t.Fatalf("%s: unrendered Jinja left: %s", path, m)
	}
	var m gramineManifest
	md, err := toml.Decode(s, &m)
	if err != nil {
		t.Fatalf("%s: not TOML after rendering: %v", path, err)
	}
	if u := md.Undecoded(); len(u) > 0 {
		for _, k := range u {
			if k[0] != "sys" && !(k[0] == "loader" && len(k) > 1 && k[1] == "env") {
				t.Errorf("%s: unexpected key %s", path, k)
			}
		}
	}
	return m
}

// TestAKSSGXExample: examples/aks-sgx. The Deployment decodes strictly
// into Kubernetes types and has what the confcom add-on needs (EPC limit,
// SGX_AESM_ADDR=1, the /var/run/aesmd hostPath, an SGX node pool
// selector, workload identity) and nothing of FUSE; the Gramine manifest
// runs skrfs in FUSE-free exec mode with its delivery directory an
// in-enclave tmpfs that skrfs.yaml names as delivery.enclave_dir, DCAP
// attestation, no debug enclave, and the configuration measured; the
// skrfs command line in it parses; the Dockerfile puts the files where the
// manifest expects them. Nothing here ran on SGX hardware.
func TestAKSSGXExample(t *testing.T) {
	dir := filepath.Join(examplesDir(t), "aks-sgx")
	objs := decodeManifests(t, filepath.Join(dir, "deployment.yaml"))
	if len(objs.deployments) != 1 || len(objs.accounts) != 1 || len(objs.pods)+len(objs.configMaps)+len(objs.services) != 0 {
		t.Fatalf("want one Deployment and one ServiceAccount: %+v", objs)
	}
	d := objs.deployments[0]
	sa := objs.accounts[0]
	tmpl := d.Spec.Template
	if d.Spec.Selector == nil || d.Spec.Selector.MatchLabels["app.kubernetes.io/name"] != tmpl.Labels["app.kubernetes.io/name"] {
		t.Error("the selector does not select the pod template")
	}
	if tmpl.Spec.ServiceAccountName != sa.Name || sa.Annotations["azure.workload.identity/client-id"] == "" ||
		tmpl.Labels["azure.workload.identity/use"] != "true" {
		t.Error("workload identity: service account, client-id annotation or pod label missing")
	}
	if tmpl.Spec.NodeSelector["kubernetes.azure.com/agentpool"] == "" {
		t.Errorf("no node selector for the SGX node pool: %v", tmpl.Spec.NodeSelector)
	}
	if len(tmpl.Spec.Containers) != 1 {
		t.Fatalf("want one container (skrfs and the app share one enclave), have %d", len(tmpl.Spec.Containers))
	}
	c := tmpl.Spec.Containers[0]
	epc, ok := c.Resources.Limits["kubernetes.azure.com/sgx_epc_mem_in_MiB"]
	if !ok || epc.IsZero() {
		t.Error("no kubernetes.azure.com/sgx_epc_mem_in_MiB limit")
	}
	if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "SGX_AESM_ADDR" && e.Value == "1" }) {
		t.Error("SGX_AESM_ADDR=1 missing")
	}
	aesmd := ""
	for _, vm := range c.VolumeMounts {
		if vm.MountPath == "/var/run/aesmd" {
			aesmd = vm.Name
		}
	}
	if !slices.ContainsFunc(tmpl.Spec.Volumes, func(v corev1.Volume) bool {
		return v.Name == aesmd && v.HostPath != nil && v.HostPath.Path == "/var/run/aesmd"
	}) {
		t.Error("/var/run/aesmd is not mounted from the host path /var/run/aesmd")
	}
	if sc := c.SecurityContext; sc != nil && sc.Privileged != nil && *sc.Privileged {
		t.Error("privileged: FUSE-free delivery needs no privileges")
	}
	for _, v := range tmpl.Spec.Volumes {
		if v.HostPath != nil && strings.Contains(v.HostPath.Path, "fuse") {
			t.Errorf("volume %s: no FUSE in SGX", v.Name)
		}
	}

	cfg, err := config.Load(filepath.Join(dir, "skrfs.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Attestation.Provider != config.ProviderSGX || cfg.Delivery.EnclaveDir == "" || cfg.Identity.Kind != config.IdentityWorkload {
		t.Fatalf("skrfs.yaml: provider %q, enclave_dir %q, identity %q", cfg.Attestation.Provider, cfg.Delivery.EnclaveDir, cfg.Identity.Kind)
	}

	m := renderGramine(t, filepath.Join(dir, "skrfs.manifest.template"))
	if m.SGX.Debug || m.SGX.RemoteAttestation != "dcap" || m.SGX.EnclaveSize == "" || m.SGX.MaxThreads < 16 {
		t.Errorf("sgx: debug %v, remote_attestation %q, enclave_size %q, max_threads %d", m.SGX.Debug, m.SGX.RemoteAttestation, m.SGX.EnclaveSize, m.SGX.MaxThreads)
	}
	argv := m.Loader.Argv
	if len(argv) < 2 || m.Libos.Entrypoint != "/usr/local/bin/skrfs" || filepath.Base(argv[0]) != "skrfs" {
		t.Fatalf("the enclave does not start skrfs: entrypoint %q, argv %q", m.Libos.Entrypoint, argv)
	}
	args := argv[1:]
	dash := slices.Index(args, "--")
	if subcommand(args) != "run" || !slices.Contains(args, "--no-fuse") || !slices.Contains(args, "--exec") || dash < 0 || dash == len(args)-1 {
		t.Fatalf("want skrfs run --no-fuse --exec ... -- APP, have %q", args)
	}
	deliveryDir, cfgPath := flagValue(args[:dash], "dir"), flagValue(args[:dash], "config")
	if deliveryDir != cfg.Delivery.EnclaveDir {
		t.Errorf("--dir %q is not delivery.enclave_dir %q", deliveryDir, cfg.Delivery.EnclaveDir)
	}
	tmpfs := false
	for _, mt := range m.FS.Mounts {
		if mt.Path == deliveryDir {
			tmpfs = mt.Type == "tmpfs" && mt.URI == ""
		}
	}
	if !tmpfs {
		t.Errorf("%s is not an in-enclave tmpfs mount", deliveryDir)
	}
	for _, f := range []string{cfgPath, m.Libos.Entrypoint} {
		if !slices.Contains(m.SGX.TrustedFiles, "file:"+f) {
			t.Errorf("%s is not in sgx.trusted_files (not measured)", f)
		}
		if slices.Contains(m.SGX.AllowedFiles, "file:"+f) {
			t.Errorf("%s is in sgx.allowed_files (unmeasured)", f)
		}
	}
	app := args[dash+1]
	if !slices.ContainsFunc(m.SGX.TrustedFiles, func(f string) bool { return strings.HasPrefix("file:"+app, f) }) {
		t.Errorf("the app %s is not measured", app)
	}
	if cfg.Identity.TokenFile == "" || !slices.Contains(m.SGX.AllowedFiles, "file:"+cfg.Identity.TokenFile) {
		t.Errorf("the workload identity token %q is not readable in the enclave", cfg.Identity.TokenFile)
	}
	cl := &cli{bin: bin(t, "skrfs"), cache: map[string]*helpInfo{}}
	if err := cl.check(t, args); err != nil {
		t.Errorf("skrfs %s: %v", strings.Join(args, " "), err)
	}

	df, err := os.ReadFile(filepath.Join(dir, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"/etc/skrfs/skrfs.yaml", "/usr/local/bin/skrfs", "/app/", "gramine-sgx-sign", "libsgx-quote-ex"} {
		if !strings.Contains(string(df), want) {
			t.Errorf("Dockerfile does not mention %s", want)
		}
	}
	if filepath.Dir(cfgPath) != "/etc/skrfs" || !strings.Contains(string(df), "COPY examples/aks-sgx/skrfs.yaml "+cfgPath) {
		t.Errorf("the Dockerfile does not put skrfs.yaml at %s", cfgPath)
	}
	readme, err := os.ReadFile(filepath.Join(dir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^\s*az aks addon update .*--addon confcom .*--enable-sgxquotehelper`).Match(readme) {
		t.Error("README.md lacks the az aks addon update --addon confcom --enable-sgxquotehelper step")
	}
	if !strings.Contains(strings.ToLower(string(readme)), "not run on sgx hardware") {
		t.Error("README.md does not say what was not run on SGX hardware")
	}
}
