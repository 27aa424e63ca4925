// Package deliver releases keys and decrypts datasets into a directory,
// without FUSE: `skrfs fetch` and `skrfs run --no-fuse`. The layout is the
// mount's (DIR/keys/<view>, DIR/<dataset>/<path>), a file appears under its
// name only once every chunk of it has authenticated, and Wipe overwrites
// and removes everything delivered.
//
// It is for TEEs where FUSE is impossible or pointless: inside an SGX
// enclave (Gramine implements no mount, and FUSE would hand every plaintext
// page to the untrusted kernel), in pods without /dev/fuse, and for init
// containers and batch jobs. The directory must be memory inside the TEE:
// CheckMemoryBacked refuses a disk-backed one.
package deliver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/keyrelease"
)

var (
	// ErrTooLarge: the plaintext would exceed Options.MaxBytes.
	ErrTooLarge = errors.New("deliver: size limit exceeded")
	// ErrKeyNotAllowed: an object names a key its dataset may not use.
	ErrKeyNotAllowed = fmt.Errorf("%w: object names a key that is not configured for this dataset", keyrelease.ErrNotAllowed)
	// ErrUnsafeName: an object name that cannot be a path under the
	// dataset directory ("..", empty components, control characters).
	ErrUnsafeName = errors.New("deliver: unsafe object name")
	// ErrNotEmpty: the delivery directory holds files already.
	ErrNotEmpty = errors.New("deliver: directory is not empty")
)

// Key is a configured key and its views under keys/.
type Key struct {
	Name  string
	Ref   keyrelease.KeyRef
	Views []View
}

// View is one file of a key: keyrelease.Format* rendering, file name, mode.
type View struct {
	File, Format string
	Mode         os.FileMode
}

// Dataset is an encrypted tree delivered under DIR/<Name>.
type Dataset struct {
	Name   string
	Store  blob.Store
	Suffix string // object name suffix stripped from file names ("" = none)
	// Keys are the only keys its objects may name (a reference without a
	// version accepts any version), as the mount enforces.
	Keys []keyrelease.KeyRef
	// Manifest, when not nil, enforces the dataset's signed manifest
	// (manifest.go).
	Manifest *Manifest
}

// Options configure Fetch.
type Options struct {
	// Releaser releases keys; cmd passes the same allow-listed, cached
	// releaser as the mount's.
	Releaser keyrelease.Releaser
	Keys     []Key
	Datasets []Dataset
	// MaxBytes bounds the plaintext written, key views included
	// (0 = no limit).
	MaxBytes int64
	// FileMode and DirMode are the modes of delivered files and
	// directories (0 = 0400 and 0500).
	FileMode, DirMode os.FileMode
	// Chown makes UID and GID own what is delivered (false = the caller).
	Chown    bool
	UID, GID int
	Logger   zerolog.Logger
}

// Stats counts what Fetch delivered.
type Stats struct {
	Files int
	Bytes int64
	// Denied names the keys whose release was denied: their views are
	// not delivered.
	Denied []string
}

// Fetch delivers opts' keys and datasets into dir, which must be empty or
// absent (it is then created, mode 0700). On any error, everything already
// delivered is wiped (Wipe) and the error is returned: a fetch delivers all
// or nothing.
func Fetch(ctx context.Context, dir string, opts Options) (st Stats, err error) {
	if opts.FileMode == 0 {
		opts.FileMode = 0o400
	}
	if opts.DirMode == 0 {
		opts.DirMode = 0o500
	}
	if err := prepareDir(dir); err != nil {
		return st, err
	}
	f := &fetcher{dir: dir, o: opts}
	defer func() {
		if err != nil {
			if werr := Wipe(dir, false); werr != nil {
				opts.Logger.Error().Err(werr).Str("dir", dir).Msg("wiping after a failed fetch")
			}
		}
	}()
	if err := f.keys(ctx); err != nil {
		return f.st, err
	}
	for i := range opts.Datasets {
		if err := f.dataset(ctx, &opts.Datasets[i]); err != nil {
			return f.st, err
		}
	}
	if err := f.finish(); err != nil {
		return f.st, err
	}
	return f.st, nil
}

