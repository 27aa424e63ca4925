// Package fs is the skrfs FUSE filesystem: keys released by Secure Key
// Release appear as files under keys/, and encrypted objects of each
// dataset appear as plaintext files, decrypted on demand with random
// access. It depends only on the small interfaces of keyrelease (Releaser)
// and blob (Store) and on the object format in crypto; cmd/skrfs wires the
// concrete implementations.
//
// Listing and stat never trigger attestation: plaintext sizes come from
// the object headers (or upload metadata) without any key. The first open
// of a key file, or of an object whose key is not cached, releases the key;
// the Releaser (normally keyrelease/cache) shares one release among
// concurrent openers.
package fs
