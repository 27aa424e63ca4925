// Package fakecvm is the devstack's fake Azure confidential VM: a TPM in
// its own process (Debian's swtpm, reached over TCP by the same CGO-free
// go-tpm client the azure-cvm provider uses on /dev/tpmrm0), seeded as an
// Azure paravisor seeds a vTPM: an attestation key at 0x81000003 and an
// HCL report in NV 0x01400001 whose SEV-SNP report (from the devstack's
// fake SNP chain) binds a runtime JSON carrying that key as HCLAkPub.
package fakecvm

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/skrfs/skrfs/keyrelease/attest/cvm"
)

// SWTPM is a running swtpm.
type SWTPM struct {
	// Addr is the TPM, "tcp:127.0.0.1:PORT": the value of
	// attestation.cvm.tpm. It is a small resource manager in front of
	// swtpm's data channel (see proxy).
	Addr string
	cmd  *exec.Cmd
	done chan struct{}
	px   *proxy
}

// ErrNoSWTPM: swtpm is not installed.
var ErrNoSWTPM = errors.New("fakecvm: swtpm is not installed (Debian: apt-get install swtpm; make deps installs it)")

// StartSWTPM starts swtpm with its state in dir (kept across restarts) on
// a free loopback port.
func StartSWTPM(dir string) (*SWTPM, error) {
	bin, err := exec.LookPath("swtpm")
	if err != nil {
		return nil, ErrNoSWTPM
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		ctrl := filepath.Join(dir, "ctrl.sock")
		os.Remove(ctrl)
		cmd := exec.Command(bin, "socket", "--tpm2", "--tpmstate", "dir="+dir,
			"--server", "type=tcp,bindaddr=127.0.0.1,port="+strconv.Itoa(port),
			"--ctrl", "type=unixio,path="+ctrl, "--flags", "not-need-init,startup-clear")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		s := &SWTPM{Addr: "tcp:127.0.0.1:" + strconv.Itoa(port), cmd: cmd, done: make(chan struct{})}
		go func() { cmd.Wait(); close(s.done) }()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			select {
			case <-s.done:
				lastErr = fmt.Errorf("swtpm exited: %s", bytes.TrimSpace(stderr.Bytes()))
			default:
				if px, err := newProxy("127.0.0.1:" + strconv.Itoa(port)); err == nil {
					s.px = px
					s.Addr = "tcp:" + px.addr()
					return s, nil
				}
				time.Sleep(50 * time.Millisecond)
				continue
			}
			break
		}
		s.Close()
		if lastErr == nil {
			lastErr = errors.New("swtpm did not listen")
		}
	}
	return nil, lastErr
}

// Close stops swtpm.
func (s *SWTPM) Close() {
	if s.px != nil {
		s.px.close()
	}
	if s.cmd.Process != nil {
		s.cmd.Process.Kill()
	}
	<-s.done
}

// AKTemplate is the attestation key: RSA-2048 restricted signing key,
// RSASSA-SHA256, as an Azure vTPM's AK.
var AKTemplate = tpm2.TPMTPublic{
	Type:    tpm2.TPMAlgRSA,
	NameAlg: tpm2.TPMAlgSHA256,
	ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
		UserWithAuth: true, NoDA: true, Restricted: true, SignEncrypt: true},
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
		Scheme: tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgRSASSA,
			Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256})},
		KeyBits: 2048,
	}),
	Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: make([]byte, 256)}),
}

// Reporter signs SEV-SNP reports (fakesnp.Device).
type Reporter interface {
	Report(reportData [64]byte) ([]byte, error)
}

// VMConfig is the vm-configuration of the fake HCL's runtime JSON.
type VMConfig struct {
	VMUniqueID string
	SecureBoot bool
}

