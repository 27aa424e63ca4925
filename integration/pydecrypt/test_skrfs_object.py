"""Self-tests for skrfs_object.py (run with /usr/bin/python3 -m unittest discover -s DIR -v)."""

import io
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import unittest

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import skrfs_object as so  # noqa: E402

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "skrfs_object.py")
C = 256
T = C + 16
KEY_REF = "https://myvault.vault.azure.net/keys/data-key"
NAME = "hello.txt"
SIZES = [0, 1, C - 1, C, C + 1, 3 * C + 7]
KEYS = {}


def setUpModule():
    KEYS["rsa2048"] = rsa.generate_private_key(65537, 2048)
    KEYS["rsa2048b"] = rsa.generate_private_key(65537, 2048)
    KEYS["rsa3072"] = rsa.generate_private_key(65537, 3072)
    KEYS["rsa4096"] = rsa.generate_private_key(65537, 4096)
    KEYS["aes"] = os.urandom(32)
    KEYS["aesb"] = os.urandom(32)
    KEYS["p256"] = ec.generate_private_key(ec.SECP256R1())
    KEYS["p256b"] = ec.generate_private_key(ec.SECP256R1())
    KEYS["p384"] = ec.generate_private_key(ec.SECP384R1())


def pub(k):
    """The writer only needs the public part (raw AES keys stay as they are)."""
    return k if isinstance(k, bytes) else k.public_key()


def seal(key, data, name=NAME, key_ref=KEY_REF, chunk=C):
    out = io.BytesIO()
    so.encrypt_stream(io.BytesIO(data), out, pub(key), name, key_ref, chunk)
    return out.getvalue()


def open_(obj, key, name=NAME):
    out = io.BytesIO()
    so.decrypt_stream(obj, out, key, name)
    return out.getvalue()


def hlen(obj):
    return struct.unpack(">I", obj[8:12])[0]


class TestPrimitives(unittest.TestCase):
    def test_rfc3394_4_6(self):
        """RFC 3394 §4.6: wrap 256 bits of key data with a 256-bit KEK."""
        kek = bytes(range(32))
        data = bytes.fromhex("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F")
        want = bytes.fromhex("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326"
                             "CBC7F0E71A99F43BFB988B9B7A02DD21")
        self.assertEqual(aes_key_wrap(kek, data), want)
        # and through our own wrap/unwrap path
        self.assertEqual(so.unwrap_dek(so.as_kek(kek), so.ALG_A256KW, want), data)

    def test_nonce(self):
        self.assertEqual(so.chunk_nonce(0, True).hex(), "000000000000000000000001")
        self.assertEqual(so.chunk_nonce(0x0102, False).hex(), "000000000000010200000000")


class TestSizes(unittest.TestCase):
    def test_header_sizes_table(self):
        """§7 header table: H = 71 + R + N + W for R = 45, N = 9."""
        table = {"rsa2048": (256, 381), "rsa3072": (384, 509), "rsa4096": (512, 637),
                 "aes": (40, 165), "p256": (105, 230), "p384": (137, 262)}
        for k, (w, h) in table.items():
            with self.subTest(k):
                obj = seal(KEYS[k], b"x")
                hdr = so.parse_header(obj[:hlen(obj)])
                self.assertEqual(len(hdr.key_ref), 45)
                self.assertEqual(len(hdr.wrapped_dek), w)
                self.assertEqual(hdr.header_len, h)

    def test_object_sizes_table(self):
        """§7 object table with the RSA-2048 header (H = 381), C = 65536."""
        table = [(0, 1, 16, 397), (1, 1, 17, 398), (65535, 1, 65551, 65932),
                 (65536, 1, 65552, 65933), (65537, 2, 65569, 65950),
                 (196615, 4, 196679, 197060), (1073741824, 16384, 1074003968, 1074004349)]
        for plen, n, b, s in table:
            with self.subTest(plen):
                self.assertEqual(so.chunk_count(plen, 65536), n)
                self.assertEqual(so.object_size(381, 65536, plen), s)
                self.assertEqual(s - 381, b)
                self.assertEqual(so.body_layout(s, 381, 65536), (n, plen))
                if plen < 1 << 20:   # really build the small ones
                    data = os.urandom(plen)
                    obj = seal(KEYS["rsa2048"], data, chunk=65536)
                    self.assertEqual(len(obj), s)
                    self.assertEqual(open_(obj, KEYS["rsa2048"]), data)

    def test_invalid_sizes(self):
        for b in [0, 15, T + 16, T + 1, 2 * T + 16]:
            with self.subTest(b):
                with self.assertRaises(so.ErrInvalidSize):
                    so.body_layout(100 + b, 100, C)
        for b in [16, 17, T, T + 17, 2 * T]:
            so.body_layout(100 + b, 100, C)