// prepareDir creates dir (0700) or checks that it is an empty directory.
func prepareDir(dir string) error {
	fi, err := os.Lstat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return os.MkdirAll(dir, 0o700)
	}
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if len(ents) > 0 {
		return fmt.Errorf("%w: %s (delivery never mixes with, nor wipes, files it did not write)", ErrNotEmpty, dir)
	}
	return nil
}

type fetcher struct {
	dir  string
	o    Options
	st   Stats
	dirs []string // directories created, to chmod at the end
}

func (f *fetcher) reserve(n int64) error {
	if f.o.MaxBytes > 0 && f.st.Bytes+n > f.o.MaxBytes {
		return fmt.Errorf("%w: %d bytes delivered, %d more would pass the limit of %d", ErrTooLarge, f.st.Bytes, n, f.o.MaxBytes)
	}
	return nil
}

func (f *fetcher) mkdir(rel string) error {
	p := filepath.Join(f.dir, rel)
	if err := os.Mkdir(p, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil
		}
		return err
	}
	f.dirs = append(f.dirs, p)
	return nil
}

// keys writes every view of every key under keys/.
func (f *fetcher) keys(ctx context.Context) error {
	if len(f.o.Keys) == 0 {
		return nil
	}
	if err := f.mkdir("keys"); err != nil {
		return err
	}
	for _, k := range f.o.Keys {
		key, err := f.o.Releaser.Release(ctx, k.Ref)
		if errors.Is(err, keyrelease.ErrDenied) {
			// As in the mount, where only this key's files fail to open
			// (EACCES): its views are absent, everything else is
			// delivered. Objects sealed with it still fail the fetch.
			f.o.Logger.Warn().Err(err).Str("key", k.Name).Str("ref", k.Ref.String()).Msg("key release denied: its files are not delivered")
			f.st.Denied = append(f.st.Denied, k.Name)
			continue
		}
		if err != nil {
			return fmt.Errorf("key %s: %w", k.Name, err)
		}
		for _, v := range k.Views {
			data, err := key.Marshal(v.Format)
			if errors.Is(err, keyrelease.ErrNoPublicKey) {
				// The default views include pub.pem for every key; an
				// oct key has none (the mount's file fails to open).
				f.o.Logger.Info().Str("key", k.Name).Str("view", v.File).Msg("view skipped: oct keys have no public part")
				continue
			}
			if err != nil {
				key.Wipe()
				return fmt.Errorf("key %s view %s: %w", k.Name, v.File, err)
			}
			err = f.reserve(int64(len(data)))
			if err == nil {
				err = f.writeFile(filepath.Join("keys", v.File), v.Mode, func(w io.Writer) error {
					_, err := w.Write(data)
					return err
				})
			}
			clear(data)
			if err != nil {
				key.Wipe()
				return err
			}
			f.st.Bytes += int64(len(data))
		}
		key.Wipe()
		f.o.Logger.Info().Str("key", k.Name).Str("ref", k.Ref.String()).Int("views", len(k.Views)).Msg("key delivered")
	}
	return nil
}

