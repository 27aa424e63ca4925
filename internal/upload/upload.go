// Package upload encrypts local files into the skrfs object format and
// uploads them to a store, in parallel with bounded memory, idempotently:
// an object whose metadata records the same keyed fingerprint (plaintext,
// name, key reference and chunk size), key reference and format is
// skipped.
//
// The fingerprint is an HMAC-SHA256 under a secret that storage never
// sees, so metadata reveals neither which files are equal nor whether a
// guessed plaintext is the one stored (an unkeyed digest would confirm
// guesses of low-entropy files). Objects written by older versions, which
// carried an unkeyed skrfs_sha256, have no fingerprint and are uploaded
// again once.
package upload

import (
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/rs/zerolog"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/crypto"
)

// Metadata keys written with every object. Values are unauthenticated
// hints: readers trust only the object header and its MAC.
const (
	MetaFingerprint = "skrfs_fingerprint" // hex keyed fingerprint (Fingerprint)
	MetaKeyRef      = "skrfs_keyref"      // the header's key reference
	MetaHeaderLen   = "skrfs_header_len"  // H, so listings can compute sizes
	MetaChunkSize   = "skrfs_chunk_size"  // C
	MetaVersion     = "skrfs_version"     // format version
)

// Destination is where objects go: blob.Store for the skip check, plus an
// upload. Stat must return metadata.
type Destination interface {
	Stat(ctx context.Context, name string) (blob.Info, error)
	Upload(ctx context.Context, name string, r io.Reader, metadata map[string]string) error
}

// Options configure a run.
type Options struct {
	// KEK seals the objects (a public key suffices for RSA and EC).
	KEK any
	// KeyRef is written into every header.
	KeyRef string
	// ChunkSize of new objects; 0 = crypto.DefaultChunkSize.
	ChunkSize int
	// Suffix is appended to object names in the store (not to the sealed
	// logical name), e.g. ".skrfs"; "" = none.
	Suffix string
	// Parallel is the number of files uploaded at once; 0 = 4.
	Parallel int
	// Force uploads even when an identical object exists.
	Force bool
	// FingerprintKey keys the fingerprint recorded in each object's
	// metadata and compared to skip unchanged files; at least 16 bytes,
	// kept secret from storage. Nil with an oct KEK: derived from the KEK
	// (DeriveFingerprintKey). Nil with an RSA or EC KEK: no fingerprint
	// is written and every file is uploaded.
	FingerprintKey []byte
	// FormatVersion of new objects: 0 or 2 = format version 2 (a batch
	// key per run, docs/format.md 11.3), 1 = version 1.
	FormatVersion int
	// BatchSize is the number of version 2 objects that share one batch
	// key; 0 = the whole run (one private-key operation per run for
	// readers). A leaked batch key exposes its batch only.
	BatchSize int
	// Progress, when non-nil, is called after every file.
	Progress func(Progress)
	// Sealed, when non-nil, is called after each object this run uploads
	// with the header it sealed and the plaintext size (for the signed
	// manifest: manifest.go). Calls may be concurrent.
	Sealed func(f File, header []byte, plainSize int64)
	Logger zerolog.Logger
}

// Progress is a snapshot of a run.
type Progress struct {
	Files, Done, Uploaded, Skipped, Failed int
	Bytes, BytesDone                       int64
}

// Result summarises a run; Errors holds one entry per failed file.
type Result struct {
	Progress
	Errors []error
}

// File is one local file and the logical name it is sealed for.
type File struct {
	Path string
	Name string // '/'-separated, relative
	Size int64
}

// Collect expands sources into files: a file is named by its base name; a
// directory's regular files are named by their path relative to the
// directory. Symbolic links and special files are skipped. Names are
// validated with blob.CheckName and must be unique.
func Collect(sources []string) ([]File, error) {
	var files []File
	seen := map[string]string{}
	add := func(p, name string, size int64) error {
		if err := blob.CheckName(name); err != nil {
			return err
		}
		if strings.HasPrefix(name, crypto.ManifestPrefix) {
			return fmt.Errorf("upload: %s: names under %s are reserved for the dataset's manifest", p, crypto.ManifestPrefix)
		}
		if prev, ok := seen[name]; ok {
			return fmt.Errorf("upload: %s and %s both map to object name %q", prev, p, name)
		}
		seen[name] = p
		files = append(files, File{Path: p, Name: name, Size: size})
		return nil
	}
	for _, src := range sources {
		st, err := os.Stat(src)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			if !st.Mode().IsRegular() {
				return nil, fmt.Errorf("upload: %s is not a regular file", src)
			}
			if err := add(src, filepath.Base(src), st.Size()); err != nil {
				return nil, err
			}
			continue
		}
		err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.Type().IsRegular() {
				return nil
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(src, p)
			return add(p, filepath.ToSlash(rel), info.Size())
		})
		if err != nil {
			return nil, err
		}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	return files, nil
}

