package integration

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/skrfs/skrfs/crypto"
)

// tamperChunk is the chunk size of the tampered objects: small, so that
// one 4 KiB read is one chunk.
const tamperChunk = 4096

// tamperCase is one object as storage serves it and what the mount must
// do with it.
type tamperCase struct {
	name string
	obj  []byte
	// pt is the plaintext the mount must show when the object is valid
	// (nil: it must never read whole).
	pt []byte
	// openErr is the errno of the open (0: the open succeeds).
	openErr syscall.Errno
	// badChunks are the chunks whose reads fail with EIO when the open
	// succeeds; every other chunk reads right.
	badChunks []int64
}

func flipAt(obj []byte, i int, bit byte) []byte {
	b := bytes.Clone(obj)
	b[i] ^= bit
	return b
}

// tamperMatrix returns every case of the format's tamper matrix
// (crypto/crypto_test.go: TestTamperMatrix) for an object sealed for name
// with the rig's key k1, plus the cases that involve the filesystem's key
// configuration.
func tamperMatrix(r *storageRig, name string) []tamperCase {
	t := r.t
	pt := pseudoBytes(5, 3*tamperChunk+7) // 4 chunks: 3 full, 1 of 7 bytes
	seal := func(pt []byte, key, sealedFor string) []byte {
		k := r.keys[key]
		obj, err := crypto.Seal(pt, k.Oct, crypto.SealOptions{Name: sealedFor, KeyRef: k.Ref.String(), ChunkSize: tamperChunk})
		if err != nil {
			t.Fatal(err)
		}
		return obj
	}
	obj := seal(pt, "k1", name)
	other := seal(pt, "k1", name) // same key, name and plaintext; another DEK
	h, err := crypto.ParseHeader(obj)
	if err != nil {
		t.Fatal(err)
	}
	H := h.Len()
	T := tamperChunk + crypto.TagSize
	body := func(i int) int { return H + i*T }
	// Header field offsets (docs/format.md section 2.2).
	krl, kr := 33, 35
	nl := kr + len(h.KeyRef)
	nm := nl + 2
	wl := nm + len(h.Name)
	wr := wl + 2
	mac := H - crypto.MACSize

	swapped := bytes.Clone(obj)
	copy(swapped[body(0):body(1)], obj[body(1):body(2)])
	copy(swapped[body(1):body(2)], obj[body(0):body(1)])
	spliced := bytes.Clone(obj)
	copy(spliced[body(1):body(2)], other[body(1):body(2)])
	otherHeader := append(bytes.Clone(other[:H]), obj[H:]...)
	// A final chunk that is full, then a copy of it appended.
	fullPT := pseudoBytes(6, 2*tamperChunk)
	full := seal(fullPT, "k1", name)
	extended := append(bytes.Clone(full), full[H:H+T]...)
	// The header's key reference rewritten from k1 to k2 (allowed too),
	// the DEK still wrapped for k1.
	k2Ref := bytes.Clone(obj)
	i := bytes.Index(k2Ref[:H], []byte("/keys/k1"))
	if i < 0 {
		t.Fatal("no key reference in the header")
	}
	k2Ref[i+len("/keys/k")] = '2'

	eio := syscall.EIO
	return []tamperCase{
		{name: "intact", obj: obj, pt: pt},
		{name: "magic", obj: flipAt(obj, 0, 0x01), openErr: eio},
		{name: "version", obj: flipAt(obj, 5, 0x02), openErr: eio},
		{name: "reserved", obj: flipAt(obj, 7, 0x01), openErr: eio},
		{name: "header length", obj: flipAt(obj, 11, 0x01), openErr: eio},
		{name: "header length high bit", obj: flipAt(obj, 8, 0x80), openErr: eio},
		{name: "chunk size", obj: flipAt(obj, 15, 0x01), openErr: eio},
		{name: "chunk size high bit", obj: flipAt(obj, 12, 0x40), openErr: eio},
		{name: "object ID", obj: flipAt(obj, 20, 0x01), openErr: eio},
		{name: "wrap algorithm", obj: flipAt(obj, 32, 0x02), openErr: eio},
		{name: "key ref length", obj: flipAt(obj, krl+1, 0x01), openErr: eio},
		// "https" -> "httqs": not a key reference the dataset allows.
		{name: "key ref", obj: flipAt(obj, kr+3, 0x01), openErr: syscall.EACCES},
		{name: "name length", obj: flipAt(obj, nl+1, 0x01), openErr: eio},
		{name: "name", obj: flipAt(obj, nm, 0x01), openErr: eio},
		{name: "wrapped key length", obj: flipAt(obj, wl+1, 0x01), openErr: eio},
		{name: "wrapped key", obj: flipAt(obj, wr+10, 0x01), openErr: eio},
		{name: "MAC", obj: flipAt(obj, mac+5, 0x01), openErr: eio},
		{name: "chunk 1 body", obj: flipAt(obj, body(1)+100, 0x01), badChunks: []int64{1}},
		{name: "chunk 0 tag", obj: flipAt(obj, body(1)-1, 0x80), badChunks: []int64{0}},
		// The final chunk proves the size: it is checked at open.
		{name: "final chunk tag", obj: flipAt(obj, len(obj)-1, 0x01), openErr: eio},
		{name: "truncated at chunk boundary", obj: obj[:body(3)], openErr: eio},
		{name: "truncated to one chunk", obj: obj[:body(1)], openErr: eio},
		{name: "truncated inside final chunk", obj: obj[:len(obj)-5], openErr: eio},
		{name: "truncated into final tag", obj: obj[:len(obj)-10], openErr: eio},
		{name: "truncated to header", obj: obj[:H], openErr: eio},
		{name: "truncated inside header", obj: obj[:H-1], openErr: eio},
		{name: "appended bytes", obj: append(bytes.Clone(obj), 1, 2, 3), openErr: eio},
		{name: "appended chunk", obj: append(bytes.Clone(obj), obj[body(0):body(1)]...), openErr: eio},
		{name: "extended after a full final chunk", obj: extended, openErr: eio},
		{name: "swapped chunks", obj: swapped, badChunks: []int64{0, 1}},
		{name: "chunk spliced from another object", obj: spliced, badChunks: []int64{1}},
		{name: "header of another object", obj: otherHeader, openErr: eio},
		{name: "empty", obj: []byte{}, openErr: eio},
		{name: "three bytes", obj: []byte("SKR"), openErr: eio},
		{name: "preamble only", obj: obj[:10], openErr: eio},
		{name: "zero header", obj: make([]byte, len(obj)), openErr: eio},
		// Keys and names (the filesystem's part).
		{name: "sealed for another name", obj: seal(pt, "k1", "someone-else.bin"), openErr: eio},
		{name: "sealed for a key the dataset may not use", obj: seal(pt, "k3", name), openErr: syscall.EACCES},
		{name: "header names another allowed key", obj: k2Ref, openErr: eio},
		// A valid object of another allowed key: a dataset trusts every
		// key it lists (docs/threat-model.md).
		{name: "sealed for another allowed key", obj: seal(pt, "k2", name), pt: pt},
	}
}

