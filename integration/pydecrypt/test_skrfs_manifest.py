"""Tests of skrfs_manifest.py against the frozen vectors (docs/format.md 12)."""

import os
import random
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import skrfs_manifest as sm  # noqa: E402

VEC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "crypto", "testdata", "v2", "manifest")


def load(name):
    with open(os.path.join(VEC, name), "rb") as f:
        return f.read()


class ManifestTests(unittest.TestCase):
    def setUp(self):
        self.tok = load("es256-v1-objects.jws")
        self.pub = sm.load_public(os.path.join(VEC, "p256.pub.pem"))

    def test_valid(self):
        p = sm.verify(self.tok, [self.pub])
        self.assertEqual(p["dataset"], "golden-v1")
        self.assertEqual(p["alg"], "ES256")

    def test_every_mutation_refused(self):
        rnd = random.Random(7)
        for _ in range(300):
            b = bytearray(self.tok)
            i = rnd.randrange(len(b))
            b[i] = (b[i] + rnd.randrange(1, 256)) % 256
            with self.assertRaises(sm.ManifestError, msg="byte %d" % i):
                sm.verify(bytes(b), [self.pub])

    def test_truncations_refused(self):
        for n in range(0, len(self.tok), max(1, len(self.tok) // 97)):
            with self.assertRaises(sm.ManifestError):
                sm.verify(self.tok[:n], [self.pub])

    def test_unpinned(self):
        other = sm.load_public(os.path.join(VEC, "p256-other.pub.pem"))
        with self.assertRaises(sm.Signer):
            sm.verify(self.tok, [other])


if __name__ == "__main__":
    unittest.main()
