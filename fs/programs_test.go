package fs

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skrfs/skrfs/internal/progtest"
)

// Unmodified programs read plaintext through the mount. The programs run
// as subprocesses of the serving test process; go-fuse's fork/exec
// deadlocks do not apply because they neither start in nor inherit files
// of the mount.

func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is required for this test (make test installs it): %v", name, err)
	}
	return p
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func tarball(files map[string]string) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for name, body := range files {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body))})
		tw.Write([]byte(body))
	}
	tw.Close()
	return b.Bytes()
}

func zipball(files map[string]string) []byte {
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for name, body := range files {
		w, _ := zw.Create(name)
		w.Write([]byte(body))
	}
	zw.Close()
	return b.Bytes()
}

func TestUnmodifiedPrograms(t *testing.T) {
	sqlite := requireTool(t, "sqlite3")
	openssl := requireTool(t, "openssl")
	files := map[string]string{"a.txt": "alpha\n", "dir/b.txt": strings.Repeat("beta\n", 1000)}
	dbDir := t.TempDir()
	db := filepath.Join(dbDir, "app.db")
	run(t, sqlite, db, "create table t(id integer primary key, v text);"+
		"with recursive c(x) as (select 1 union all select x+1 from c where x < 20000) insert into t select x, hex(randomblob(64)) from c;")
	dbBytes, _ := os.ReadFile(db)
	w := newWorld(t, func(w *world) {
		w.put("archive.tar", tarball(files), w.oct.Oct, refOct, "archive.tar")
		w.put("archive.zip", zipball(files), w.oct.Oct, refOct, "archive.zip")
		w.put("app.db", dbBytes, &w.rk.PublicKey, refRSA, "app.db")
	})

	t.Run("sha256sum and cmp", func(t *testing.T) {
		out := run(t, requireTool(t, "sha256sum"), w.path("data/big.bin"))
		sum := sha256.Sum256(w.plain["big.bin"])
		if !strings.HasPrefix(out, hex.EncodeToString(sum[:])) {
			t.Fatalf("sha256sum: %s", out)
		}
		orig := filepath.Join(t.TempDir(), "big.bin")
		os.WriteFile(orig, w.plain["big.bin"], 0o600)
		run(t, requireTool(t, "cmp"), orig, w.path("data/big.bin"))
	})
	t.Run("tar and unzip list archives", func(t *testing.T) {
		if out := run(t, requireTool(t, "tar"), "-tf", w.path("data/archive.tar")); !strings.Contains(out, "dir/b.txt") {
			t.Fatalf("tar -tf: %s", out)
		}
		if out := run(t, requireTool(t, "unzip"), "-l", w.path("data/archive.zip")); !strings.Contains(out, "dir/b.txt") {
			t.Fatalf("unzip -l: %s", out)
		}
	})
	t.Run("python seeks to random offsets", func(t *testing.T) {
		big := w.plain["big.bin"]
		r := mrand.New(mrand.NewPCG(3, 3))
		var args, want []string
		for i := 0; i < 50; i++ {
			off, n := r.IntN(len(big)-10000), r.IntN(10000)+1
			args = append(args, fmt.Sprintf("%d:%d", off, n))
			s := sha256.Sum256(big[off : off+n])
			want = append(want, hex.EncodeToString(s[:]))
		}
		script := `import sys, hashlib
f = open(sys.argv[1], 'rb')
for a in sys.argv[2:]:
    off, n = map(int, a.split(':'))
    f.seek(off)
    print(hashlib.sha256(f.read(n)).hexdigest())`
		out := run(t, "/usr/bin/python3", append([]string{"-c", script, w.path("data/big.bin")}, args...)...)
		if strings.Join(want, "\n")+"\n" != out {
			t.Fatalf("python random reads differ")
		}
	})
	t.Run("sqlite3 queries an encrypted database", func(t *testing.T) {
		out := run(t, sqlite, "file:"+w.path("data/app.db")+"?immutable=1", "select count(*), sum(length(v)) from t where id % 7 = 3;")
		if strings.TrimSpace(out) != "2857|365696" {
			t.Fatalf("sqlite3: %q", out)
		}
	})
	t.Run("openssl reads the key; a TLS server uses it", func(t *testing.T) {
		run(t, openssl, "pkey", "-in", w.path("keys/demo-rsa"), "-noout")
		progtest.TLSHandshake(t, w.rk, w.path("keys/demo-rsa"))
	})
}
