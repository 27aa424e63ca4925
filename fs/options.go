package fs

import (
	"context"
	"os"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/keyrelease"
)

// Options configure a filesystem. cmd/skrfs fills them from the
// configuration file (docs/config.md).
type Options struct {
	// Releaser releases keys; normally a keyrelease/cache.Cache. Required.
	Releaser keyrelease.Releaser
	// Keys are the files under keys/.
	Keys []KeySpec
	// Datasets are the directories at the root.
	Datasets []DatasetSpec
	// UID and GID own every file and directory.
	UID, GID uint32
	// FileMode and DirMode are the permission bits of dataset files and of
	// directories (0 = 0400 and 0500).
	FileMode, DirMode uint32
	// CacheBytes bounds the decrypted-chunk cache shared by all files
	// (0 = 64 MiB). Plaintext is only ever held in this memory. With the
	// read-ahead defaults this keeps the daemon well under 128 MiB RSS while
	// streaming.
	CacheBytes int64
	// RangeSize is the size of one coalesced storage read when prefetching
	// (0 = 8 MiB: above the 4 MiB at or below which Azurite hashes every
	// response, and few billed transactions on Azure).
	RangeSize int64
	// MaxReadAhead bounds the adaptive read-ahead window of a sequential
	// reader (0 = 16 MiB).
	MaxReadAhead int64
	// Parallel bounds the storage reads in flight across all open objects
	// (0 = 4); with RangeSize it bounds the memory of reads in flight.
	Parallel int
	// ListTTL is how long a directory listing is reused (0 = 10s).
	ListTTL time.Duration
	// OpTimeout bounds one key release or storage fetch, which run detached
	// from the request that started them, and the storage steps of a
	// lookup, listing or open (0 = 2 min).
	OpTimeout time.Duration
	// Logger receives warnings (tampered chunks, refused objects) and
	// debug events; never key material or plaintext.
	Logger zerolog.Logger
	// Audit receives one event per open of a key file and per first open
	// of an object version: path, caller, key and outcome (audit.go).
	// The zero Logger discards them.
	Audit zerolog.Logger
	// StagingBytes bounds the plaintext of writes held in memory across
	// all files (0 = 64 MiB); past it, staged chunks are sealed under a
	// per-file ephemeral key and spilled to SpillDir (docs/writes.md).
	StagingBytes int64
	// SpillDir holds the unlinked spill files of staged writes (default
	// os.TempDir()). Only ciphertext under memory-only keys goes there.
	SpillDir string
	// Observer is told about storage fetches and failed operations, for
	// metrics (nil = nobody).
	Observer Observer

	// Tests: how many forgotten nodes release memory, and how.
	forgetBurst int64
	freeMemory  func()
}

// Observer receives events for metrics. Its methods are called on the
// read path: they must be quick and safe for concurrent use.
type Observer interface {
	// Fetched reports one storage read (a ranged read, or a streamed
	// range from open to close) and how long it took.
	Fetched(d time.Duration, err error)
	// Failed reports an operation answered with an error number.
	Failed(op string, errno syscall.Errno)
}

// KeySpec is one releasable key and its files.
type KeySpec struct {
	Name  string
	Ref   keyrelease.KeyRef
	Views []ViewSpec
}

// ViewSpec is one file under keys/ showing a key in a format of
// keyrelease.Key.Marshal.
type ViewSpec struct {
	File   string
	Format string
	Mode   uint32
}

// DatasetSpec is one directory of decrypted objects.
type DatasetSpec struct {
	Name  string
	Store blob.Store
	// Suffix is stripped from object names; objects without it are hidden.
	Suffix string
	// Keys are the only key references this dataset's objects may name.
	Keys []keyrelease.KeyRef
	// Versions, when it has an entry for one of Keys (a reference without
	// a version), lists the only versions of that key that objects may be
	// opened with: an object naming another version, or naming none when
	// the key's current version is not listed, is refused (EACCES).
	Versions map[keyrelease.KeyRef][]string
	// ProducerAuthenticated is set when the dataset authenticates its
	// producers (signed manifests). Without it, a dataset whose objects
	// may use an RSA or EC key gets one warning in the log when the key's
	// type becomes known: whoever can write to its storage can seal
	// chosen plaintext with the public key.
	ProducerAuthenticated bool

	// Manifest, when not nil and not ManifestOff, enforces the dataset's
	// signed manifest (manifest.go).
	Manifest *ManifestSpec

	// Write, when not nil, makes the dataset writable: new content is
	// sealed as format version 2 objects for Write.Key (docs/writes.md).
	Write *WriteSpec

	man *manifestState // set by NewRoot when Manifest is enforced
	raw blob.Store     // Store before NewRoot wrapped it: its Writer, CleanTemp
}

// WriteSpec configures the writes of a dataset.
type WriteSpec struct {
	// Key seals every object the mount writes; it must be one of the
	// dataset's Keys.
	Key keyrelease.KeyRef
	// PublicKey, when set, returns the public part of an RSA or EC Key:
	// sealing needs nothing else, so a mount that only writes needs no
	// release. When nil or failing, the key is released and its public
	// part (or oct bytes) used.
	PublicKey func(ctx context.Context) (pub any, version string, err error)
	// Signer, when set on a dataset that enforces a manifest, signs the
	// manifest that each commit, unlink and rename publishes (publish.go).
	// Its public key must be one of the dataset's pinned signers. Without
	// it such a dataset refuses writes (EROFS).
	Signer crypto.ManifestSigner
}

func (o *Options) setDefaults() {
	if o.FileMode == 0 {
		o.FileMode = 0o400
	}
	if o.DirMode == 0 {
		o.DirMode = 0o500
	}
	if o.CacheBytes == 0 {
		o.CacheBytes = 64 << 20
	}
	if o.RangeSize == 0 {
		o.RangeSize = 8 << 20
	}
	if o.MaxReadAhead == 0 {
		o.MaxReadAhead = 16 << 20
	}
	if o.Parallel == 0 {
		o.Parallel = 4
	}
	if o.ListTTL == 0 {
		o.ListTTL = 10 * time.Second
	}
	if o.StagingBytes == 0 {
		o.StagingBytes = 64 << 20
	}
	if o.SpillDir == "" {
		o.SpillDir = os.TempDir()
	}
	if o.OpTimeout == 0 {
		o.OpTimeout = 2 * time.Minute
	}
}
