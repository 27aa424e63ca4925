package harden

import (
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestApply(t *testing.T) {
	r := Apply()
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_CORE, &lim); err != nil || lim.Cur != 0 || !r.NoCoreDumps {
		t.Fatalf("RLIMIT_CORE = %+v, %v", lim, err)
	}
	if d, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0); err != nil || d != 0 || !r.NotDumpable {
		t.Fatalf("dumpable = %d, %v", d, err)
	}
	if os.Geteuid() == 0 {
		status, _ := os.ReadFile("/proc/self/status")
		if !r.MemLocked || !strings.Contains(string(status), "VmLck") {
			t.Fatalf("mlockall as root failed: %v", r.Err())
		}
	}
}