// readChunk reads chunk i (4 KiB) of the open file f.
func readChunk(f *os.File, i int64, size int) ([]byte, error) {
	buf := make([]byte, tamperChunk)
	n, err := f.ReadAt(buf, i*tamperChunk)
	if err == io.EOF && i*tamperChunk+int64(n) == int64(size) {
		err = nil
	}
	return buf[:n], err
}

// TestTamperingThroughMount: every case of the format's tamper matrix,
// and objects sealed for another name or key, served by Azurite and read
// through a real FUSE mount. Each read returns the right bytes or fails
// with the case's errno (EIO, or EACCES for keys the dataset may not
// use), never other bytes. Each case runs twice: with the upload metadata
// of the intact object (size from the listing) and without (size from
// the cleartext preamble).
func TestTamperingThroughMount(t *testing.T) {
	r := newStorageRig(t)
	type stored struct {
		tc   tamperCase
		path string
	}
	var all []stored
	for _, meta := range []bool{true, false} {
		dir := "tamper/plain/"
		if meta {
			dir = "tamper/meta/"
		}
		for i, c := range tamperMatrix(r, "x") {
			// Every case seals for the name it is stored under.
			name := dir + strings.ReplaceAll(c.name, " ", "-") + ".bin"
			cases := tamperMatrix(r, name)
			var md map[string]string
			if meta {
				h, _ := crypto.ParseHeader(cases[0].obj)
				md = map[string]string{"skrfs_header_len": strconv.Itoa(h.Len()), "skrfs_chunk_size": strconv.Itoa(h.ChunkSize), "skrfs_version": strconv.Itoa(h.Version)}
			}
			r.putRaw(name, cases[i].obj, md)
			all = append(all, stored{cases[i], name})
		}
	}
	for _, s := range all {
		t.Run(s.path, func(t *testing.T) {
			tc := s.tc
			p := r.path(s.path)
			// A whole read: the right bytes, or the case's errno.
			err := readAll(p, tc.pt)
			switch {
			case errors.Is(err, errWrongBytes):
				t.Fatalf("whole read: %v", err)
			case tc.pt != nil && err != nil:
				t.Fatalf("whole read of a valid object: %v", err)
			case tc.pt == nil && err == nil:
				t.Fatal("whole read of a tampered object succeeded")
			case tc.pt == nil && tc.openErr != 0 && errnoOf(err) != tc.openErr:
				t.Fatalf("whole read: %v, want %v", err, tc.openErr)
			case tc.pt == nil && tc.openErr == 0 && errnoOf(err) != syscall.EIO:
				t.Fatalf("whole read: %v, want EIO", err)
			}
			// Chunk by chunk: the intact chunks read right, the others EIO.
			f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_DIRECT, 0)
			if tc.openErr != 0 {
				if errnoOf(err) != tc.openErr {
					t.Fatalf("open: %v, want %v", err, tc.openErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			defer f.Close()
			want := tc.pt
			if want == nil {
				want = pseudoBytes(5, 3*tamperChunk+7)
			}
			for i := int64(0); i*tamperChunk < int64(len(want)); i++ {
				got, err := readChunk(f, i, len(want))
				bad := false
				for _, b := range tc.badChunks {
					bad = bad || b == i
				}
				end := min(int64(len(want)), (i+1)*tamperChunk)
				switch {
				case bad && errnoOf(err) != syscall.EIO:
					t.Fatalf("chunk %d: %d bytes, %v; want EIO", i, len(got), err)
				case !bad && (err != nil || !bytes.Equal(got, want[i*tamperChunk:end])):
					t.Fatalf("chunk %d: %v (or wrong bytes)", i, err)
				}
			}
		})
	}
}

// TestSwappedObjects: two objects' contents swapped in storage; each is
// refused (EIO) under the other's name, before and after the swap of an
// object that was already read.
func TestSwappedObjects(t *testing.T) {
	r := newStorageRig(t)
	a, b := pseudoBytes(21, 200<<10), pseudoBytes(22, 150<<10)
	objA, objB := r.seal(a, "k1", "swap/a.bin"), r.seal(b, "k1", "swap/b.bin")
	r.put("swap/a.bin", objA, true, a)
	r.put("swap/b.bin", objB, true, b)
	for name, pt := range map[string][]byte{"swap/a.bin": a, "swap/b.bin": b} {
		if err := readAll(r.path(name), pt); err != nil {
			t.Fatalf("%s before the swap: %v", name, err)
		}
	}
	r.put("swap/a.bin", objB, true, nil)
	r.put("swap/b.bin", objA, true, nil)
	for _, name := range []string{"swap/a.bin", "swap/b.bin"} {
		if err := readAll(r.path(name), nil); errnoOf(err) != syscall.EIO {
			t.Fatalf("%s swapped: %v, want EIO", name, err)
		}
	}
}

// TestReplacedOrDeletedWhileOpen: reads of an open file are pinned to the
// version it opened (its ETag). Once storage replaces or deletes that
// version, reads of chunks not already decrypted fail with ESTALE; chunks
// already decrypted still read right; no read returns bytes of the new
// version or a mix. A new open sees the new version (or ENOENT).
func TestReplacedOrDeletedWhileOpen(t *testing.T) {
	r := newStorageRig(t)
	// 64 chunks of 64 KiB. Read-ahead after the first read stays within a
	// share of the rig's 2 MiB chunk cache, far from the chunks read
	// after the change.
	const size = 4 << 20
	v1, v2 := pseudoBytes(31, size), pseudoBytes(32, size)
	tests := []struct {
		name    string
		change  func(name string)
		wantErr syscall.Errno // of reads of chunks not yet decrypted
		newOpen func(t *testing.T, name string)
	}{
		{"replaced", func(name string) { r.put(name, r.seal(v2, "k1", name), true, v2) }, syscall.ESTALE,
			func(t *testing.T, name string) {
				if err := readAll(r.path(name), v2); err != nil {
					t.Fatalf("new open after the replacement: %v", err)
				}
			}},
		{"deleted", func(name string) {
			if err := r.direct.Delete(context.Background(), name); err != nil {
				t.Fatal(err)
			}
		}, syscall.ESTALE,
			func(t *testing.T, name string) {
				if _, err := os.Open(r.path(name)); errnoOf(err) != syscall.ENOENT {
					t.Fatalf("new open after the deletion: %v, want ENOENT", err)
				}
			}},
	}
	// Every object is stored before the first listing (listings are
	// cached for ListTTL: a new name shows up only later).
	name := func(tc string) string { return "open/" + tc + ".bin" }
	for _, tc := range tests {
		r.put(name(tc.name), r.seal(v1, "k1", name(tc.name)), true, v1)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name := name(tc.name)
			f, err := os.OpenFile(r.path(name), os.O_RDONLY|syscall.O_DIRECT, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			head := make([]byte, 64<<10)
			if _, err := f.ReadAt(head, 0); err != nil || !bytes.Equal(head, v1[:len(head)]) {
				t.Fatalf("first chunk: %v", err)
			}
			tc.change(name)
			// Chunks far from what was read (and from read-ahead) are not
			// decrypted yet: pinned reads find the version gone.
			p := make([]byte, 64<<10)
			for _, off := range []int64{3 * size / 4, size - 3*64<<10} {
				n, err := f.ReadAt(p, off)
				if errnoOf(err) != tc.wantErr {
					t.Fatalf("read at %d after the change: %d bytes, %v; want %v", off, n, err, tc.wantErr)
				}
			}
			// The chunk already decrypted is the old version's, whole.
			if n, err := f.ReadAt(p, 0); err == nil && !bytes.Equal(p[:n], v1[:n]) {
				t.Fatal("the open file returned bytes of another version")
			}
			tc.newOpen(t, name)
		})
	}
}

// TestReplayOlderVersion: storage replaces an object with an older,
// genuine version of the same object (same name, same key). The format
// binds the name and the key reference into the header, but nothing in
// the object says which version is current: the mount serves the older
// version's bytes, whole and authentic. This is the rollback gap of
// docs/threat-model.md ("Storage tampering and replay"): only an
// external freshness anchor could detect it. What is guaranteed: the
// older version is served exactly (never a mix), handles of the newer
// version open before the replay get ESTALE for chunks not yet read, and
// an older version of another object (another name) is refused.
func TestReplayOlderVersion(t *testing.T) {
	r := newStorageRig(t)
	const name = "replay/config.bin"
	v1, v2 := []byte("version 1: grant access to alice\n"), []byte("version 2: revoke alice, grant bob\n")
	old, cur := r.seal(v1, "k1", name), r.seal(v2, "k1", name)
	const big = "replay-big/big.bin"
	b1, b2 := pseudoBytes(41, 4<<20), pseudoBytes(42, 4<<20)
	o1, o2 := r.seal(b1, "k1", big), r.seal(b2, "k1", big)
	// Every name exists before the first listing (listings are cached).
	r.put(big, o1, true, b1)
	r.put(name, old, true, v1)
	if err := readAll(r.path(name), v1); err != nil {
		t.Fatal(err)
	}
	r.put(name, cur, true, v2)
	if err := readAll(r.path(name), v2); err != nil {
		t.Fatal(err)
	}
	// Replay: the old bytes uploaded again. Not detected.
	r.put(name, old, true, v1)
	if err := readAll(r.path(name), v1); err != nil {
		t.Fatalf("replayed version: %v; the mount serves it as the current one (not detectable)", err)
	}
	// An older version of another object is not a version of this one.
	other := r.seal([]byte("another object's old version\n"), "k1", "replay/other.bin")
	r.put(name, other, true, nil)
	if err := readAll(r.path(name), nil); errnoOf(err) != syscall.EIO {
		t.Fatalf("another object's version replayed under %s: %v, want EIO", name, err)
	}

	// A large object replayed while a handle of the newer version is open.
	r.put(big, o2, true, b2)
	f, err := os.OpenFile(r.path(big), os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := make([]byte, 64<<10)
	if _, err := f.ReadAt(p, 0); err != nil || !bytes.Equal(p, b2[:len(p)]) {
		t.Fatalf("newer version: %v", err)
	}
	r.put(big, o1, true, b1)
	if _, err := f.ReadAt(p, 3<<20); errnoOf(err) != syscall.ESTALE {
		t.Fatalf("open handle of the newer version after the replay: %v, want ESTALE", err)
	}
	if err := readAll(r.path(big), b1); err != nil {
		t.Fatalf("new open after the replay: %v (serves the older version)", err)
	}
}

// TestMetadataLies: the upload metadata (header length, chunk size) lets
// listings show sizes without reading objects, but it is not
// authenticated. Metadata that makes an object look a chunk shorter or
// longer must not cut or pad what a reader gets: the open proves the
// size (header and final chunk), and reads follow it.
func TestMetadataLies(t *testing.T) {
	r := newStorageRig(t)
	pt := pseudoBytes(51, 5*rigChunk+99)
	tests := []struct {
		name  string
		delta int // added to the header length in the metadata
	}{
		{"one chunk shorter", rigChunk + crypto.TagSize},
		{"one chunk longer", -(rigChunk + crypto.TagSize)},
		{"truthful", 0},
	}
	// Store every object before the first listing of their directory.
	name := func(tc string) string { return "meta/" + strings.ReplaceAll(tc, " ", "-") + ".bin" }
	for _, tc := range tests {
		obj := r.seal(pt, "k1", name(tc.name))
		h, _ := crypto.ParseHeader(obj)
		r.putRaw(name(tc.name), obj, map[string]string{"skrfs_header_len": strconv.Itoa(h.Len() + tc.delta), "skrfs_chunk_size": strconv.Itoa(h.ChunkSize), "skrfs_version": strconv.Itoa(h.Version)})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name := name(tc.name)
			st, err := os.Stat(r.path(name))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("size shown before the open: %d (true size %d)", st.Size(), len(pt))
			// Through the page cache, where the kernel's idea of the size
			// ends reads, and with O_DIRECT.
			if got, err := os.ReadFile(r.path(name)); err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("read: %d bytes, %v; want %d bytes", len(got), err, len(pt))
			}
			if err := readAll(r.path(name), pt); err != nil {
				t.Fatalf("read: %v", err)
			}
			if st, err := os.Stat(r.path(name)); err != nil || st.Size() != int64(len(pt)) {
				t.Fatalf("size after the open: %v, %v; want %d", st, err, len(pt))
			}
		})
	}
}
