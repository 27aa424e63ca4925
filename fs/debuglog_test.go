package fs

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestRedactPayload(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		// Reads and writes: the data's first bytes.
		{`tx 12:     OK,  32b data "\x01\x02secret"...`, `tx 12:     OK,  32b data <8 bytes>`},
		{`rx 13: WRITE n5 {Fh 1 [0 +11)  L 0 RDWR,0x8000} "hello, w"... 11b p42`, `rx 13: WRITE n5 {Fh 1 [0 +11)  L 0 RDWR,0x8000} <8 bytes> 11b p42`},
		// Names of the entries looked up or changed stay.
		{`rx 2: LOOKUP n1  "keys"  p7`, `rx 2: LOOKUP n1  "keys"  p7`},
		{`rx 3: LOOKUP n1 {} "demo-oct"  p7`, `rx 3: LOOKUP n1 {} "demo-oct"  p7`},
		{`rx 4: RENAME n1 {Newdir 1} "a.txt" "b.txt" p7`, `rx 4: RENAME n1 {Newdir 1} "a.txt" "b.txt" p7`},
		{`rx 5: CREATE n1 {0100644 [WRONLY,CREAT]} "new\"name" p7`, `rx 5: CREATE n1 {0100644 [WRONLY,CREAT]} "new\"name" p7`},
		// xattr: the name stays, the value goes; symlink: the target goes.
		{`rx 6: SETXATTR n2 {sz 5 f0} "user.k" "s3cr3"... 6b p7`, `rx 6: SETXATTR n2 {sz 5 f0} "user.k" <5 bytes> 6b p7`},
		{`tx 7:     OK,  5b data "s3cr3"`, `tx 7:     OK,  5b data <5 bytes>`},
		{`rx 8: SYMLINK n1 {} "link" "/secret/target" p7`, `rx 8: SYMLINK n1 {} "link" <14 bytes> p7`},
		{`tx 9:     OK,  14b data "/secret/target"`, `tx 9:     OK,  14b data <14 bytes>`},
		// Requests without names: any quoted bytes go.
		{`rx 10: READ n4 {Fh 1 [0 +4096)  L 0 RDONLY,0x8000} "abc" p7`, `rx 10: READ n4 {Fh 1 [0 +4096)  L 0 RDONLY,0x8000} <3 bytes> p7`},
		// A cut quote hides the rest of the line.
		{`tx 11:     OK, "unterminated`, `tx 11:     OK, <redacted>`},
		{`rx 1: INIT n0 {7.45 Ra 0x20000 ASYNC_READ} p0`, `rx 1: INIT n0 {7.45 Ra 0x20000 ASYNC_READ} p0`},
	} {
		if got := redactPayload(tc.in); got != tc.want {
			t.Errorf("redactPayload(%s)\n got %s\nwant %s", tc.in, got, tc.want)
		}
	}
}

// TestFuseDebugLogsNoPayload: with the FUSE debug log on, reading key files
// and a plaintext file with a known marker leaves no byte of either in the
// log, neither as text nor as go-fuse's quoted prefix, nor in hex.
func TestFuseDebugLogsNoPayload(t *testing.T) {
	var logs syncBuffer
	const marker = "MARKER-plaintext-7f3a"
	w := newWorld(t, func(w *world) {
		w.put("marker.txt", []byte(marker+" and more"), w.oct.Oct, refOct, "marker.txt")
		w.debugOut = &logs
	})
	var secrets [][]byte
	for _, f := range []string{"keys/demo-oct", "keys/demo-oct.jwk", "keys/demo-rsa", "keys/demo-rsa.jwk", "data/marker.txt"} {
		b, err := os.ReadFile(w.path(f))
		if err != nil || len(b) < 8 {
			t.Fatalf("%s: %v", f, err)
		}
		secrets = append(secrets, b)
	}
	l := logs.String()
	if !strings.Contains(l, "READ") || !strings.Contains(l, `"marker.txt"`) {
		t.Fatalf("the debug log shows no reads or lookups; the check would be empty:\n%s", l)
	}
	for _, s := range secrets {
		first := s[:8]
		q := strconv.Quote(string(first))
		for _, form := range []string{q[:len(q)-1], string(first), hex.EncodeToString(first)} {
			if strings.Contains(l, form) {
				t.Fatalf("payload %q found in the FUSE debug log as %q", first, form)
			}
		}
	}
	if bytes.Contains([]byte(l), []byte(marker[:8])) {
		t.Fatal("the marker is in the log")
	}
}

// FuzzRedactPayload: whatever bytes a request or reply carries (file names
// and data come from users and files), the filter never panics and never
// lets a payload through: the payload, quoted as go-fuse quotes it, is not
// in the output line, and an entry name stays exactly as quoted.
func FuzzRedactPayload(f *testing.F) {
	f.Add("demo-oct", []byte("\x01\x02secret"), uint8(0))
	f.Add("a \"quoted\" name", []byte(`"...`), uint8(1))
	f.Add("x", []byte("\\x00"), uint8(2))
	f.Fuzz(func(t *testing.T, name string, payload []byte, shape uint8) {
		if len(payload) > 64 {
			payload = payload[:64]
		}
		p := fmt.Sprintf("%q", payload)
		var line string
		switch shape % 4 {
		case 0: // a reply with data
			line = fmt.Sprintf("tx 7:     OK,  %db data %s...", len(payload), p)
		case 1: // a write
			line = fmt.Sprintf("rx 8: WRITE n5 {Fh 1 [0 +%d)  L 0 RDWR,0x8000} %s... %db p42", len(payload), p, len(payload))
		case 2: // setxattr: a name, then the value
			line = fmt.Sprintf("rx 9: SETXATTR n2 {sz %d f0} %q %s %db p7", len(payload), name, p, len(payload))
		case 3: // symlink: the link's name, then its target
			line = fmt.Sprintf("rx 10: SYMLINK n1 {} %q %s p7", name, p)
		}
		out := redactPayload(line)
		if len(payload) >= 3 && strings.Contains(out, p) && !strings.Contains(fmt.Sprintf("%q", name), p) {
			t.Fatalf("payload %s passed: %s", p, out)
		}
		if shape%4 >= 2 && !strings.Contains(out, fmt.Sprintf("%q", name)) {
			t.Fatalf("name %q lost: %s", name, out)
		}
	})
}