class TestRoundTrip(unittest.TestCase):
    def test_all_algorithms_and_sizes(self):
        for k in ["rsa2048", "rsa4096", "aes", "p256", "p384"]:
            for size in SIZES:
                with self.subTest(key=k, size=size):
                    data = os.urandom(size)
                    obj = seal(KEYS[k], data)
                    h = hlen(obj)
                    self.assertEqual(len(obj), so.object_size(h, C, size))
                    self.assertEqual(so.plaintext_size(len(obj), h, C), size)
                    self.assertEqual(open_(obj, KEYS[k]), data)
                    self.assertEqual(open_(obj, KEYS[k], name=None), data)

    def test_empty_key_ref_and_unicode_name(self):
        data = b"abc" * 100
        obj = seal(KEYS["aes"], data, name="dir/ünï 名.csv", key_ref="")
        self.assertEqual(open_(obj, KEYS["aes"], "dir/ünï 名.csv"), data)

    def test_read_range(self):
        data = os.urandom(5 * C + 13)
        for k in ["aes", "p256"]:
            obj = seal(KEYS[k], data)
            rnd = random.Random(1)
            cases = [(0, 0), (0, 1), (C - 1, 2), (C, C), (0, len(data)), (len(data) - 1, 5),
                     (len(data), 3), (len(data) + 10, 3)]
            cases += [(rnd.randrange(len(data)), rnd.randrange(3 * C)) for _ in range(30)]
            for off, ln in cases:
                with self.subTest(key=k, off=off, len=ln):
                    self.assertEqual(so.read_range(obj, KEYS[k], NAME, off, ln),
                                     data[off:off + ln])

    def test_read_range_touches_only_needed_chunks(self):
        """Corrupt chunk 4: ranges inside chunks 0..3 still read; touching 4 fails."""
        data = os.urandom(5 * C + 13)
        obj = bytearray(seal(KEYS["aes"], data))
        obj[hlen(obj) + 4 * T + 3] ^= 1
        self.assertEqual(so.read_range(bytes(obj), KEYS["aes"], NAME, C + 5, 2 * C),
                         data[C + 5:3 * C + 5])
        with self.assertRaises(so.ErrChunkAuth) as cm:
            so.read_range(bytes(obj), KEYS["aes"], NAME, 4 * C - 1, 2)
        self.assertEqual(str(cm.exception), "ErrChunkAuth: chunk 4")

    def test_streaming_source_short_reads(self):
        """Writer must cope with a source that returns short reads (pipes)."""
        class Dribble(io.RawIOBase):
            def __init__(self, data):
                self.b = io.BytesIO(data)

            def read(self, n=-1):
                return self.b.read(min(n, 7) if n and n > 0 else 7)
        data = os.urandom(3 * C + 7)
        out = io.BytesIO()
        so.encrypt_stream(Dribble(data), out, pub(KEYS["aes"]), NAME, "", C)
        self.assertEqual(open_(out.getvalue(), KEYS["aes"]), data)

    def test_key_formats(self):
        """Private keys in PKCS#8 and traditional PEM, public keys in SPKI, raw AES."""
        with tempfile.TemporaryDirectory() as d:
            for k in ["rsa2048", "p384"]:
                priv = KEYS[k]
                files = {}
                for fmt in [serialization.PrivateFormat.PKCS8,
                            serialization.PrivateFormat.TraditionalOpenSSL]:
                    p = os.path.join(d, f"{k}-{fmt.name}.pem")
                    with open(p, "wb") as f:
                        f.write(priv.private_bytes(serialization.Encoding.PEM, fmt,
                                                   serialization.NoEncryption()))
                    files[fmt.name] = p
                pp = os.path.join(d, f"{k}-pub.pem")
                with open(pp, "wb") as f:
                    f.write(priv.public_key().public_bytes(
                        serialization.Encoding.PEM,
                        serialization.PublicFormat.SubjectPublicKeyInfo))
                data = os.urandom(700)
                out = io.BytesIO()
                so.encrypt_stream(io.BytesIO(data), out, so.load_key(pp), NAME, "", C)
                for p in files.values():
                    self.assertEqual(open_(out.getvalue(), so.load_key(p)), data)
                # a public key cannot decrypt
                with self.assertRaises(so.ErrWrongKey):
                    open_(out.getvalue(), so.load_key(pp))


