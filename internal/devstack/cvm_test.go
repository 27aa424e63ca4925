package devstack

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCVMStack: --tee cvm writes an azure-cvm configuration for its vTPM
// and keeps its world on restart; a directory seeded for one TEE is
// refused for the other (its keys' policies are for the first).
func TestCVMStack(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s, err := Start(ctx, Options{Dir: dir, Seed: true, TEE: TEECVM})
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := os.ReadFile(filepath.Join(dir, ConfigFile))
	if !strings.Contains(string(cfg), "provider: azure-cvm") || !strings.Contains(string(cfg), "tpm: "+s.SWTPM.Addr) ||
		strings.Contains(string(cfg), "fake:") {
		t.Fatalf("skrfs.yaml:\n%s", cfg)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "cvm", "hcl_report.bin")); err != nil || string(b[:4]) != "HCLA" || len(b) != 2048 {
		t.Fatalf("hcl_report.bin: %v", err)
	}
	s.Close()
	s, err = Start(ctx, Options{Dir: dir, Seed: true, TEE: TEECVM})
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	s.Close()
	if _, err := Start(ctx, Options{Dir: dir, Seed: true}); err == nil || !strings.Contains(err.Error(), "seeded for TEE cvm") {
		t.Fatalf("snp on a cvm directory: %v", err)
	}
	if _, err := Start(ctx, Options{Dir: t.TempDir(), TEE: "tdx"}); err == nil {
		t.Fatal("unknown TEE accepted")
	}
}
