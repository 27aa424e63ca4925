package examples_test

// The deployment examples decode strictly into their API types: Kubernetes
// manifests into k8s.io/api types (unknown or misspelt fields are errors),
// the ARM template into the container group fields it uses (unknown
// fields are errors), and every skrfs configuration (files and ConfigMaps)
// through internal/config, which refuses unknown keys and invalid values.
// Beyond decoding, each example is checked for what makes the pattern
// work: the kata-cc runtime class and workload identity, privileged skrfs
// with Bidirectional propagation and HostToContainer for the app, a shared
// emptyDir, the confidential SKU and a ccePolicy, and key files the
// consumer reads that the configuration actually serves.

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/skrfs/skrfs/internal/config"
)

// k8sObjects is what one manifest file holds, by kind.
type k8sObjects struct {
	pods        []corev1.Pod
	configMaps  []corev1.ConfigMap
	services    []corev1.Service
	accounts    []corev1.ServiceAccount
	deployments []appsv1.Deployment
}

// decodeManifests splits a multi-document YAML file and decodes every
// document strictly into its typed object.
func decodeManifests(t *testing.T, path string) k8sObjects {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var objs k8sObjects
	for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var tm struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("%s: document %d: %v", path, i, err)
		}
		var target any
		switch tm.APIVersion + " " + tm.Kind {
		case "v1 Pod":
			objs.pods = append(objs.pods, corev1.Pod{})
			target = &objs.pods[len(objs.pods)-1]
		case "v1 ConfigMap":
			objs.configMaps = append(objs.configMaps, corev1.ConfigMap{})
			target = &objs.configMaps[len(objs.configMaps)-1]
		case "v1 Service":
			objs.services = append(objs.services, corev1.Service{})
			target = &objs.services[len(objs.services)-1]
		case "v1 ServiceAccount":
			objs.accounts = append(objs.accounts, corev1.ServiceAccount{})
			target = &objs.accounts[len(objs.accounts)-1]
		case "apps/v1 Deployment":
			objs.deployments = append(objs.deployments, appsv1.Deployment{})
			target = &objs.deployments[len(objs.deployments)-1]
		default:
			t.Fatalf("%s: document %d: unexpected %s %s", path, i, tm.APIVersion, tm.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), target); err != nil {
			t.Fatalf("%s: document %d (%s): %v", path, i, tm.Kind, err)
		}
	}
	return objs
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// skrfsConfigs parses the skrfs.yaml of every ConfigMap with
// internal/config, by ConfigMap name.
func skrfsConfigs(t *testing.T, path string, objs k8sObjects) map[string]*config.Config {
	t.Helper()
	cfgs := map[string]*config.Config{}
	for _, cm := range objs.configMaps {
		raw, ok := cm.Data["skrfs.yaml"]
		if !ok {
			continue
		}
		c, err := config.Parse([]byte(raw))
		if err != nil {
			t.Fatalf("%s: ConfigMap %s: skrfs.yaml: %v", path, cm.Name, err)
		}
		cfgs[cm.Name] = c
	}
	return cfgs
}

// isSkrfs tells whether a container runs skrfs: its command is skrfs, or
// it has no command and its image is skrfs's (ENTRYPOINT /skrfs).
func isSkrfs(c corev1.Container) bool {
	if len(c.Command) > 0 {
		return filepath.Base(c.Command[0]) == "skrfs"
	}
	return strings.Contains(c.Image, "/skrfs:")
}

// skrfsArgs returns the skrfs command line of a container (without the
// program name), or nil.
func skrfsArgs(c corev1.Container) []string {
	if !isSkrfs(c) {
		return nil
	}
	if len(c.Command) > 0 {
		return append(slices.Clone(c.Command[1:]), c.Args...)
	}
	return c.Args
}

// subcommand returns the first non-flag argument, skipping global flags
// and their values.
func subcommand(args []string) string {
	for i := 0; i < len(args); i++ {
		if args[i] == "--log-level" {
			i++
			continue
		}
		if !strings.HasPrefix(args[i], "-") {
			return args[i]
		}
	}
	return ""
}