class TestTamper(unittest.TestCase):
    def setUp(self):
        self.data = os.urandom(3 * C + 7)
        self.obj = seal(KEYS["rsa2048"], self.data)
        self.h = hlen(self.obj)

    def expect(self, obj, err, key=None, name=NAME, detail=None):
        with self.assertRaises(err) as cm:
            open_(bytes(obj), key or KEYS["rsa2048"], name)
        if detail is not None:
            self.assertEqual(str(cm.exception), detail)

    def flipped(self, pos, bit=1):
        o = bytearray(self.obj)
        o[pos] ^= bit
        return o

    def test_preamble(self):
        self.expect(self.flipped(0), so.ErrBadMagic)
        self.expect(self.flipped(5), so.ErrUnsupportedVersion)
        self.expect(self.flipped(7), so.ErrMalformedHeader)
        self.expect(self.obj[:10], so.ErrMalformedHeader)
        self.expect(b"", so.ErrBadMagic)
        # H changed: fields no longer add up
        self.expect(self.flipped(11), so.ErrMalformedHeader)
        # C changed: either the size no longer fits or the MAC fails
        for pos, bit in [(15, 1), (15, 0x80), (13, 1)]:
            with self.assertRaises((so.ErrInvalidSize, so.ErrHeaderAuth)):
                open_(bytes(self.flipped(pos, bit)), KEYS["rsa2048"], NAME)
        self.expect(self.flipped(12, 0x10), so.ErrMalformedHeader)   # C > 16 MiB

    def test_header_fields(self):
        self.expect(self.flipped(20), so.ErrHeaderAuth)                 # object ID
        self.expect(self.flipped(32, 2), so.ErrMalformedHeader)         # algorithm 1 -> 3
        self.expect(self.flipped(32, 0x80), so.ErrMalformedHeader)      # unknown algorithm
        self.expect(self.flipped(40), so.ErrHeaderAuth)                 # key reference text
        self.expect(self.flipped(40, 0x20), so.ErrMalformedHeader)      # ':' -> 0x1A control
        self.expect(self.flipped(40, 0x80), so.ErrMalformedHeader)      # invalid UTF-8
        name_at = 35 + 45 + 2
        self.expect(self.flipped(name_at), so.ErrHeaderAuth)            # name: MAC first
        self.expect(self.flipped(name_at - 1), so.ErrMalformedHeader)   # name length
        self.expect(self.flipped(name_at + 9 + 1), so.ErrMalformedHeader)  # W 256 -> 257
        self.expect(self.flipped(name_at + 9 + 2 + 100), so.ErrWrongKey)   # wrapped DEK
        self.expect(self.flipped(self.h - 1), so.ErrHeaderAuth)         # MAC

    def test_chunks(self):
        self.expect(self.flipped(self.h + 5), so.ErrChunkAuth, detail="ErrChunkAuth: chunk 0")
        self.expect(self.flipped(self.h + T + C + 3), so.ErrChunkAuth,
                    detail="ErrChunkAuth: chunk 1")                       # tag of chunk 1
        self.expect(self.flipped(len(self.obj) - 1), so.ErrChunkAuth,
                    detail="ErrChunkAuth: chunk 3")                       # tag of last chunk
        body = self.obj[self.h:]
        swapped = self.obj[:self.h] + body[T:2 * T] + body[:T] + body[2 * T:]
        self.expect(swapped, so.ErrChunkAuth, detail="ErrChunkAuth: chunk 0")

    def test_truncation(self):
        # cut at a chunk boundary: new last chunk was sealed non-final
        self.expect(self.obj[:self.h + 3 * T], so.ErrTruncated, detail="ErrTruncated: chunk 2")
        self.expect(self.obj[:self.h + T], so.ErrTruncated, detail="ErrTruncated: chunk 0")
        # no body, a tag-only last chunk after full ones, a cut inside the header
        self.expect(self.obj[:self.h], so.ErrInvalidSize)
        self.expect(self.obj[:self.h + 15], so.ErrInvalidSize)
        self.expect(self.obj[:self.h + 3 * T + 16], so.ErrInvalidSize)
        self.expect(self.obj[:self.h - 1], so.ErrMalformedHeader)
        # cut inside the last chunk: size still valid, tag fails
        self.expect(self.obj[:-1], so.ErrChunkAuth, detail="ErrChunkAuth: chunk 3")

    def test_extension(self):
        # last chunk short: an appended chunk shifts nothing, but the last chunk grows
        self.expect(self.obj + os.urandom(T), so.ErrChunkAuth, detail="ErrChunkAuth: chunk 3")
        self.expect(self.obj + self.obj[self.h:self.h + T], so.ErrChunkAuth,
                    detail="ErrChunkAuth: chunk 3")
        # last chunk full: the old final chunk now sits before the last one
        full = seal(KEYS["rsa2048"], os.urandom(2 * C))
        h = hlen(full)
        self.expect(full + os.urandom(T), so.ErrExtended, detail="ErrExtended: chunk 1")
        self.expect(full + full[h:h + T], so.ErrExtended, detail="ErrExtended: chunk 1")
        self.expect(full + b"\0" * 17, so.ErrExtended, detail="ErrExtended: chunk 1")
        # appending only a few bytes to a full last chunk leaves an impossible size
        self.expect(full + b"\0" * 16, so.ErrInvalidSize)
        self.expect(full + b"\0" * 3, so.ErrInvalidSize)

    def test_splice(self):
        other = seal(KEYS["rsa2048"], self.data)   # same key, same plaintext, new DEK
        self.expect(self.obj[:self.h] + other[self.h:], so.ErrChunkAuth,
                    detail="ErrChunkAuth: chunk 0")

    def test_name_and_key(self):
        self.expect(self.obj, so.ErrNameMismatch, name="other.txt")
        self.expect(self.obj, so.ErrNameMismatch, name="Hello.txt")
        self.expect(self.obj, so.ErrWrongKey, key=KEYS["rsa2048b"])
        self.expect(self.obj, so.ErrWrongKey, key=KEYS["rsa4096"])
        self.expect(self.obj, so.ErrWrongKey, key=KEYS["aes"])
        self.expect(self.obj, so.ErrWrongKey, key=KEYS["p256"])
        aes = seal(KEYS["aes"], b"hi")
        self.expect(aes, so.ErrWrongKey, key=KEYS["aesb"])
        self.expect(aes, so.ErrWrongKey, key=KEYS["rsa2048"])
        p256 = seal(KEYS["p256"], b"hi")
        self.expect(p256, so.ErrWrongKey, key=KEYS["p256b"])
        self.expect(p256, so.ErrWrongKey, key=KEYS["p384"])

    def test_bad_epk(self):
        """§3: an EPK off the curve is rejected (here as ErrWrongKey)."""
        obj = bytearray(seal(KEYS["p256"], b"hi", key_ref=""))
        epk_at = 35 + 0 + 2 + len(NAME) + 2
        self.assertEqual(obj[epk_at], 4)
        obj[epk_at + 64] ^= 1          # last byte of Y: point leaves the curve
        self.expect(obj, so.ErrWrongKey, key=KEYS["p256"])


