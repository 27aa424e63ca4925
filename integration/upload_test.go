package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/blob/azblob"
	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/integration/azurite"
)

// TestUploadAzurite is the acceptance test of `skrfs upload` and `skrfs ls`
// against a real storage server: a tree of 1,000 small files and one large
// file (1 GiB unless SKRFS_TEST_BIG_SIZE says otherwise) is uploaded, a second
// run uploads nothing, a changed file is uploaded again, and every object in
// the container decrypts to the original bytes.
func TestUploadAzurite(t *testing.T) {
	if testing.Short() {
		t.Skip("large upload skipped in -short mode")
	}
	bin := skrfsBin(t)
	az := azurite.Start(t, azurite.Options{})
	az.CreateContainer(t, "data")
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	oct := make([]byte, 32)
	rand.Read(oct)
	keyFile := filepath.Join(dir, "oct.key")
	os.WriteFile(keyFile, oct, 0o600)

	want := map[string][32]byte{}
	for i := 0; i < 1000; i++ {
		name := fmt.Sprintf("small/%02d/file-%04d.txt", i%10, i)
		data := []byte(strings.Repeat(fmt.Sprintf("line %d of a small file\n", i), i%50))
		writeFile(t, filepath.Join(src, filepath.FromSlash(name)), data)
		want[name] = sha256.Sum256(data)
	}
	bigSize := int64(1 << 30)
	if s := os.Getenv("SKRFS_TEST_BIG_SIZE"); s != "" {
		fmt.Sscan(s, &bigSize)
	}
	want["big.bin"] = writeRandomFile(t, filepath.Join(src, "big.bin"), bigSize)

	url := az.ContainerURL("data") + "/ds"
	env := append(os.Environ(), "AZURE_STORAGE_CONNECTION_STRING="+az.ConnectionString())
	upload := func() string {
		t.Helper()
		cmd := exec.Command(bin, "upload", "--key", keyFile, "--key-ref", "https://v.vault.azure.net/keys/k", "--to", url, src)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("upload: %v\n%s", err, out)
		}
		return string(out)
	}
	if out := upload(); !strings.Contains(out, "1001 uploaded, 0 unchanged, 0 failed") {
		t.Fatalf("first upload: %s", out)
	}
	if out := upload(); !strings.Contains(out, "0 uploaded, 1001 unchanged, 0 failed") {
		t.Fatalf("second upload: %s", out)
	}
	changed := []byte("new contents")
	writeFile(t, filepath.Join(src, "small", "03", "file-0003.txt"), changed)
	want["small/03/file-0003.txt"] = sha256.Sum256(changed)
	if out := upload(); !strings.Contains(out, "1 uploaded, 1000 unchanged, 0 failed") {
		t.Fatalf("upload after a change: %s", out)
	}

	// ls reads every header.
	cmd := exec.Command(bin, "ls", url)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ls: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 1002 || !strings.Contains(string(out), fmt.Sprintf("%d  65536  https://v.vault.azure.net/keys/k  big.bin", bigSize)) {
		t.Fatalf("ls printed %d lines:\n%s", len(lines), strings.Join(lines[:min(5, len(lines))], "\n"))
	}

	// Every object decrypts to the original.
	ctx := context.Background()
	st, err := azblob.Open(ctx, azblob.Config{ContainerURL: url, AccountKey: az.AccountKey, Transport: az.HTTPClient})
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	err = st.List(ctx, blob.ListOptions{}, func(info blob.Info) error {
		seen++
		sum, ok := want[info.Name]
		if !ok {
			return fmt.Errorf("unexpected object %q", info.Name)
		}
		hdr := make([]byte, min(info.Size, 4096))
		if _, err := st.ReadAt(ctx, info.Ref(), hdr, 0); err != nil {
			return err
		}
		h, err := crypto.ParseHeader(hdr)
		if err != nil {
			return err
		}
		var opts crypto.OpenOptions
		if h.Version == crypto.VersionV2 {
			off, n, err := h.TableRange(info.Size)
			if err != nil {
				return err
			}
			opts.Table = make([]byte, n)
			if _, err := st.ReadAt(ctx, info.Ref(), opts.Table, off); err != nil && err != io.EOF {
				return err
			}
		}
		d, err := crypto.NewDecryptorOpts(h, oct, info.Name, info.Size, opts)
		if err != nil {
			return fmt.Errorf("%s: %w", info.Name, err)
		}
		hash := sha256.New()
		if _, err := d.Stream(hash, blob.ReaderAt(ctx, st, info.Ref())); err != nil {
			return fmt.Errorf("%s: %w", info.Name, err)
		}
		if !bytes.Equal(hash.Sum(nil), sum[:]) {
			return fmt.Errorf("%s: plaintext differs", info.Name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen != len(want) {
		t.Fatalf("%d objects in the container, want %d", seen, len(want))
	}
}

func writeFile(t *testing.T, p string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeRandomFile writes size pseudo-random bytes and returns their SHA-256.
func writeRandomFile(t *testing.T, p string, size int64) [32]byte {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := mrand.NewChaCha8([32]byte{1})
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		n := min(left, int64(len(buf)))
		r.Read(buf[:n])
		h.Write(buf[:n])
		if _, err := f.Write(buf[:n]); err != nil {
			t.Fatal(err)
		}
		left -= n
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}