// flagValue returns the value of --name in args.
func flagValue(args []string, name string) string {
	for i, a := range args {
		if a == "--"+name && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	return ""
}

// keyFiles lists the file names a configuration serves under keys/.
func keyFiles(c *config.Config) []string {
	var files []string
	for _, k := range c.Keys {
		for _, v := range k.Views {
			files = append(files, v.File)
		}
	}
	return files
}

// checkPod checks one pod of a manifest file: references resolve, a
// confidential pod uses kata-cc and workload identity, and the skrfs
// pattern (sidecar with propagation, or the run wrapper) is complete.
func checkPod(t *testing.T, path string, pod corev1.Pod, objs k8sObjects, cfgs map[string]*config.Config, wantConfidential bool, external []string) {
	t.Helper()
	where := path + ": pod " + pod.Name
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		vols[v.Name] = v
		if v.ConfigMap != nil && !slices.Contains(external, v.ConfigMap.Name) &&
			!slices.ContainsFunc(objs.configMaps, func(cm corev1.ConfigMap) bool { return cm.Name == v.ConfigMap.Name }) {
			t.Errorf("%s: volume %s: ConfigMap %s is not in the file", where, v.Name, v.ConfigMap.Name)
		}
	}
	// A service account the pod names must be defined in the file, in the
	// pod's namespace: Kubernetes refuses a pod whose account is missing.
	if sa := pod.Spec.ServiceAccountName; sa != "" && sa != "default" &&
		!slices.ContainsFunc(objs.accounts, func(a corev1.ServiceAccount) bool {
			return a.Name == sa && a.Namespace == pod.Namespace
		}) {
		t.Errorf("%s: serviceAccountName %s is not defined in the file (namespace %q)", where, sa, pod.Namespace)
	}
	confidential := pod.Spec.RuntimeClassName != nil && *pod.Spec.RuntimeClassName == "kata-cc-isolation"
	if confidential != wantConfidential {
		t.Errorf("%s: runtimeClassName %v, want confidential=%v", where, pod.Spec.RuntimeClassName, wantConfidential)
	}
	if confidential {
		if pod.Labels["azure.workload.identity/use"] != "true" || pod.Spec.ServiceAccountName == "" {
			t.Errorf("%s: a confidential pod needs workload identity (label azure.workload.identity/use and a service account)", where)
		}
		for _, sa := range objs.accounts {
			if sa.Name == pod.Spec.ServiceAccountName && sa.Annotations["azure.workload.identity/client-id"] == "" {
				t.Errorf("%s: service account %s has no azure.workload.identity/client-id", where, sa.Name)
			}
		}
	}
	var mountVol, mountDir string
	var cfg *config.Config
	for _, c := range pod.Spec.Containers {
		cwhere := where + ": container " + c.Name
		for _, vm := range c.VolumeMounts {
			if _, ok := vols[vm.Name]; !ok {
				t.Errorf("%s: volume mount %s names no volume", cwhere, vm.Name)
			}
		}
		if cmd := strings.Join(append(slices.Clone(c.Command), c.Args...), " "); fileServers.MatchString(cmd) {
			t.Errorf("%s serves files over the network (%q): never publish what skrfs decrypts", cwhere, fileServers.FindString(cmd))
		}
		args := skrfsArgs(c)
		if args == nil {
			continue
		}
		if !confidential {
			t.Errorf("%s: skrfs outside a confidential pod", cwhere)
		}
		if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
			t.Errorf("%s: skrfs needs a privileged container (mount(2) on /dev/fuse)", cwhere)
		}
		cfgPath := flagValue(args, "config")
		for _, vm := range c.VolumeMounts {
			if v := vols[vm.Name]; v.ConfigMap != nil && filepath.Dir(cfgPath) == vm.MountPath {
				cfg = cfgs[v.ConfigMap.Name]
			}
		}
		if cfg == nil {
			t.Errorf("%s: --config %s is not a skrfs.yaml from a ConfigMap of the file", cwhere, cfgPath)
		}
		switch sub := subcommand(args); sub {
		case "mount": // the sidecar: the mount point is a shared emptyDir with Bidirectional propagation
			mountDir = args[len(args)-1]
			for _, vm := range c.VolumeMounts {
				if vm.MountPath == mountDir {
					mountVol = vm.Name
					if vm.MountPropagation == nil || *vm.MountPropagation != corev1.MountPropagationBidirectional {
						t.Errorf("%s: the mount point's volume needs mountPropagation: Bidirectional", cwhere)
					}
				}
			}
			if v, ok := vols[mountVol]; !ok || v.EmptyDir == nil {
				t.Errorf("%s: the mount point %s is not an emptyDir volume", cwhere, mountDir)
			}
		case "run": // the wrapper: the app runs under skrfs in the same container
			if !slices.Contains(args, "--") {
				t.Errorf("%s: skrfs run without -- CMD", cwhere)
			}
		default:
			t.Errorf("%s: skrfs %s is neither the sidecar (mount) nor the wrapper (run)", cwhere, sub)
		}
	}
	if mountVol == "" {
		return
	}
	shared := false
	for _, c := range pod.Spec.Containers {
		if isSkrfs(c) {
			continue
		}
		for _, vm := range c.VolumeMounts {
			if vm.Name != mountVol {
				continue
			}
			shared = true
			if vm.MountPropagation == nil || *vm.MountPropagation != corev1.MountPropagationHostToContainer {
				t.Errorf("%s: container %s sees skrfs's volume only with mountPropagation: HostToContainer", where, c.Name)
			}
			// A key file the app is told to read must be one skrfs serves.
			if k := flagValue(c.Args, "key"); k != "" && cfg != nil {
				rel, err := filepath.Rel(vm.MountPath, k)
				if err != nil || filepath.Dir(rel) != "keys" || !slices.Contains(keyFiles(cfg), filepath.Base(rel)) {
					t.Errorf("%s: container %s reads --key %s, which the skrfs configuration does not serve (keys/%v)", where, c.Name, k, keyFiles(cfg))
				}
			}
		}
	}
	if !shared {
		t.Errorf("%s: no other container mounts skrfs's volume %s", where, mountVol)
	}
}

