package config

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// DefaultDeliveryMaxSize bounds FUSE-free delivery when delivery.max_size
// is not set: 1 GiB of plaintext, all of it in memory.
const DefaultDeliveryMaxSize = 1 << 30

// Delivery configures FUSE-free delivery: `skrfs fetch` and `skrfs run
// --no-fuse` decrypt into a memory-backed directory instead of mounting.
type Delivery struct {
	// Dir is the delivery directory of `skrfs run --no-fuse` when --dir
	// is not given (default: a new directory under /dev/shm).
	Dir string `yaml:"dir"`
	// EnclaveDir is the in-enclave tmpfs of a Gramine enclave: the path of
	// the manifest's fs.mounts entry of type "tmpfs". Inside an enclave the
	// delivery directory must be it or below it: statfs, answered by
	// Gramine, cannot tell an in-enclave tmpfs from a mount of host files.
	// Absolute.
	EnclaveDir string `yaml:"enclave_dir"`
	// MaxSize bounds the plaintext delivered, keys included: bytes, or a
	// number with a KiB, MiB or GiB suffix (default 1GiB).
	MaxSize string `yaml:"max_size"`
}

// MaxBytes returns delivery.max_size in bytes (validated by Load).
func (d Delivery) MaxBytes() int64 {
	if d.MaxSize == "" {
		return DefaultDeliveryMaxSize
	}
	n, _ := ParseSize(d.MaxSize)
	return n
}

func (d Delivery) validate() error {
	if d.EnclaveDir != "" && !filepath.IsAbs(d.EnclaveDir) {
		return invalid("delivery.enclave_dir", "%q must be an absolute path", d.EnclaveDir)
	}
	if d.MaxSize != "" {
		if n, err := ParseSize(d.MaxSize); err != nil || n <= 0 {
			return invalid("delivery.max_size", "%q is not a positive size such as 512MiB", d.MaxSize)
		}
	}
	return nil
}

// ParseSize parses a byte count: digits with an optional KiB, MiB, GiB or
// TiB suffix (also K, M, G, T; powers of 1024).
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for i, suf := range []string{"K", "M", "G", "T"} {
		for _, form := range []string{suf + "iB", suf} {
			if v, ok := strings.CutSuffix(s, form); ok {
				s, mult = strings.TrimSpace(v), int64(1)<<(10*(i+1))
				goto parse
			}
		}
	}
parse:
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	return n * mult, nil
}
