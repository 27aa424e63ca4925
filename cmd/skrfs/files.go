package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/skrfs/skrfs/keyrelease"
)

// loadKey reads and parses a key file, wiping the file bytes afterwards.
func loadKey(path string) (*keyrelease.Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	defer clear(data)
	k, err := keyrelease.ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return k, nil
}

// atomicWrite writes to a temporary file next to path and renames it over
// path only when fill succeeds, so a failure never leaves a partial or
// truncated path behind. path "-" writes to standard output directly.
func atomicWrite(path string, mode os.FileMode, fill func(io.Writer) error) error {
	if path == "-" {
		return fill(os.Stdout)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".skrfs-tmp-*")
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(mode); err != nil {
		return err
	}
	if err := fill(tmp); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	ok = true
	return nil
}

// writeReadyFile writes a ready file whole: to a temporary name in the
// same directory, then renamed into place, so that a watcher that sees the
// file exist never reads it empty or half written.
func writeReadyFile(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
