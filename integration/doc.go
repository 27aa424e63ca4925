// Package integration holds tests that cross process boundaries: the built
// skrfs binary, real FUSE mounts, Azurite, and the independent Python
// implementation of the object format. The tests live in _test.go files;
// subpackages hold shared harnesses (azurite).
package integration
