// Package azurite starts private Azurite blob emulators for tests.
//
// Start runs a fresh `azurite-blob` (in-memory, on a free loopback port) for
// one test or test package and stops it on cleanup. The binary comes from
// $SKRFS_AZURITE_BIN, else <repo>/.cache/azurite/node_modules/.bin/azurite-blob,
// which `make azurite` (scripts/install-azurite.sh) installs. A missing
// binary fails the test: the Azure tests must never be skipped silently.
//
// With Options{HTTPS: true} the emulator serves TLS with a certificate of a
// throwaway CA (Instance.HTTPClient trusts it); with OAuth too it accepts
// Microsoft Entra bearer tokens, checking their claims but not their
// signature, which TokenCredential mints.
package azurite

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	sdkblob "github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
)

// The emulator's well-known development account.
const (
	AccountName = "devstoreaccount1"
	AccountKey  = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// EnvBin names the environment variable that overrides the azurite-blob path.
const EnvBin = "SKRFS_AZURITE_BIN"

const startTimeout = 60 * time.Second

// Options select how the emulator serves.
type Options struct {
	// HTTPS serves TLS with a certificate for 127.0.0.1, ::1 and localhost
	// issued by a CA made for this instance.
	HTTPS bool
	// OAuth accepts bearer tokens (`--oauth basic`). Azurite supports it
	// only over HTTPS, so OAuth implies HTTPS.
	OAuth bool
}

// Instance is one running emulator.
type Instance struct {
	// Endpoint is the blob service URL of the account, without a trailing
	// slash: http(s)://127.0.0.1:PORT/devstoreaccount1.
	Endpoint string
	// AccountName and AccountKey are the shared-key credentials.
	AccountName, AccountKey string
	// Dir is the instance's working directory (Azurite's location, TLS files).
	Dir string
	// CAPool trusts the instance's CA (nil without HTTPS); CAFile is the CA
	// certificate in PEM.
	CAPool *x509.CertPool
	CAFile string
	// HTTPClient talks to the instance: it trusts CAPool when HTTPS is on,
	// and keeps enough idle connections for parallel ranged reads. It
	// satisfies azcore's policy.Transporter.
	HTTPClient *http.Client

	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd.Wait returns
	output *syncBuffer
	stop   sync.Once
}

// Pid is the emulator's process ID (for pinning it to a core in
// benchmarks).
func (inst *Instance) Pid() int { return inst.cmd.Process.Pid }

// Start starts an emulator for tb and stops it when tb's cleanups run.
// It fails tb (never skips) when the emulator is missing or does not start.
func Start(tb testing.TB, opts Options) *Instance {
	tb.Helper()
	inst, err := start(tb.TempDir(), opts)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Cleanup(inst.Stop)
	return inst
}

// StartMain is Start for a TestMain, which has no testing.TB: it returns the
// instance and a function that stops it and removes its directory. Callers
// should print the error and exit with a failure status.
func StartMain(opts Options) (*Instance, func(), error) {
	dir, err := os.MkdirTemp("", "azurite-")
	if err != nil {
		return nil, nil, fmt.Errorf("azurite: %w", err)
	}
	inst, err := start(dir, opts)
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	return inst, func() {
		inst.Stop()
		os.RemoveAll(dir)
	}, nil
}

// Bin returns the path of the azurite-blob executable, or an error saying
// how to install it.
func Bin() (string, error) {
	if p := os.Getenv(EnvBin); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("azurite: $%s=%s: %w (unset it to use the repo's copy, installed by `make azurite`)", EnvBin, p, err)
		}
		return p, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	p := filepath.Join(root, ".cache", "azurite", "node_modules", ".bin", "azurite-blob")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("azurite: %s not found; install it with `make azurite` "+
			"(scripts/install-azurite.sh, needs npm) or set $%s", p, EnvBin)
	}
	return p, nil
}

// repoRoot walks up from the working directory to the directory with go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("azurite: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("azurite: no go.mod above the working directory; set $" + EnvBin)
		}
		dir = parent
	}
}

func start(dir string, opts Options) (*Instance, error) {
	bin, err := Bin()
	if err != nil {
		return nil, err
	}
	if opts.OAuth {
		opts.HTTPS = true
	}
	inst := &Instance{AccountName: AccountName, AccountKey: AccountKey, Dir: dir}
	var extra []string
	scheme := "http"
	tlsConf := &tls.Config{}
	if opts.HTTPS {
		scheme = "https"
		certFile, keyFile, err := inst.makeCerts()
		if err != nil {
			return nil, err
		}
		extra = append(extra, "--cert", certFile, "--key", keyFile)
		tlsConf.RootCAs = inst.CAPool
	}
	if opts.OAuth {
		extra = append(extra, "--oauth", "basic")
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = tlsConf
	transport.MaxIdleConnsPerHost = 64
	inst.HTTPClient = &http.Client{Transport: transport}

	// The free port may be taken between our probe and Azurite's listen:
	// try a few ports.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		lastErr = inst.run(bin, port, extra)
		if lastErr == nil {
			inst.Endpoint = fmt.Sprintf("%s://127.0.0.1:%d/%s", scheme, port, AccountName)
			return inst, nil
		}
		if !strings.Contains(lastErr.Error(), "EADDRINUSE") {
			break
		}
	}
	return nil, lastErr
}

