// Package writes holds the end-to-end tests of writable datasets: the real
// skrfs daemon (built with -race), real FUSE mounts, unmodified programs
// (cp, tar, rsync, sqlite3, python3, the shell) writing through them into a
// local directory or Azurite, kill -9 during a write, two daemons racing
// for one object, and scans for plaintext on disk. It is a package of its
// own so that `go test ./...` runs it in parallel with package integration.
package writes