func TestKubernetesManifests(t *testing.T) {
	for _, tc := range []struct {
		file string
		// kinds: how many of each the file holds
		pods, configMaps, services, accounts int
		confidential                         bool
		// external: ConfigMaps created outside the file (kubectl create)
		external []string
	}{
		{file: "aks-kata-cc/sidecar.yaml", pods: 1, configMaps: 1, accounts: 1, confidential: true},
		{file: "aks-kata-cc/run-wrapper.yaml", pods: 1, configMaps: 1, accounts: 1, confidential: true},
		{file: "kafka/consumer.yaml", pods: 1, configMaps: 1, services: 1, accounts: 1, confidential: true},
		{file: "kafka/consumer-outside-tee.yaml", pods: 1},
		{file: "kafka/producer.yaml", pods: 1, external: []string{"kafka-demo-pubkey"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join(examplesDir(t), tc.file)
			objs := decodeManifests(t, path)
			got := [4]int{len(objs.pods), len(objs.configMaps), len(objs.services), len(objs.accounts)}
			if want := [4]int{tc.pods, tc.configMaps, tc.services, tc.accounts}; got != want {
				t.Fatalf("pods, configmaps, services, service accounts = %v, want %v", got, want)
			}
			cfgs := skrfsConfigs(t, path, objs)
			for _, pod := range objs.pods {
				checkPod(t, path, pod, objs, cfgs, tc.confidential, tc.external)
			}
			for _, svc := range objs.services {
				if !slices.ContainsFunc(objs.pods, func(p corev1.Pod) bool {
					for k, v := range svc.Spec.Selector {
						if p.Labels[k] != v {
							return false
						}
					}
					return true
				}) {
					t.Errorf("service %s selects no pod of the file", svc.Name)
				}
			}
		})
	}
}

