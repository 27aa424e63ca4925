package writes

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// workload is an unmodified program writing through the mount, and the
// check that what it wrote survived an unmount and a remount.
type workload struct {
	name   string
	tools  []string
	write  func(t *testing.T, dir, src string) // dir: the workload's directory in the mount
	verify func(t *testing.T, dir, src string)
}

var workloads = []workload{
	{
		name: "cp -a", tools: []string{"cp"},
		write: func(t *testing.T, dir, src string) {
			sh(t, `cp -a "$1/." "$2"`, src, dir)
			diffTree(t, src, dir) // read-your-writes, before any remount
		},
		verify: func(t *testing.T, dir, src string) { diffTree(t, src, dir) },
	},
	{
		name: "tar x", tools: []string{"tar"},
		write: func(t *testing.T, dir, src string) {
			sh(t, `tar -C "$1" -cf - . | tar -C "$2" -xf -`, src, dir)
		},
		verify: func(t *testing.T, dir, src string) { diffTree(t, src, dir) },
	},
	{
		name: "rsync -a", tools: []string{"rsync"},
		write: func(t *testing.T, dir, src string) {
			// rsync writes each file to a temporary name and renames it;
			// the second run finds nothing to do.
			sh(t, `rsync -a "$1/" "$2/" && rsync -a "$1/" "$2/"`, src, dir)
		},
		verify: func(t *testing.T, dir, src string) { diffTree(t, src, dir) },
	},
	{
		name: "append-only log", tools: []string{"sh"},
		write: func(t *testing.T, dir, _ string) {
			sh(t, `i=0; while [ $i -lt 150 ]; do echo "log line $i" >> "$1/app.log"; i=$((i+1)); done`, dir)
			checkLog(t, dir)
		},
		verify: func(t *testing.T, dir, _ string) { checkLog(t, dir) },
	},
	{
		name: "sqlite3", tools: []string{"sqlite3"},
		write: func(t *testing.T, dir, _ string) {
			db := filepath.Join(dir, "app.db")
			var sql strings.Builder
			sql.WriteString("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);\n")
			for tx := 0; tx < 20; tx++ {
				sql.WriteString("BEGIN;\n")
				for i := 0; i < 50; i++ {
					fmt.Fprintf(&sql, "INSERT INTO t (v) VALUES ('tx %d row %d %s');\n", tx, i, strings.Repeat("x", 200))
				}
				sql.WriteString("COMMIT;\n")
			}
			sql.WriteString("BEGIN; DELETE FROM t WHERE id % 10 = 0; COMMIT;\n")
			sql.WriteString("BEGIN; INSERT INTO t (v) VALUES ('rolled back'); ROLLBACK;\n")
			sql.WriteString("CREATE INDEX tv ON t (v);\n")
			runSQLite(t, db, sql.String())
			checkDB(t, db)
		},
		verify: func(t *testing.T, dir, _ string) { checkDB(t, filepath.Join(dir, "app.db")) },
	},
	{
		name: "python random offsets", tools: []string{"python3"},
		write: func(t *testing.T, dir, _ string) {
			sum := python(t, randomWrites, filepath.Join(dir, "random.bin"), "7")
			randomSums[filepath.Base(dir)] = strings.TrimSpace(sum)
		},
		verify: func(t *testing.T, dir, _ string) {
			want := randomSums[filepath.Base(dir)]
			got := fmt.Sprintf("%x", fileSum(t, filepath.Join(dir, "random.bin")))
			if want == "" || got != want {
				t.Fatalf("random.bin after the remount: sha256 %s, python wrote %q", got, want)
			}
		},
	},
}

// randomSums holds the SHA-256 python computed of its reference buffer,
// by workload directory.
var randomSums = map[string]string{}

func checkLog(t *testing.T, dir string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "app.log"))
	if err != nil {
		t.Fatal(err)
	}
	var want strings.Builder
	for i := 0; i < 150; i++ {
		fmt.Fprintf(&want, "log line %d\n", i)
	}
	if string(b) != want.String() {
		t.Fatalf("app.log has %d bytes, want the %d of 150 appended lines", len(b), want.Len())
	}
}

func runSQLite(t *testing.T, db, sql string) string {
	t.Helper()
	cmd := exec.Command(requireTool(t, "sqlite3"), "-bail", db)
	cmd.Stdin = strings.NewReader(sql)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sqlite3: %v\n%s", err, out)
	}
	return string(out)
}