// Run uploads files to dst. It returns an error only for problems that stop
// the whole run; per-file failures are in Result.Errors.
func Run(ctx context.Context, dst Destination, files []File, opts Options) Result {
	var res Result
	res.Files = len(files)
	switch opts.FormatVersion {
	case 0, crypto.VersionV2:
		opts.FormatVersion = crypto.VersionV2
	case crypto.Version:
	default:
		res.Failed = len(files)
		res.Errors = []error{fmt.Errorf("upload: unknown format version %d", opts.FormatVersion)}
		return res
	}
	bs := &batches{kek: opts.KEK, keyRef: opts.KeyRef, size: opts.BatchSize}
	defer bs.destroy()
	par := opts.Parallel
	if par <= 0 {
		par = 4
	}
	for _, f := range files {
		res.Bytes += f.Size
	}
	var mu sync.Mutex
	var bytesDone atomic.Int64
	work := make(chan File)
	var wg sync.WaitGroup
	for i := 0; i < par; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := range work {
				skipped, err := one(ctx, dst, f, opts, bs)
				bytesDone.Add(f.Size)
				mu.Lock()
				res.Done++
				switch {
				case err != nil:
					res.Failed++
					res.Errors = append(res.Errors, fmt.Errorf("%s: %w", f.Path, err))
					opts.Logger.Warn().Err(err).Str("file", f.Path).Msg("upload failed")
				case skipped:
					res.Skipped++
				default:
					res.Uploaded++
				}
				res.BytesDone = bytesDone.Load()
				if opts.Progress != nil {
					opts.Progress(res.Progress)
				}
				mu.Unlock()
			}
		}()
	}
	for _, f := range files {
		select {
		case work <- f:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
	return res
}

// one uploads a single file, or skips it when the store already holds an
// object with the same fingerprint, key reference and chunk size.
func one(ctx context.Context, dst Destination, f File, opts Options, bs *batches) (skipped bool, err error) {
	chunk := opts.ChunkSize
	if chunk == 0 {
		chunk = crypto.DefaultChunkSize
	}
	fk := opts.FingerprintKey
	if fk == nil {
		if oct, ok := opts.KEK.([]byte); ok {
			fk = DeriveFingerprintKey(oct)
		}
	} else if len(fk) < 16 {
		return false, fmt.Errorf("upload: fingerprint key of %d bytes, want at least 16", len(fk))
	}
	var sum string
	if fk != nil {
		if sum, err = digest(f.Path, fk, opts.KeyRef, f.Name, chunk); err != nil {
			return false, err
		}
	}
	objName := f.Name + opts.Suffix
	if !opts.Force && fk != nil {
		if info, err := dst.Stat(ctx, objName); err == nil && upToDate(info.Metadata, sum, opts.KeyRef, chunk) {
			opts.Logger.Debug().Str("object", objName).Msg("unchanged, skipped")
			return true, nil
		} else if err != nil && !errors.Is(err, blob.ErrNotFound) {
			return false, err
		}
	}
	in, err := os.Open(f.Path)
	if err != nil {
		return false, err
	}
	defer in.Close()
	var hlen int
	var newWriter func(io.Writer) (io.WriteCloser, error)
	sopts := crypto.SealOptions{Name: f.Name, KeyRef: opts.KeyRef, ChunkSize: chunk}
	if opts.FormatVersion == crypto.Version {
		if hlen, err = crypto.HeaderLen(opts.KEK, opts.KeyRef, f.Name); err != nil {
			return false, err
		}
		newWriter = func(w io.Writer) (io.WriteCloser, error) { return crypto.NewWriter(w, opts.KEK, sopts) }
	} else {
		if hlen, err = crypto.HeaderLenV2(opts.KEK, opts.KeyRef, f.Name); err != nil {
			return false, err
		}
		st, err := in.Stat()
		if err != nil {
			return false, err
		}
		b, err := bs.get()
		if err != nil {
			return false, err
		}
		// The size is known, so the nonces are drawn first and the object
		// streams header first; a file that changes size fails.
		newWriter = func(w io.Writer) (io.WriteCloser, error) { return crypto.NewWriterV2Sized(w, b, sopts, st.Size()) }
	}
	pr, pw := io.Pipe()
	hc := &headCapture{w: pw, want: hlen}
	var plainSize int64
	go func() {
		sw, err := newWriter(hc)
		if err == nil {
			var src io.Reader = in
			var h hash.Hash
			if fk != nil {
				h = newFingerprint(fk, opts.KeyRef, f.Name, chunk)
				src = io.TeeReader(in, h)
			}
			plainSize, err = io.Copy(sw, src)
			if err == nil {
				err = sw.Close()
			}
			// The file changed between fingerprinting and sealing: the
			// fingerprint in the metadata would lie, so fail this object.
			if err == nil && h != nil && hex.EncodeToString(h.Sum(nil)) != sum {
				err = fmt.Errorf("upload: %s changed while it was being uploaded", f.Path)
			}
		}
		pw.CloseWithError(err)
	}()
	md := map[string]string{
		MetaKeyRef:    opts.KeyRef,
		MetaChunkSize: strconv.Itoa(chunk),
		MetaVersion:   strconv.Itoa(opts.FormatVersion),
		MetaHeaderLen: strconv.Itoa(hlen),
	}
	if fk != nil {
		md[MetaFingerprint] = sum
	}
	err = dst.Upload(ctx, objName, pr, md)
	pr.CloseWithError(err)
	if err == nil && opts.Sealed != nil {
		opts.Sealed(f, hc.head, plainSize)
	}
	return false, err
}

// headCapture passes writes through and keeps a copy of the first want
// bytes (the header).
type headCapture struct {
	w    io.Writer
	want int
	head []byte
}

func (c *headCapture) Write(p []byte) (int, error) {
	if k := min(c.want-len(c.head), len(p)); k > 0 {
		c.head = append(c.head, p[:k]...)
	}
	return c.w.Write(p)
}

func upToDate(md map[string]string, sum, keyRef string, chunk int) bool {
	get := func(k string) string { v, _ := blob.MetadataValue(md, k); return v }
	return sum != "" && hmac.Equal([]byte(get(MetaFingerprint)), []byte(sum)) && get(MetaKeyRef) == keyRef &&
		get(MetaChunkSize) == strconv.Itoa(chunk) &&
		(get(MetaVersion) == strconv.Itoa(crypto.Version) || get(MetaVersion) == strconv.Itoa(crypto.VersionV2))
}

// batches hands out the batch keys of a run: one per BatchSize objects
// (all of the run when BatchSize is 0), drawn on first use.
type batches struct {
	kek    any
	keyRef string
	size   int

	mu   sync.Mutex
	cur  *crypto.Batch
	used int
	all  []*crypto.Batch
}

func (b *batches) get() (*crypto.Batch, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cur == nil || (b.size > 0 && b.used >= b.size) {
		nb, err := crypto.NewBatch(b.kek, b.keyRef, nil)
		if err != nil {
			return nil, err
		}
		b.cur, b.used = nb, 0
		b.all = append(b.all, nb)
	}
	b.used++
	return b.cur, nil
}

// destroy wipes every batch key of the run.
func (b *batches) destroy() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, x := range b.all {
		x.Destroy()
	}
	b.all, b.cur = nil, nil
}