// Seed provisions t like an Azure paravisor: a fresh AK persisted at
// 0x81000003 (replacing any) and, in NV 0x01400001 (replacing any), an HCL
// report whose SNP report from dev binds the runtime JSON naming the AK.
// It returns the HCL report.
func Seed(t transport.TPM, dev Reporter, vm VMConfig) ([]byte, error) {
	// A primary key is derived from the hierarchy seed and its template:
	// random unique bytes make each seeding a new AK.
	tmpl := AKTemplate
	unique := make([]byte, 256)
	rand.Read(unique)
	tmpl.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: unique})
	ak, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(tmpl),
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("create AK: %w", err)
	}
	defer cvm.Flush(t, ak.ObjectHandle)
	if old, err := (tpm2.ReadPublic{ObjectHandle: cvm.AKHandle}).Execute(t); err == nil {
		if _, err := (tpm2.EvictControl{Auth: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
			ObjectHandle: tpm2.NamedHandle{Handle: cvm.AKHandle, Name: old.Name}, PersistentHandle: cvm.AKHandle}).Execute(t); err != nil {
			return nil, fmt.Errorf("evict old AK: %w", err)
		}
	}
	if _, err := (tpm2.EvictControl{Auth: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle: tpm2.NamedHandle{Handle: ak.ObjectHandle, Name: ak.Name}, PersistentHandle: cvm.AKHandle}).Execute(t); err != nil {
		return nil, fmt.Errorf("persist AK: %w", err)
	}
	pub, err := cvm.RSAPublic(ak.OutPublic)
	if err != nil {
		return nil, err
	}
	runtime, err := json.Marshal(map[string]any{
		"keys": []any{cvm.JWK("HCLAkPub", pub, "sign")},
		"vm-configuration": map[string]any{"console-enabled": false, "secure-boot": vm.SecureBoot, "tpm-enabled": true,
			"tpm-persisted": true, "vmUniqueId": vm.VMUniqueID},
	})
	if err != nil {
		return nil, err
	}
	var rd [64]byte
	sum := sha256.Sum256(runtime)
	copy(rd[:], sum[:])
	report, err := dev.Report(rd)
	if err != nil {
		return nil, err
	}
	hcl, err := BuildHCLReport(report, runtime)
	if err != nil {
		return nil, err
	}
	if err := WriteNV(t, cvm.HCLReportIndex, hcl); err != nil {
		return nil, err
	}
	return hcl, nil
}

// HCLReportSize is the size of the NV index (as on Azure's SNP CVMs; the
// simulators' limit).
const HCLReportSize = 2048

// BuildHCLReport lays out an HCL report (protocol.md 13.1): version 1
// header, the SEV-SNP report, IGVM request data (SNP, SHA-256) and the
// runtime JSON, zero-padded to HCLReportSize.
func BuildHCLReport(report, runtime []byte) ([]byte, error) {
	if len(report) != 1184 {
		return nil, fmt.Errorf("SNP report of %d bytes", len(report))
	}
	end := 0x4D4 + len(runtime)
	if end > HCLReportSize {
		return nil, fmt.Errorf("runtime JSON of %d bytes does not fit a %d-byte HCL report", len(runtime), HCLReportSize)
	}
	b := make([]byte, HCLReportSize)
	le := binary.LittleEndian
	copy(b, "HCLA")
	le.PutUint32(b[4:], 1)
	le.PutUint32(b[8:], uint32(end))
	le.PutUint32(b[12:], 2) // AkCertRequest
	copy(b[0x20:], report)
	le.PutUint32(b[0x4C0:], uint32(20+len(runtime)))
	le.PutUint32(b[0x4C4:], 1)
	le.PutUint32(b[0x4C8:], 2) // SNP
	le.PutUint32(b[0x4CC:], 1) // SHA-256
	le.PutUint32(b[0x4D0:], uint32(len(runtime)))
	copy(b[0x4D4:], runtime)
	return b, nil
}

// WriteNV replaces NV index with data (owner auth, in chunks).
func WriteNV(t transport.TPM, index tpm2.TPMHandle, data []byte) error {
	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	if old, err := (tpm2.NVReadPublic{NVIndex: index}).Execute(t); err == nil {
		if _, err := (tpm2.NVUndefineSpace{AuthHandle: owner, NVIndex: tpm2.NamedHandle{Handle: index, Name: old.NVName}}).Execute(t); err != nil {
			return fmt.Errorf("undefine NV %#x: %w", uint32(index), err)
		}
	}
	pub := tpm2.TPMSNVPublic{NVIndex: index, NameAlg: tpm2.TPMAlgSHA256,
		Attributes: tpm2.TPMANV{OwnerWrite: true, OwnerRead: true, AuthRead: true, AuthWrite: true, NT: tpm2.TPMNTOrdinary, NoDA: true},
		DataSize:   uint16(len(data))}
	if _, err := (tpm2.NVDefineSpace{AuthHandle: owner, PublicInfo: tpm2.New2B(pub)}).Execute(t); err != nil {
		return fmt.Errorf("define NV %#x: %w", uint32(index), err)
	}
	np, err := (tpm2.NVReadPublic{NVIndex: index}).Execute(t)
	if err != nil {
		return err
	}
	for off := 0; off < len(data); off += 512 {
		n := min(512, len(data)-off)
		if _, err := (tpm2.NVWrite{AuthHandle: owner, NVIndex: tpm2.NamedHandle{Handle: index, Name: np.NVName},
			Data: tpm2.TPM2BMaxNVBuffer{Buffer: data[off : off+n]}, Offset: uint16(off)}).Execute(t); err != nil {
			return fmt.Errorf("write NV %#x at %d: %w", uint32(index), off, err)
		}
	}
	return nil
}
