package fs

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Unmodified programs write through a writable mount; a second mount of
// the same store (a remount) sees what they wrote.
func TestWritePrograms(t *testing.T) {
	w := newWorld(t, writable, func(w *world) {
		prev := w.tune
		w.tune = func(o *Options) {
			prev(o)
			o.ListTTL = time.Millisecond // the second mount sees new names at once
		}
	})
	again := w.mountAgain()
	src := t.TempDir()
	files := map[string][]byte{
		"top.txt":           []byte("top\n"),
		"a/b/c.bin":         pseudo(31, 300<<10+7),
		"a/empty":           nil,
		"a/b/d/deep.txt":    []byte("deep\n"),
		"other/x.dat":       pseudo(32, 70<<10),
		"other/y with sp":   []byte("spaces\n"),
		"a/b/d/second.json": []byte(`{"k": 1}`),
	}
	for name, body := range files {
		p := filepath.Join(src, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	same := func(t *testing.T, root string) {
		t.Helper()
		for name, body := range files {
			got, err := os.ReadFile(filepath.Join(root, name))
			if err != nil || !bytes.Equal(got, body) {
				t.Fatalf("%s: %v, %d bytes, want %d", name, err, len(got), len(body))
			}
		}
	}
	for _, tc := range []struct {
		name string
		dir  string
		run  func(t *testing.T, dst string)
	}{
		{"cp -a", "cpa", func(t *testing.T, dst string) { run(t, "cp", "-a", src, dst) }},
		{"tar x", "tarx", func(t *testing.T, dst string) {
			tarPath := filepath.Join(t.TempDir(), "t.tar")
			run(t, "tar", "-cf", tarPath, "-C", src, ".")
			os.Mkdir(dst, 0o755)
			run(t, "tar", "-xf", tarPath, "-C", dst)
		}},
		{"rsync", "rsync", func(t *testing.T, dst string) { run(t, requireTool(t, "rsync"), "-a", src+"/", dst+"/") }},
		{"rsync again (unchanged)", "rsync", func(t *testing.T, dst string) { run(t, "rsync", "-a", src+"/", dst+"/") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := w.path("data/" + tc.dir)
			tc.run(t, dst)
			same(t, dst)
			same(t, strings.Replace(dst, w.mnt, again, 1))
		})
	}
	t.Run("append with >>", func(t *testing.T) {
		log := w.path("data/app.log")
		var want string
		for i := range 5 {
			line := strings.Repeat("x", i) + "\n"
			want += line
			run(t, "sh", "-c", "printf '"+strings.TrimSuffix(line, "\n")+"\\n' >> "+log)
		}
		for _, p := range []string{log, filepath.Join(again, "data/app.log")} {
			if got, err := os.ReadFile(p); err != nil || string(got) != want {
				t.Fatalf("%s: %q %v, want %q", p, got, err, want)
			}
		}
	})
	t.Run("sqlite3", func(t *testing.T) {
		db := w.path("data/db/test.sqlite")
		os.Mkdir(filepath.Dir(db), 0o755)
		sq := requireTool(t, "sqlite3")
		run(t, sq, db, "create table t(k integer primary key, v text); begin; "+strings.Repeat("insert into t(v) values (hex(randomblob(300)));", 2000)+" commit;")
		run(t, sq, db, "begin; update t set v = 'changed' where k % 7 = 0; delete from t where k % 11 = 0; commit;")
		out := run(t, sq, filepath.Join(again, "data/db/test.sqlite"), "pragma integrity_check; select count(*) from t; select count(*) from t where v = 'changed';")
		if out != "ok\n1819\n260\n" {
			t.Fatalf("sqlite3 through the other mount: %q", out)
		}
	})
	t.Run("python random writes", func(t *testing.T) {
		py := requireTool(t, "python3")
		script := `
import os, random, sys
p = sys.argv[1]
random.seed(7)
ref = bytearray()
with open(p, "w+b") as f:
    for i in range(300):
        off = random.randrange(0, 2_000_000)
        data = os.urandom(random.randrange(1, 70000))
        f.seek(off); f.write(data)
        if off > len(ref): ref.extend(b"\0" * (off - len(ref)))
        ref[off:off+len(data)] = data
        if i % 50 == 0:
            f.flush(); os.fsync(f.fileno())
        g = random.randrange(0, len(ref))
        f.seek(g)
        if f.read(1000) != bytes(ref[g:g+1000]): sys.exit("mismatch at %d" % g)
with open(p + ".ref", "wb") as r: r.write(ref)
`
		ref := filepath.Join(t.TempDir(), "py")
		sp := filepath.Join(t.TempDir(), "w.py")
		os.WriteFile(sp, []byte(script), 0o644)
		out, err := exec.Command(py, sp, w.path("data/py.bin")).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		want, err := os.ReadFile(w.path("data/py.bin.ref"))
		if err != nil {
			t.Fatal(err)
		}
		_ = ref
		got, err := os.ReadFile(filepath.Join(again, "data/py.bin"))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("python's file through the other mount: %v, %d bytes, want %d", err, len(got), len(want))
		}
	})
}