// fingerprintLabel separates the fingerprint's HMAC input from any other
// use of its key.
const fingerprintLabel = "skrfs upload fingerprint v1"

// DeriveFingerprintKey derives the fingerprint key of uploads sealed with
// an oct key: HKDF-SHA256 of the key with info "skrfs upload fingerprint
// v1". Every producer holding the key derives the same fingerprint key, so
// their uploads skip each other's unchanged objects; storage, which never
// holds the key, learns nothing from the fingerprints.
func DeriveFingerprintKey(oct []byte) []byte {
	k, err := hkdf.Key(sha256.New, oct, nil, fingerprintLabel, 32)
	if err != nil {
		panic(err) // only for lengths HKDF-SHA256 cannot produce
	}
	return k
}

// newFingerprint returns the HMAC-SHA256 under key of the label, the key
// reference, the logical name and the chunk size, ready for the
// plaintext: two files with equal contents under different names, keys or
// chunk sizes have unrelated fingerprints.
func newFingerprint(key []byte, keyRef, name string, chunk int) hash.Hash {
	h := hmac.New(sha256.New, key)
	for _, s := range []string{fingerprintLabel, keyRef, name} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	var c [8]byte
	binary.BigEndian.PutUint64(c[:], uint64(chunk))
	h.Write(c[:])
	return h
}

// Fingerprint returns the hex fingerprint recorded in the metadata of an
// object sealed from plaintext r for keyRef and name with the given chunk
// size.
func Fingerprint(key []byte, keyRef, name string, chunk int, r io.Reader) (string, error) {
	h := newFingerprint(key, keyRef, name, chunk)
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func digest(p string, key []byte, keyRef, name string, chunk int) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return Fingerprint(key, keyRef, name, chunk, f)
}