// TestEveryManifestIsListed: a new YAML example must be added to the
// tables above (Kubernetes) or to the configuration files below.
func TestEveryManifestIsListed(t *testing.T) {
	listed := []string{"aks-kata-cc/sidecar.yaml", "aks-kata-cc/run-wrapper.yaml", "kafka/consumer.yaml",
		"kafka/consumer-outside-tee.yaml", "kafka/producer.yaml",
		"cvm/azuredeploy.json", "cvm/skrfs.yaml", // TestCVMExample
		"aks-sgx/deployment.yaml", "aks-sgx/skrfs.yaml"} // TestAKSSGXExample
	listed = append(listed, configFiles...)
	err := filepath.WalkDir(examplesDir(t), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || (!strings.HasSuffix(p, ".yaml") && !strings.HasSuffix(p, ".yml") && !strings.HasSuffix(p, ".json")) {
			return err
		}
		rel, _ := filepath.Rel(examplesDir(t), p)
		if rel != "aci/azuredeploy.json" && rel != "aci/azuredeploy.parameters.json" && !slices.Contains(listed, rel) {
			t.Errorf("%s is not checked by any test", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// configFiles are the skrfs configurations of the examples; templates
// have ${NAME} placeholders, replaced here by valid stand-ins.
var configFiles = []string{"aci/skrfs.yaml", "local/skrfs.yaml", "kafka/local/skrfs.yaml"}

func TestConfigFiles(t *testing.T) {
	stand := map[string]string{"SKRFS_DEVSTACK_DIR": "/tmp/devstack", "SKRFS_MAA_URL": "https://127.0.0.1:4431",
		"SKRFS_VAULT_URL": "https://127.0.0.1:4432", "WORK": "/tmp/work"}
	for _, tc := range []struct {
		file     string
		provider string
		keys     []string // files under keys/
		writable []string // writable datasets (TestACIResultsDataset checks the ACI one)
	}{
		{"aci/skrfs.yaml", config.ProviderSNP, []string{"app-key", "app-key.jwk", "app-key.pub.pem", "results-key.pub.pem"}, []string{"results"}},
		{"local/skrfs.yaml", config.ProviderFake, []string{"my-app-key.pem", "my-app-key.pub.pem", "denied", "denied.jwk", "denied.pub.pem"}, nil},
		{"kafka/local/skrfs.yaml", config.ProviderFake, []string{"kafka-demo", "kafka-demo.pub.pem"}, nil},
	} {
		t.Run(tc.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(examplesDir(t), tc.file))
			if err != nil {
				t.Fatal(err)
			}
			c, err := config.Parse([]byte(render(t, string(b), stand)))
			if err != nil {
				t.Fatal(err)
			}
			if c.Attestation.Provider != tc.provider {
				t.Errorf("provider %s, want %s", c.Attestation.Provider, tc.provider)
			}
			if got := keyFiles(c); !slices.Equal(got, tc.keys) {
				t.Errorf("keys/ holds %v, want %v", got, tc.keys)
			}
			var writable []string
			for _, d := range c.Datasets {
				if d.Writable {
					writable = append(writable, d.Name)
				}
			}
			if !slices.Equal(writable, tc.writable) {
				t.Errorf("writable datasets %v, want %v", writable, tc.writable)
			}
		})
	}
}

// The ARM template: the container group fields it uses, decoded with
// unknown fields refused (names as in the Microsoft.ContainerInstance
// REST API, 2023-05-01; JSON matching is case-insensitive, as ARM's).
type armTemplate struct {
	Schema         string                  `json:"$schema"`
	ContentVersion string                  `json:"contentVersion"`
	Parameters     map[string]armParameter `json:"parameters"`
	Resources      []armResource           `json:"resources"`
	Outputs        map[string]struct {
		Type  string `json:"type"`
		Value string `json:"value"`
	} `json:"outputs"`
}

type armParameter struct {
	Type         string `json:"type"`
	DefaultValue any    `json:"defaultValue"`
	Metadata     struct {
		Description string `json:"description"`
	} `json:"metadata"`
}

type armResource struct {
	Type       string `json:"type"`
	APIVersion string `json:"apiVersion"`
	Name       string `json:"name"`
	Location   string `json:"location"`
	Identity   *struct {
		Type                   string              `json:"type"`
		UserAssignedIdentities map[string]struct{} `json:"userAssignedIdentities"`
	} `json:"identity"`
	Properties struct {
		SKU                           string `json:"sku"`
		ConfidentialComputeProperties *struct {
			CCEPolicy *string `json:"ccePolicy"`
		} `json:"confidentialComputeProperties"`
		OSType        string         `json:"osType"`
		RestartPolicy string         `json:"restartPolicy"`
		Containers    []armContainer `json:"containers"`
		IPAddress     *struct {
			Type         string    `json:"type"`
			Ports        []armPort `json:"ports"`
			DNSNameLabel string    `json:"dnsNameLabel"`
		} `json:"ipAddress"`
		Volumes []struct {
			Name     string            `json:"name"`
			EmptyDir *struct{}         `json:"emptyDir"`
			Secret   map[string]string `json:"secret"`
		} `json:"volumes"`
	} `json:"properties"`
}

type armContainer struct {
	Name       string `json:"name"`
	Properties struct {
		Image                string    `json:"image"`
		Command              []string  `json:"command"`
		Ports                []armPort `json:"ports"`
		EnvironmentVariables []struct {
			Name        string `json:"name"`
			Value       string `json:"value"`
			SecureValue string `json:"secureValue"`
		} `json:"environmentVariables"`
		Resources struct {
			Requests armResources  `json:"requests"`
			Limits   *armResources `json:"limits"`
		} `json:"resources"`
		VolumeMounts []struct {
			Name      string `json:"name"`
			MountPath string `json:"mountPath"`
			ReadOnly  bool   `json:"readOnly"`
		} `json:"volumeMounts"`
		SecurityContext *struct {
			Privileged *bool `json:"privileged"`
		} `json:"securityContext"`
	} `json:"properties"`
}

type armResources struct {
	CPU        float64 `json:"cpu"`
	MemoryInGB float64 `json:"memoryInGB"`
}

type armPort struct {
	Port     int    `json:"port"`
	Protocol string `json:"protocol"`
}

func decodeARM(t *testing.T, path string) armTemplate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var tmpl armTemplate
	if err := dec.Decode(&tmpl); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return tmpl
}

func TestARMTemplate(t *testing.T) {
	path := filepath.Join(examplesDir(t), "aci", "azuredeploy.json")
	tmpl := decodeARM(t, path)
	raw, _ := os.ReadFile(path)
	// Every parameter used is declared, and every declared one is used.
	used := map[string]bool{}
	for _, m := range regexp.MustCompile(`parameters\('([A-Za-z0-9_]+)'\)`).FindAllStringSubmatch(string(raw), -1) {
		used[m[1]] = true
		if _, ok := tmpl.Parameters[m[1]]; !ok {
			t.Errorf("parameter %s is used but not declared", m[1])
		}
	}
	for name := range tmpl.Parameters {
		if !used[name] {
			t.Errorf("parameter %s is declared but not used", name)
		}
	}
	if len(tmpl.Resources) != 1 {
		t.Fatalf("%d resources, want the container group", len(tmpl.Resources))
	}
	r := tmpl.Resources[0]
	p := r.Properties
	for _, c := range []struct {
		what string
		ok   bool
	}{
		{"type Microsoft.ContainerInstance/containerGroups", r.Type == "Microsoft.ContainerInstance/containerGroups"},
		{"apiVersion 2023-05-01 or later (confidential SKU)", r.APIVersion >= "2023-05-01"},
		{"sku Confidential", strings.EqualFold(p.SKU, "Confidential")},
		{"a confidentialComputeProperties.ccePolicy field for az confcom acipolicygen", p.ConfidentialComputeProperties != nil && p.ConfidentialComputeProperties.CCEPolicy != nil},
		{"a user-assigned managed identity", r.Identity != nil && r.Identity.Type == "UserAssigned" && len(r.Identity.UserAssignedIdentities) == 1},
		{"osType Linux", p.OSType == "Linux"},
		{"two containers", len(p.Containers) == 2},
	} {
		if !c.ok {
			t.Errorf("want %s", c.what)
		}
	}
	checkARMContainers(t, tmpl)
}

// fileServers matches commands that serve a directory over the network: an
// example app must never publish the plaintext it reads from skrfs.
var fileServers = regexp.MustCompile(`http\.server|SimpleHTTPServer|\bhttpd\b|\bnginx\b|\bcaddy\b|php -S|\bminiserve\b|\bdufs\b`)

// servesFiles also matches any listening socket: the ACI example's app
// listens on nothing at all (the Kafka consumer's page of decrypted demo
// messages, as in Microsoft's demo, is the one example that listens).
var servesFiles = regexp.MustCompile(fileServers.String() + `|\bserve\b|\bsocat\b|\bnc(at)? .*-l|--listen`)

// checkARMContainers checks the container group's safety and the sidecar
// pattern: nothing is reachable from the internet (no public IP, no
// ports, no app serving files), skrfs runs privileged and mounts into a
// subdirectory of an emptyDir (created with --mkdir, as Microsoft's encfs
// sample mounts into a subdirectory of its shared volume), and every other
// container shares that volume at the same path and reads under the mount.
func checkARMContainers(t *testing.T, tmpl armTemplate) {
	t.Helper()
	p := tmpl.Resources[0].Properties
	if ip := p.IPAddress; ip != nil {
		if !strings.EqualFold(ip.Type, "Private") {
			t.Errorf("ipAddress of type %q: the group would be reachable from the internet; an example publishes nothing", ip.Type)
		}
		if len(ip.Ports) > 0 || ip.DNSNameLabel != "" {
			t.Errorf("ipAddress exposes ports %v (dnsNameLabel %q): an example publishes nothing", ip.Ports, ip.DNSNameLabel)
		}
	}
	for name, o := range tmpl.Outputs {
		if strings.Contains(strings.ToLower(o.Value), "ipaddress") {
			t.Errorf("output %s reports an IP address: the group must have none", name)
		}
	}
	vols := map[string]bool{}
	for _, v := range p.Volumes {
		vols[v.Name] = v.EmptyDir != nil
	}
	var skrfsVol, volPath, mnt string
	for _, c := range p.Containers {
		cp := c.Properties
		if len(cp.Ports) > 0 {
			t.Errorf("container %s: ports %v: an example publishes nothing", c.Name, cp.Ports)
		}
		if cmd := strings.Join(cp.Command, " "); servesFiles.MatchString(cmd) {
			t.Errorf("container %s serves files over the network (%q): never publish what skrfs decrypts", c.Name, servesFiles.FindString(cmd))
		}
		for _, vm := range cp.VolumeMounts {
			if _, ok := vols[vm.Name]; !ok {
				t.Errorf("container %s: volume mount %s names no volume", c.Name, vm.Name)
			}
		}
		if len(cp.Command) == 0 || filepath.Base(cp.Command[0]) != "skrfs" {
			continue
		}
		if cp.SecurityContext == nil || cp.SecurityContext.Privileged == nil || !*cp.SecurityContext.Privileged {
			t.Errorf("container %s: skrfs needs securityContext.privileged", c.Name)
		}
		args := cp.Command[1:]
		if subcommand(args) != "mount" {
			t.Errorf("container %s: want skrfs mount", c.Name)
		}
		mnt = args[len(args)-1]
		for _, vm := range cp.VolumeMounts {
			if rel, err := filepath.Rel(vm.MountPath, mnt); err == nil && rel != "." && !strings.HasPrefix(rel, "..") {
				skrfsVol, volPath = vm.Name, vm.MountPath
			}
		}
		if skrfsVol == "" || !vols[skrfsVol] {
			t.Errorf("container %s: the mount point %s is not a subdirectory of an emptyDir volume", c.Name, mnt)
		}
		if !slices.Contains(args, "--mkdir") {
			t.Errorf("container %s: the mount point %s in the fresh volume needs skrfs mount --mkdir", c.Name, mnt)
		}
	}
	if skrfsVol == "" {
		t.Fatal("no skrfs mount container")
	}
	for _, c := range p.Containers {
		if len(c.Properties.Command) > 0 && filepath.Base(c.Properties.Command[0]) == "skrfs" {
			continue
		}
		shared := false
		for _, vm := range c.Properties.VolumeMounts {
			shared = shared || (vm.Name == skrfsVol && vm.MountPath == volPath)
		}
		if !shared {
			t.Errorf("container %s does not mount skrfs's volume %s at %s", c.Name, skrfsVol, volPath)
		}
		if !strings.Contains(strings.Join(c.Properties.Command, " "), mnt) {
			t.Errorf("container %s does not read under the mount point %s", c.Name, mnt)
		}
	}
}

// TestARMParameters: the parameters file decodes strictly, names only
// parameters of the template, and gives a value to every parameter that
// has no default.
func TestARMParameters(t *testing.T) {
	tmpl := decodeARM(t, filepath.Join(examplesDir(t), "aci", "azuredeploy.json"))
	b, err := os.ReadFile(filepath.Join(examplesDir(t), "aci", "azuredeploy.parameters.json"))
	if err != nil {
		t.Fatal(err)
	}
	var params struct {
		Schema         string `json:"$schema"`
		ContentVersion string `json:"contentVersion"`
		Parameters     map[string]struct {
			Value any `json:"value"`
		} `json:"parameters"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&params); err != nil {
		t.Fatal(err)
	}
	for name := range params.Parameters {
		if _, ok := tmpl.Parameters[name]; !ok {
			t.Errorf("parameter %s is not in the template", name)
		}
	}
	for name, p := range tmpl.Parameters {
		if _, ok := params.Parameters[name]; !ok && p.DefaultValue == nil {
			t.Errorf("parameter %s has no default and no value", name)
		}
	}
}