func checkDB(t *testing.T, db string) {
	t.Helper()
	out := runSQLite(t, db, "PRAGMA integrity_check;\nSELECT count(*), sum(length(v)) FROM t;\nSELECT count(*) FROM t WHERE v = 'rolled back';\n")
	// 1000 rows, 100 deleted; each value 'tx A row B xxx…'.
	var sum int
	for tx := 0; tx < 20; tx++ {
		for i := 0; i < 50; i++ {
			if (tx*50+i+1)%10 != 0 {
				sum += len(fmt.Sprintf("tx %d row %d ", tx, i)) + 200
			}
		}
	}
	if want := fmt.Sprintf("ok\n900|%d\n0\n", sum); out != want {
		t.Fatalf("sqlite3 checks: %q, want %q", out, want)
	}
}

// randomWrites writes at random offsets through one descriptor, checks
// reads against a reference buffer along the way (read-your-writes),
// truncates down and up, reopens with O_APPEND and O_TRUNC-free
// read-write, and prints the reference's SHA-256.
const randomWrites = `
import os, sys, random, hashlib
path, seed = sys.argv[1], int(sys.argv[2])
rnd = random.Random(seed)
ref = bytearray()

def pwrite(fd, data, off):
    while data:
        n = os.pwrite(fd, data, off)
        data, off = data[n:], off + n

def put(fd, off, data):
    pwrite(fd, data, off)
    if off > len(ref):
        ref.extend(bytes(off - len(ref)))
    ref[off:off + len(data)] = data

def check(fd, n=25):
    size = os.fstat(fd).st_size
    assert size == len(ref), ("size", size, len(ref))
    for _ in range(n):
        off = rnd.randrange(0, len(ref) + 1)
        k = rnd.randrange(0, 300000)
        got = os.pread(fd, k, off)
        assert got == bytes(ref[off:off + k]), ("read", off, k, len(got))

fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
for i in range(150):
    put(fd, rnd.randrange(0, 3 << 20), rnd.randbytes(rnd.randrange(1, 70000)))
    if i % 30 == 29:
        check(fd)
        os.fsync(fd)
        check(fd)
os.ftruncate(fd, 1 << 20)
del ref[1 << 20:]
check(fd)
os.ftruncate(fd, (1 << 20) + 5000)
ref.extend(bytes(5000))
check(fd)
os.close(fd)

with open(path, 'rb') as f:
    assert f.read() == ref, "whole file after close"

fd = os.open(path, os.O_RDWR)
for i in range(40):
    put(fd, rnd.randrange(0, len(ref) + 100000), rnd.randbytes(rnd.randrange(1, 20000)))
check(fd)
os.close(fd)

fd = os.open(path, os.O_WRONLY | os.O_APPEND)
for i in range(10):
    data = rnd.randbytes(rnd.randrange(1, 5000))
    os.write(fd, data)
    ref.extend(data)
os.close(fd)
with open(path, 'rb') as f:
    assert f.read() == ref, "whole file after appends"
print(hashlib.sha256(ref).hexdigest())
`

// TestWorkloadsLocal: every workload writes into a writable local
// dataset; after an unmount and a remount, every one reads back exactly.
func TestWorkloadsLocal(t *testing.T) {
	runWorkloads(t, localDataset(t), workloads)
}

// TestWorkloadsAzure: the tree copies into a dataset on Azurite.
func TestWorkloadsAzure(t *testing.T) {
	runWorkloads(t, azureDataset(t), workloads[:2])
}

func runWorkloads(t *testing.T, ds dataset, wls []workload) {
	src := t.TempDir()
	makeTree(t, src)
	cfg := config(t, ds)
	d := mount(t, cfg)
	written := map[string]bool{}
	for _, wl := range wls {
		t.Run("write/"+wl.name, func(t *testing.T) {
			for _, tool := range wl.tools {
				requireTool(t, tool)
			}
			dir := filepath.Join(d.dir(), safeName(wl.name))
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatalf("mkdir in the mount: %v", err)
			}
			wl.write(t, dir, src)
			written[wl.name] = !t.Failed()
		})
	}
	d.unmount()
	d = mount(t, cfg)
	defer d.unmount()
	for _, wl := range wls {
		t.Run("remount/"+wl.name, func(t *testing.T) {
			if !written[wl.name] {
				t.Skip("its write step failed or was skipped")
			}
			wl.verify(t, filepath.Join(d.dir(), safeName(wl.name)), src)
		})
	}
}

func safeName(s string) string {
	return strings.NewReplacer(" ", "_", "-", "").Replace(s)
}
