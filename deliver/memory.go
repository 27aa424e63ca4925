package deliver

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
)

// ErrDiskBacked: the delivery directory is not memory-backed.
var ErrDiskBacked = errors.New("deliver: directory is not memory-backed")

// Filesystem magic numbers (statfs f_type, linux/magic.h) of memory-backed
// filesystems: plaintext there never reaches a disk (tmpfs pages can reach
// swap, which skrfs's threat model already excludes by running in a TEE
// whose memory is encrypted).
const (
	tmpfsMagic = 0x01021994
	ramfsMagic = 0x858458f6
)

// CheckMemoryBacked returns nil when dir (or, if it does not exist yet, its
// nearest existing parent) is on tmpfs or ramfs, else an error wrapping
// ErrDiskBacked that names the filesystem type.
//
// Inside a Gramine enclave statfs is answered by Gramine and cannot tell
// an in-enclave tmpfs from a chroot mount of host files: use CheckEnclaveDir
// there instead.
func CheckMemoryBacked(dir string) error {
	p := dir
	for {
		var st syscall.Statfs_t
		err := syscall.Statfs(p, &st)
		if err == nil {
			switch uint32(st.Type) {
			case tmpfsMagic, ramfsMagic:
				return nil
			}
			return fmt.Errorf("%w: %s is on a filesystem of type %#x, not tmpfs or ramfs (use a memory-backed directory such as /dev/shm or an emptyDir with medium: Memory)", ErrDiskBacked, dir, uint32(st.Type))
		}
		if !errors.Is(err, syscall.ENOENT) || p == filepath.Dir(p) {
			return fmt.Errorf("statfs %s: %w", p, err)
		}
		p = filepath.Dir(p)
	}
}

// ErrNotEnclaveDir: inside an enclave, the delivery directory is not the
// configured in-enclave tmpfs.
var ErrNotEnclaveDir = errors.New("deliver: directory is not the configured in-enclave tmpfs")

// CheckEnclaveDir requires dir to be enclaveDir or below it, both absolute
// and clean: inside Gramine, only a path the operator named in the
// configuration (and mounted as type "tmpfs" in the manifest) is trusted.
func CheckEnclaveDir(dir, enclaveDir string) error {
	if enclaveDir == "" {
		return fmt.Errorf("%w: running in an enclave and delivery.enclave_dir is not configured: name the manifest's in-enclave tmpfs mount there", ErrNotEnclaveDir)
	}
	d, e := filepath.Clean(dir), filepath.Clean(enclaveDir)
	if !filepath.IsAbs(d) || !filepath.IsAbs(e) {
		return fmt.Errorf("%w: %s and %s must be absolute", ErrNotEnclaveDir, dir, enclaveDir)
	}
	if d != e && !strings.HasPrefix(d, e+"/") {
		return fmt.Errorf("%w: %s is not %s (delivery.enclave_dir) or below it", ErrNotEnclaveDir, dir, enclaveDir)
	}
	return nil
}