// dataset delivers every object of d.
func (f *fetcher) dataset(ctx context.Context, d *Dataset) error {
	if err := f.mkdir(d.Name); err != nil {
		return err
	}
	var m *crypto.Manifest
	if d.Manifest != nil {
		var err error
		if m, err = loadManifest(ctx, d); err != nil {
			return fmt.Errorf("dataset %s: manifest: %w", d.Name, err)
		}
	}
	var infos []blob.Info
	seen := map[string]bool{}
	err := d.Store.List(ctx, blob.ListOptions{}, func(i blob.Info) error {
		if !i.IsPrefix && strings.HasSuffix(i.Name, d.Suffix) && len(i.Name) > len(d.Suffix) &&
			!strings.HasPrefix(i.Name, crypto.ManifestPrefix) {
			if m != nil {
				name := strings.TrimSuffix(i.Name, d.Suffix)
				if _, listed := m.Lookup(name); !listed {
					f.o.Logger.Warn().Str("dataset", d.Name).Str("object", name).Msg("object not listed in the manifest: not delivered")
					return nil
				}
				seen[name] = true
			}
			infos = append(infos, i)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("dataset %s: listing: %w", d.Name, err)
	}
	if m != nil {
		for _, e := range m.Entries {
			if !seen[e.Name] {
				return fmt.Errorf("dataset %s: %s: %w (epoch %d)", d.Name, e.Name, ErrManifestMissing, m.Epoch)
			}
		}
	}
	keys := map[keyrelease.KeyRef]*keyrelease.Key{}
	defer func() {
		for _, k := range keys {
			k.Wipe()
		}
	}()
	for _, info := range infos {
		name := strings.TrimSuffix(info.Name, d.Suffix)
		if err := checkName(name); err != nil {
			return fmt.Errorf("dataset %s: %q: %w", d.Name, info.Name, err)
		}
		var want *crypto.ManifestEntry
		if m != nil {
			e, _ := m.Lookup(name)
			want = &e
		}
		if err := f.object(ctx, d, info, name, keys, want); err != nil {
			return fmt.Errorf("dataset %s: %s: %w", d.Name, name, err)
		}
	}
	f.o.Logger.Info().Str("dataset", d.Name).Int("objects", len(infos)).Msg("dataset delivered")
	return nil
}

// object verifies and decrypts one object into a temporary file, renamed
// to its name only after the last chunk authenticated.
func (f *fetcher) object(ctx context.Context, d *Dataset, info blob.Info, name string, keys map[keyrelease.KeyRef]*keyrelease.Key, want *crypto.ManifestEntry) error {
	dec, src, err := openObject(ctx, d, info, name, want, func(ref keyrelease.KeyRef) (*keyrelease.Key, error) {
		k := keys[ref]
		if k == nil {
			var err error
			if k, err = f.o.Releaser.Release(ctx, ref); err != nil {
				return nil, err
			}
			keys[ref] = k
		}
		return k, nil
	})
	if err != nil {
		return err
	}
	if err := f.reserve(dec.PlainSize()); err != nil {
		return err
	}
	parts := strings.Split(name, "/")
	rel := d.Name
	for _, p := range parts[:len(parts)-1] {
		rel = filepath.Join(rel, p)
		if err := f.mkdir(rel); err != nil {
			return err
		}
	}
	err = f.writeFile(filepath.Join(d.Name, filepath.FromSlash(name)), f.o.FileMode, func(w io.Writer) error {
		_, err := dec.Stream(w, src)
		return err
	})
	if err != nil {
		return err
	}
	f.st.Bytes += dec.PlainSize()
	return nil
}

// openObject reads and parses the header of the version info pins, checks
// it against the manifest entry want (when not nil) before any release,
// checks its key reference against the dataset's keys, gets the key from
// key (which owns it), and returns the object's decryptor (header MAC and
// name verified) and the version-pinned reader of the object.
func openObject(ctx context.Context, d *Dataset, info blob.Info, name string, want *crypto.ManifestEntry,
	key func(keyrelease.KeyRef) (*keyrelease.Key, error)) (*crypto.Decryptor, io.ReaderAt, error) {
	src := blob.ReaderAt(ctx, d.Store, info.Ref())
	head := make([]byte, min(info.Size, int64(crypto.MaxHeaderSize)))
	if n, err := src.ReadAt(head, 0); n != len(head) {
		return nil, nil, fmt.Errorf("reading the header: %w", err)
	}
	h, err := crypto.ParseHeader(head)
	if err != nil {
		return nil, nil, err
	}
	if want != nil && crypto.HeaderDigest(h.Bytes()) != want.HeaderSHA256 {
		return nil, nil, ErrManifestMismatch // before any key release
	}
	ref, err := allowedRef(d, h.KeyRef)
	if err != nil {
		return nil, nil, err
	}
	k, err := key(ref)
	if err != nil {
		return nil, nil, fmt.Errorf("key %s: %w", ref, err)
	}
	var opts crypto.OpenOptions
	if h.Version == crypto.VersionV2 {
		if opts.Table, err = crypto.ReadTable(src, info.Size, h, head); err != nil {
			return nil, nil, fmt.Errorf("reading the nonce table: %w", err)
		}
	}
	dec, err := crypto.NewDecryptorOpts(h, k.KEK(), name, info.Size, opts)
	if err != nil {
		return nil, nil, err
	}
	if want != nil && dec.PlainSize() != want.Size {
		return nil, nil, fmt.Errorf("%w: size %d, listed %d", ErrManifestMismatch, dec.PlainSize(), want.Size)
	}
	return dec, src, nil
}

// allowedRef returns the reference to release for a header's key
// reference, if the dataset may use that key (the mount's rule).
func allowedRef(d *Dataset, s string) (keyrelease.KeyRef, error) {
	hdr, err := keyrelease.ParseKeyRef(s)
	if err != nil {
		return keyrelease.KeyRef{}, fmt.Errorf("%w: header key reference %q: %v", ErrKeyNotAllowed, s, err)
	}
	for _, allowed := range d.Keys {
		if allowed.Matches(hdr) {
			r := allowed
			if r.Version == "" {
				r.Version = hdr.Version
			}
			return r, nil
		}
	}
	return keyrelease.KeyRef{}, fmt.Errorf("%w: %s", ErrKeyNotAllowed, hdr)
}

// checkName accepts '/'-separated relative names whose components are
// neither empty, "." nor "..", without NUL or other control characters.
func checkName(name string) error {
	if name == "" || strings.HasPrefix(name, "/") || strings.ContainsRune(name, '\\') {
		return ErrUnsafeName
	}
	for _, p := range strings.Split(name, "/") {
		if p == "" || p == "." || p == ".." || len(p) > 255 {
			return ErrUnsafeName
		}
		for _, c := range p {
			if c < 0x20 || c == 0x7f {
				return ErrUnsafeName
			}
		}
	}
	return nil
}

// tempPrefix marks files being written; they are never left behind.
const tempPrefix = ".skrfs-partial-"

// writeFile writes rel through a temporary file in the same directory and
// renames it into place only when write succeeded; on failure the partial
// plaintext is overwritten and removed.
func (f *fetcher) writeFile(rel string, mode os.FileMode, write func(io.Writer) error) error {
	final := filepath.Join(f.dir, rel)
	if _, err := os.Lstat(final); err == nil {
		return fmt.Errorf("%s is delivered twice", rel)
	}
	tmp, err := os.CreateTemp(filepath.Dir(final), tempPrefix+"*")
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			wipeFile(tmp.Name())
		}
	}()
	err = write(tmp)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), mode); err != nil {
		return err
	}
	if f.o.Chown {
		if err := os.Lchown(tmp.Name(), f.o.UID, f.o.GID); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return err
	}
	ok = true
	f.st.Files++
	return nil
}

