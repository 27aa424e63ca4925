package writes

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// twoWriters opens one name in two mounts of one store (two daemons), writes
// other bytes through each, and finishes A before B, by fsync or by close.
// It prints one line per step: "A ok" or "B EIO".
const twoWriters = `
import os, sys, errno
a, b, mode, how = sys.argv[1:5]
flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if mode == "new" else os.O_TRUNC)
fa = os.open(a, flags, 0o644)
fb = os.open(b, flags, 0o644)
os.write(fa, b"written through mount A\n" * 5000)
os.write(fb, b"written through mount B\n" * 7000)
def step(who, f):
    try:
        f()
        print(who, "ok")
    except OSError as e:
        print(who, errno.errorcode.get(e.errno, str(e.errno)))
if how == "fsync":
    step("A", lambda: os.fsync(fa))
    step("B", lambda: os.fsync(fb))
step("A", lambda: os.close(fa))
step("B", lambda: os.close(fb))
`

// TestConcurrentWritersLocal and TestConcurrentWritersAzure: two daemons
// write one name at once; the first to commit wins, the other's fsync or
// close gets EIO, and the stored object holds exactly the winner's bytes:
// nothing is lost silently.
func TestConcurrentWritersLocal(t *testing.T) { concurrentWriters(t, localDataset(t)) }

func TestConcurrentWritersAzure(t *testing.T) { concurrentWriters(t, azureDataset(t)) }

func name(i int) string { return "f" + string(rune('0'+i)) }

func concurrentWriters(t *testing.T, ds dataset) {
	requireTool(t, "python3")
	cfg := config(t, ds)
	a := mount(t, cfg)
	winner := bytes.Repeat([]byte("written through mount A\n"), 5000)
	cases := []struct{ mode, how, want string }{
		{"new", "close", "A ok\nB EIO"},      // O_CREAT|O_EXCL in both: If-None-Match
		{"existing", "close", "A ok\nB EIO"}, // O_TRUNC of one version: If-Match
		{"existing", "fsync", ""},            // the loser's fsync fails
	}
	// The files both writers open exist before mount B starts: a mount
	// sees other mounts' new objects only when its listing cache expires
	// (fs.Options.ListTTL), which this test does not wait for.
	for i, tc := range cases {
		if tc.mode == "existing" {
			if err := os.WriteFile(filepath.Join(a.dir(), name(i)), []byte("the version both writers opened\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	b := mount(t, cfg)
	for i, tc := range cases {
		t.Run(tc.mode+"/"+tc.how, func(t *testing.T) {
			name := name(i)
			if tc.mode == "existing" {
				if _, err := os.Stat(filepath.Join(b.dir(), name)); err != nil {
					t.Fatalf("mount B does not see the committed file: %v", err)
				}
			}
			got := python(t, twoWriters, filepath.Join(a.dir(), name), filepath.Join(b.dir(), name), tc.mode, tc.how)
			got = strings.TrimSpace(got)
			if tc.how == "fsync" {
				// B's close after its failed fsync may report the error
				// again or not; A's fsync and close succeed.
				lines := strings.Split(got, "\n")
				if len(lines) != 4 || lines[0] != "A ok" || lines[1] != "B EIO" || lines[2] != "A ok" {
					t.Fatalf("steps:\n%s\nwant A's fsync and close to succeed and B's fsync to fail with EIO", got)
				}
			} else if got != tc.want {
				t.Fatalf("steps:\n%s\nwant:\n%s\n(mount B log:\n%s)", got, tc.want, b.out)
			}
		})
	}
	a.unmount()
	b.unmount()
	// The loser logged each loss with both versions.
	var lost []map[string]any
	for _, line := range strings.Split(b.out.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && strings.HasPrefix(fmt.Sprint(rec["message"]), "commit lost") {
			lost = append(lost, rec)
		}
	}
	if len(lost) != len(cases) {
		t.Errorf("mount B logged %d lost commits, want %d:\n%s", len(lost), len(cases), b.out)
	}
	for _, rec := range lost {
		opened, current := fmt.Sprint(rec["opened_version"]), fmt.Sprint(rec["current_version"])
		if rec["object"] == nil || opened == "<nil>" || current == "<nil>" || current == "(none)" || opened == current {
			t.Errorf("a lost commit logged without both versions: %v", rec)
		}
	}
	// A third mount reads what the store holds.
	c := mount(t, cfg)
	defer c.unmount()
	for i := range cases {
		stored, err := os.ReadFile(filepath.Join(c.dir(), name(i)))
		if err != nil || !bytes.Equal(stored, winner) {
			t.Errorf("%s: the stored object (%d bytes, %v) is not the winner's %d bytes", name(i), len(stored), err, len(winner))
		}
	}
}