def run_cli(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True)


class TestCLI(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.d = self.tmp.name
        self.priv = os.path.join(self.d, "k.pem")
        self.pubf = os.path.join(self.d, "k.pub.pem")
        k = KEYS["p256"]
        with open(self.priv, "wb") as f:
            f.write(k.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
        with open(self.pubf, "wb") as f:
            f.write(k.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo))
        self.plain = os.path.join(self.d, "report.csv")
        self.data = os.urandom(3 * C + 7)
        with open(self.plain, "wb") as f:
            f.write(self.data)
        self.obj = os.path.join(self.d, "report.skrfs")
        r = run_cli("encrypt", "--key", self.pubf, "--key-ref", KEY_REF, "--chunk-size", str(C),
                     self.plain, self.obj)
        self.assertEqual(r.returncode, 0, r.stderr)

    def tearDown(self):
        self.tmp.cleanup()

    def test_decrypt_and_inspect(self):
        out = os.path.join(self.d, "out.csv")
        r = run_cli("decrypt", "--key", self.priv, "--name", "report.csv", self.obj, out)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), self.data)
        r = run_cli("inspect", self.obj)
        self.assertEqual(r.returncode, 0, r.stderr)
        info = json.loads(r.stdout)
        self.assertEqual(info["name"], "report.csv")
        self.assertEqual(info["key_ref"], KEY_REF)
        self.assertEqual(info["wrap_alg"], 3)
        self.assertEqual(info["wrap_alg_name"], "ECDH-ES-P256+A256KW")
        self.assertEqual(info["chunk_size"], C)
        self.assertEqual(info["wrapped_dek_len"], 105)
        self.assertEqual(info["header_len"], 71 + 45 + 10 + 105)
        self.assertEqual(info["plaintext_size"], len(self.data))
        self.assertEqual(len(bytes.fromhex(info["object_id"])), 16)

    def test_failures_leave_no_output(self):
        with open(self.obj, "rb") as f:
            obj = bytearray(f.read())
        obj[-1] ^= 1
        bad = os.path.join(self.d, "bad.skrfs")
        with open(bad, "wb") as f:
            f.write(obj)
        out = os.path.join(self.d, "out.csv")
        for args, want in [((bad,), "ErrChunkAuth: chunk 3"),
                           (("--name", "x.csv", self.obj), "ErrNameMismatch"),
                           ((self.plain,), "ErrBadMagic")]:
            r = run_cli("decrypt", "--key", self.priv, *args, out)
            self.assertEqual(r.returncode, 1)
            self.assertTrue(r.stderr.startswith(want), r.stderr)
            self.assertEqual(len(r.stderr.strip().splitlines()), 1)
            self.assertFalse(os.path.exists(out))
            self.assertEqual(sorted(os.listdir(self.d)),
                             sorted(["k.pem", "k.pub.pem", "report.csv", "report.skrfs",
                                     "bad.skrfs"]))

    def test_check_vectors(self):
        vec = [{"id": "good", "object": "report.skrfs", "key": "k.pem", "key_type": "ec",
                "name": "report.csv", "plaintext": "report.csv"},
               {"id": "name", "object": "report.skrfs", "key": "k.pem", "key_type": "ec",
                "name": "r.csv", "error": "ErrNameMismatch"}]
        with open(os.path.join(self.d, "vectors.json"), "w") as f:
            json.dump(vec, f)
        r = run_cli("check-vectors", self.d)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stdout.splitlines(), ["ok good", "ok name", "2 passed, 0 failed"])
        vec[1]["error"] = "ErrHeaderAuth"
        vec.append(dict(vec[0], id="wrongtext", plaintext="k.pem"))
        with open(os.path.join(self.d, "vectors.json"), "w") as f:
            json.dump(vec, f)
        r = run_cli("check-vectors", self.d)
        self.assertNotEqual(r.returncode, 0)
        lines = r.stdout.splitlines()
        self.assertTrue(lines[1].startswith("FAIL name: "))
        self.assertEqual(lines[2], "FAIL wrongtext: plaintext differs")
        self.assertEqual(lines[-1], "1 passed, 2 failed")


if __name__ == "__main__":
    unittest.main()