// finish sets the directories' modes and owners, deepest first.
func (f *fetcher) finish() error {
	dirs := append([]string{f.dir}, f.dirs...)
	for i := len(dirs) - 1; i >= 0; i-- {
		if f.o.Chown {
			if err := os.Lchown(dirs[i], f.o.UID, f.o.GID); err != nil {
				return err
			}
		}
		if err := os.Chmod(dirs[i], f.o.DirMode); err != nil {
			return err
		}
	}
	return nil
}

// Wipe overwrites every regular file under dir with zeros, then removes it,
// and removes the directories; dir itself is removed too when removeDir.
// It keeps going past errors and returns the first.
func Wipe(dir string, removeDir bool) error {
	var first error
	note := func(err error) {
		if err != nil && first == nil {
			first = err
		}
	}
	// Writable first: delivered directories are read-only.
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o700)
		}
		return nil
	})
	var dirs []string
	note(filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			note(err)
			return nil
		}
		if d.IsDir() {
			dirs = append(dirs, p)
			return nil
		}
		note(wipeFile(p))
		return nil
	}))
	for i := len(dirs) - 1; i >= 0; i-- {
		if dirs[i] == dir && !removeDir {
			continue
		}
		note(os.Remove(dirs[i]))
	}
	return first
}

// wipeFile overwrites a regular file's bytes with zeros and removes it;
// other entries (symlinks the delivery never writes) are only removed.
func wipeFile(p string) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	if fi.Mode().IsRegular() {
		os.Chmod(p, 0o600)
		if fd, err := os.OpenFile(p, os.O_WRONLY|syscall.O_NOFOLLOW, 0); err == nil {
			zeros := make([]byte, 64<<10)
			for off := int64(0); off < fi.Size(); off += int64(len(zeros)) {
				if _, err := fd.WriteAt(zeros[:min(int64(len(zeros)), fi.Size()-off)], off); err != nil {
					break
				}
			}
			fd.Sync()
			fd.Close()
		}
	}
	return os.Remove(p)
}
