package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCreateMountpoint(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, path, wantErr string
		wantDir             bool
	}{
		{name: "missing, with parents", path: filepath.Join(dir, "vol", "skrfs"), wantDir: true},
		{name: "existing directory", path: dir, wantDir: true},
		{name: "a file is left for the mount to refuse", path: file},
		{name: "under a file", path: filepath.Join(file, "skrfs"), wantErr: "--mkdir: "},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := createMountpoint(c.path)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			fi, err := os.Lstat(c.path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.IsDir() != c.wantDir {
				t.Fatalf("%s: dir=%v, want %v", c.path, fi.IsDir(), c.wantDir)
			}
			if perm := fi.Mode().Perm(); c.wantDir && c.path != dir && (perm&0o700 != 0o700 || perm&0o022 != 0) {
				t.Errorf("mode %v, want 0755 less the umask", perm)
			}
		})
	}
}