// run starts the process on port and waits until the port accepts
// connections, or the process exits, or startTimeout passes.
func (inst *Instance) run(bin string, port int, extra []string) error {
	args := append([]string{
		"--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(port),
		"--inMemoryPersistence", "--disableTelemetry", "--skipApiVersionCheck", "--silent",
	}, extra...)
	cmd := exec.Command(bin, args...)
	// Azurite 3.37 refuses --location together with --inMemoryPersistence
	// ("not supported"); it defaults to the working directory, so anything
	// it writes lands in the instance's temporary directory.
	cmd.Dir = inst.Dir
	inst.output = &syncBuffer{}
	cmd.Stdout, cmd.Stderr = inst.output, inst.output
	// Own process group, so that Stop kills node and anything it spawned.
	// Pdeathsig kills it when the test binary dies without running its
	// cleanups (a test timeout panics past them). Linux sends it when the
	// OS thread that started the process exits, which the Go runtime does
	// only for a goroutine that ends while locked to its thread.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("azurite: start %s: %w (reinstall with `make azurite`)", bin, err)
	}
	inst.cmd = cmd
	inst.exited = make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(inst.exited)
	}()

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(startTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-inst.exited:
			inst.kill() // reap anything node left in its group
			return fmt.Errorf("azurite: %s exited before listening on %s: %v\n%s", bin, addr, waitErr, inst.output)
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			inst.kill()
			return fmt.Errorf("azurite: %s did not listen on %s within %v\n%s", bin, addr, startTimeout, inst.output)
		}
	}
}

// Stop kills the emulator's process group and waits for it. It is safe to
// call more than once.
func (inst *Instance) Stop() {
	inst.stop.Do(inst.kill)
}

// kill sends SIGKILL to the process group of the current process (a
// negative PID names the group that Setpgid created) and waits for the
// process to be reaped.
func (inst *Instance) kill() {
	if inst.cmd == nil || inst.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-inst.cmd.Process.Pid, syscall.SIGKILL)
	<-inst.exited
}

// Output returns what the emulator printed so far (little, with --silent).
func (inst *Instance) Output() string { return inst.output.String() }

// PID returns the emulator's process id.
func (inst *Instance) PID() int { return inst.cmd.Process.Pid }

// ConnectionString returns a shared-key connection string for the instance.
func (inst *Instance) ConnectionString() string {
	scheme, _, _ := strings.Cut(inst.Endpoint, ":")
	return fmt.Sprintf("DefaultEndpointsProtocol=%s;AccountName=%s;AccountKey=%s;BlobEndpoint=%s;",
		scheme, inst.AccountName, inst.AccountKey, inst.Endpoint)
}

// ContainerURL returns the URL of the container name.
func (inst *Instance) ContainerURL(name string) string { return inst.Endpoint + "/" + name }

// SharedKey returns the shared-key credential of the account.
func (inst *Instance) SharedKey() *sdkblob.SharedKeyCredential {
	cred, err := sdkblob.NewSharedKeyCredential(inst.AccountName, inst.AccountKey)
	if err != nil {
		panic(err) // the well-known key is valid base64
	}
	return cred
}

// ContainerClient returns a shared-key client of the container name.
func (inst *Instance) ContainerClient(name string) (*container.Client, error) {
	return container.NewClientWithSharedKeyCredential(inst.ContainerURL(name), inst.SharedKey(),
		&container.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: inst.HTTPClient}})
}

// CreateContainer creates the container name with shared key and returns a
// client for it. It fails tb on error.
func (inst *Instance) CreateContainer(tb testing.TB, name string) *container.Client {
	tb.Helper()
	c, err := inst.ContainerClient(name)
	if err != nil {
		tb.Fatalf("azurite: container client %s: %v", name, err)
	}
	if _, err := c.Create(context.Background(), nil); err != nil {
		tb.Fatalf("azurite: create container %s: %v", name, err)
	}
	return c
}

// makeCerts writes a fresh CA and a leaf for 127.0.0.1, ::1 and localhost to
// the instance directory and sets CAPool and CAFile.
func (inst *Instance) makeCerts() (certFile, keyFile string, err error) {
	fail := func(err error) (string, string, error) {
		return "", "", fmt.Errorf("azurite: TLS certificate: %w", err)
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fail(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "skrfs azurite test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return fail(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return fail(err)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fail(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:     []string{"localhost"},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		return fail(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		return fail(err)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	certFile = filepath.Join(inst.Dir, "cert.pem")
	keyFile = filepath.Join(inst.Dir, "key.pem")
	inst.CAFile = filepath.Join(inst.Dir, "ca.pem")
	for _, f := range []struct {
		path string
		data []byte
	}{
		{certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER})},
		{keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})},
		{inst.CAFile, caPEM},
	} {
		if err := os.WriteFile(f.path, f.data, 0o600); err != nil {
			return fail(err)
		}
	}
	inst.CAPool = x509.NewCertPool()
	inst.CAPool.AddCert(ca)
	return certFile, keyFile, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("azurite: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// syncBuffer collects the emulator's output; exec writes it from another
// goroutine.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > 64<<10 {
		return len(p), nil // enough to diagnose; drop the rest
	}
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
