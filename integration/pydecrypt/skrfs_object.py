#!/usr/bin/python3
"""Independent implementation of the skrfs encrypted-object format, version 1,
and a reader of version 2 (docs/format.md section 11: per-batch wrapping key,
random chunk nonces in a trailing nonce table). The writer writes version 1.

Written from docs/format.md alone (no Go code consulted), as a check that the
specification is complete.  Section numbers in comments ("§3") refer to that
document.  Needs only the standard library and `cryptography` (>= 38).

Usage:
  skrfs_object.py decrypt --key KEYFILE [--name NAME] IN OUT
  skrfs_object.py encrypt --key KEYFILE [--key-ref URL] [--name NAME] [--chunk-size N] IN OUT
  skrfs_object.py inspect IN
  skrfs_object.py check-vectors DIR

Library entry points: encrypt_stream, decrypt_stream, read_range, parse_header,
load_key, plaintext_size, object_size.
"""

import argparse
import hashlib
import hmac
import io
import json
import os
import re
import struct
import sys
import tempfile

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand
from cryptography.hazmat.primitives.keywrap import (InvalidUnwrap, aes_key_unwrap,
                                                    aes_key_wrap)

# ---------------------------------------------------------------- constants

MAGIC = b"SKRFS"                       # §2.1
VERSION = 1
PREAMBLE_LEN = 16
MAX_HEADER_LEN = 65536
MIN_CHUNK, MAX_CHUNK, DEFAULT_CHUNK = 256, 16 * 1024 * 1024, 65536
MAX_KEY_REF, MAX_NAME = 2048, 4096     # §2.2
TAG_LEN = 16                           # AES-GCM tag (§1)
MAC_LEN = 32
DEK_LEN = 32

ALG_RSA, ALG_A256KW, ALG_ECDH_P256, ALG_ECDH_P384 = 1, 2, 3, 4   # §3
ALG_NAMES = {ALG_RSA: "RSA-OAEP-256", ALG_A256KW: "A256KW",
             ALG_ECDH_P256: "ECDH-ES-P256+A256KW", ALG_ECDH_P384: "ECDH-ES-P384+A256KW"}
# EC algorithms: (curve class, EPK length, Z length)
EC_ALGS = {ALG_ECDH_P256: (ec.SECP256R1, 65, 32), ALG_ECDH_P384: (ec.SECP384R1, 97, 48)}
ECDH_INFO = b"skrfs/v1 ecdh-es a256kw"
INFO_CHUNK = b"skrfs/v1 chunk key"     # §4
INFO_MAC = b"skrfs/v1 header mac"
# Version 2 (§11)
VERSION_2 = 2
ECDH_INFO_V2 = b"skrfs/v2 ecdh-es a256kw"
INFO_CHUNK_V2 = b"skrfs/v2 chunk key"
INFO_MAC_V2 = b"skrfs/v2 header mac"
AD_V2 = b"skrfs/v2 chunk"
NONCE_LEN = 12
V2_OVERHEAD = TAG_LEN + NONCE_LEN     # per chunk: GCM tag + nonce-table entry
KEY_REF_RE = re.compile(r"^https://[^/]+/keys/[^/]+(/[^/]+)?$")


def expected_wrapped_len(alg):
    """W required by the algorithm (§3); for RSA the allowed range."""
    if alg == ALG_RSA:
        return range(256, 513)
    if alg == ALG_A256KW:
        return range(40, 41)
    return range(EC_ALGS[alg][1] + 40, EC_ALGS[alg][1] + 41)


# ------------------------------------------------------------------- errors
# One class per §8 error; str(err) is "ErrName" or "ErrName: detail".

class SkrfsError(Exception):
    def __init__(self, detail=""):
        super().__init__(detail)
        self.detail = detail

    @property
    def kind(self):
        return type(self).__name__

    def __str__(self):
        return f"{self.kind}: {self.detail}" if self.detail else self.kind


class ErrBadMagic(SkrfsError): pass
class ErrUnsupportedVersion(SkrfsError): pass
class ErrMalformedHeader(SkrfsError): pass
class ErrInvalidSize(SkrfsError): pass
class ErrWrongKey(SkrfsError): pass
class ErrHeaderAuth(SkrfsError): pass
class ErrNameMismatch(SkrfsError): pass
class ErrChunkAuth(SkrfsError): pass
class ErrTruncated(SkrfsError): pass
class ErrExtended(SkrfsError): pass
class ErrKeyFile(SkrfsError): pass     # not in §8: the key file itself is unusable
class ErrUsage(SkrfsError): pass       # not in §8: bad writer arguments


# --------------------------------------------------------------------- keys

class Kek:
    """A key-encryption key: kind is 'rsa', 'ec' or 'oct'; priv may be None."""

    def __init__(self, kind, pub=None, priv=None, secret=None):
        self.kind, self.pub, self.priv, self.secret = kind, pub, priv, secret


def as_kek(key):
    """Accept a Kek, a cryptography key object, or 32 raw bytes."""
    if isinstance(key, Kek):
        return key
    if isinstance(key, (bytes, bytearray)) and len(key) == DEK_LEN:
        return Kek("oct", secret=bytes(key))
    if isinstance(key, rsa.RSAPrivateKey):
        return Kek("rsa", key.public_key(), key)
    if isinstance(key, rsa.RSAPublicKey):
        return Kek("rsa", key)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return Kek("ec", key.public_key(), key)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return Kek("ec", key)
    raise ErrKeyFile(f"unsupported key type {type(key).__name__}")


def load_key(path, raw=None):
    """Load a PEM private key (PKCS#8 or traditional), a PEM public key
    (SubjectPublicKeyInfo or PKCS#1) or a raw 32-byte AES key.
    raw=True forces raw, raw=False forces PEM, None guesses."""
    with open(path, "rb") as f:
        data = f.read(1 << 20)
    if raw or (raw is None and len(data) == DEK_LEN and b"-----BEGIN" not in data):
        if len(data) != DEK_LEN:
            raise ErrKeyFile(f"{path}: raw AES key must be 32 bytes, got {len(data)}")
        return Kek("oct", secret=data)
    try:
        if b"PRIVATE KEY-----" in data:
            return as_kek(serialization.load_pem_private_key(data, password=None))
        return as_kek(serialization.load_pem_public_key(data))
    except (ValueError, TypeError) as e:
        raise ErrKeyFile(f"{path}: {e}") from None


def _ec_alg(curve):
    for alg, (cls, _, _) in EC_ALGS.items():
        if isinstance(curve, cls):
            return alg
    raise ErrKeyFile(f"unsupported EC curve {curve.name}")


def _point(pub):
    return pub.public_bytes(serialization.Encoding.X962,
                            serialization.PublicFormat.UncompressedPoint)


def _ecdh_kek(z, epk, recipient_pub, info=ECDH_INFO):
    """KEK' = HKDF-SHA256(Z, salt = EPK || recipient point, info, 32)  (§3)."""
    return HKDF(hashes.SHA256(), 32, epk + _point(recipient_pub), info).derive(z)


def _oaep():
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def wrap_dek(kek, dek):
    """Return (algorithm number, wrapped DEK) for the writer (§3)."""
    if kek.kind == "oct":
        return ALG_A256KW, aes_key_wrap(kek.secret, dek)
    if kek.kind == "rsa":
        if not 2048 <= kek.pub.key_size <= 4096:
            raise ErrKeyFile(f"RSA key of {kek.pub.key_size} bits (need 2048..4096)")
        return ALG_RSA, kek.pub.encrypt(dek, _oaep())
    alg = _ec_alg(kek.pub.curve)
    eph = ec.generate_private_key(kek.pub.curve)
    epk = _point(eph.public_key())
    z = eph.exchange(ec.ECDH(), kek.pub)
    return alg, epk + aes_key_wrap(_ecdh_kek(z, epk, kek.pub), dek)


def unwrap_dek(kek, alg, wrapped, info=ECDH_INFO):
    """Recover the DEK; any mismatch or failure is ErrWrongKey (§3, §6.2 step 2)."""
    try:
        if alg == ALG_A256KW:
            if kek.kind != "oct":
                raise ErrWrongKey(f"{ALG_NAMES[alg]} needs an AES-256 key, got {kek.kind}")
            dek = aes_key_unwrap(kek.secret, wrapped)
        elif alg == ALG_RSA:
            if kek.kind != "rsa" or kek.priv is None:
                raise ErrWrongKey("RSA-OAEP-256 needs an RSA private key")
            if (kek.priv.key_size + 7) // 8 != len(wrapped):
                raise ErrWrongKey(f"wrapped DEK is {len(wrapped)} bytes, RSA modulus is "
                                  f"{(kek.priv.key_size + 7) // 8}")
            dek = kek.priv.decrypt(wrapped, _oaep())
        else:
            curve_cls, epk_len, _ = EC_ALGS[alg]
            if kek.kind != "ec" or kek.priv is None or not isinstance(kek.priv.curve, curve_cls):
                raise ErrWrongKey(f"{ALG_NAMES[alg]} needs an EC {curve_cls.name} private key")
            epk, kw = wrapped[:epk_len], wrapped[epk_len:]
            if epk[0] != 4:
                raise ErrWrongKey("EPK is not an uncompressed point")
            try:   # from_encoded_point checks that the point is on the curve
                eph_pub = ec.EllipticCurvePublicKey.from_encoded_point(curve_cls(), epk)
            except ValueError:
                raise ErrWrongKey("EPK is not a valid point on the curve") from None
            z = kek.priv.exchange(ec.ECDH(), eph_pub)
            dek = aes_key_unwrap(_ecdh_kek(z, epk, kek.pub, info), kw)
    except (InvalidUnwrap, ValueError):
        raise ErrWrongKey("unwrapping the DEK failed") from None
    if len(dek) != DEK_LEN:
        raise ErrWrongKey(f"unwrapped DEK is {len(dek)} bytes, not 32")
    return dek


# ------------------------------------------------------------------- header

class Header:
    """Parsed header (§2). key_ref and name are raw UTF-8 bytes."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    @property
    def body_offset(self):
        return self.header_len

    def to_json(self, object_size=None):
        d = {"version": self.version, "chunk_size": self.chunk_size,
             "header_len": self.header_len, "object_id": self.object_id.hex(),
             "wrap_alg": self.alg, "wrap_alg_name": ALG_NAMES[self.alg],
             "key_ref": self.key_ref.decode(), "name": self.name.decode(),
             "wrapped_dek_len": len(self.wrapped_dek)}
        if self.version == VERSION_2:
            d["wrapped_batch_key_len"] = len(self.wrapped_bk)
            d["seal_count"] = self.seal_count
            d["nonce_table_digest"] = self.table_digest.hex()
        if object_size is not None:
            d["object_size"] = object_size
            try:
                d["chunks"], d["plaintext_size"] = body_layout(object_size, self.header_len,
                                                               self.chunk_size, self.version)
                d["size_valid"] = True
            except ErrInvalidSize:
                d["chunks"], d["plaintext_size"], d["size_valid"] = None, None, False
        return d


def _forbidden(ch):
    """The characters §2.2 forbids in header strings."""
    c = ord(ch)
    return (c < 0x20 or 0x7F <= c <= 0x9F or c in (0x2028, 0x2029, 0x200E, 0x200F)
            or 0x202A <= c <= 0x202E or 0x2066 <= c <= 0x2069)


def _check_text(label, raw):
    """UTF-8, none of the characters §2.2 forbids."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ErrMalformedHeader(f"{label} is not valid UTF-8") from None
    if any(_forbidden(ch) for ch in text):
        raise ErrMalformedHeader(f"{label} contains a control character")
    return text


def parse_preamble(pre):
    """Validate the 16-byte preamble (§2.1); return (H, C)."""
    if pre[:5] != MAGIC:
        raise ErrBadMagic()
    if len(pre) > 5 and pre[5] not in (VERSION, VERSION_2):
        raise ErrUnsupportedVersion(f"version {pre[5]}")
    if len(pre) < PREAMBLE_LEN:
        raise ErrMalformedHeader("object shorter than the 16-byte preamble")
    if pre[6:8] != b"\0\0":
        raise ErrMalformedHeader("reserved bytes are not zero")
    hlen, csize = struct.unpack(">II", pre[8:16])
    min_h = 151 + 40 if pre[5] == VERSION_2 else 71 + 40   # smallest: R = N = 0, W = 40
    if not min_h <= hlen <= MAX_HEADER_LEN:
        raise ErrMalformedHeader(f"header length {hlen} out of range")
    if not MIN_CHUNK <= csize <= MAX_CHUNK:
        raise ErrMalformedHeader(f"chunk size {csize} out of range")
    return hlen, csize


def parse_header(hdr):
    """Parse and validate a complete header (§2); hdr is exactly H bytes."""
    hlen, csize = parse_preamble(hdr[:PREAMBLE_LEN])
    if len(hdr) != hlen:
        raise ErrMalformedHeader("header buffer length differs from H")
    version = hdr[5]
    pos = 16

    def take(n, what):
        nonlocal pos
        if pos + n > hlen - MAC_LEN:
            raise ErrMalformedHeader(f"{what} runs past the header length")
        out = hdr[pos:pos + n]
        pos += n
        return out

    object_id = take(16, "object ID")
    alg = take(1, "algorithm")[0]
    if alg not in ALG_NAMES:
        raise ErrMalformedHeader(f"unknown wrap algorithm {alg}")
    r = struct.unpack(">H", take(2, "key reference length"))[0]
    if r > MAX_KEY_REF:
        raise ErrMalformedHeader(f"key reference length {r} > {MAX_KEY_REF}")
    key_ref = take(r, "key reference")
    n = struct.unpack(">H", take(2, "name length"))[0]
    if n > MAX_NAME:
        raise ErrMalformedHeader(f"name length {n} > {MAX_NAME}")
    name = take(n, "name")
    w = struct.unpack(">H", take(2, "wrapped-DEK length"))[0]
    if w not in expected_wrapped_len(alg):
        raise ErrMalformedHeader(f"wrapped-DEK length {w} wrong for {ALG_NAMES[alg]}")
    wrapped = take(w, "wrapped DEK")
    if version == VERSION_2:                  # §11.1: W is the wrapped batch key
        wrapped_bk = wrapped
        wrapped = take(40, "wrapped DEK")
        seal_count = struct.unpack(">Q", take(8, "seal count"))[0]
        table_digest = take(32, "nonce-table digest")
        if pos + MAC_LEN != hlen:             # H = 151 + R + N + W
            raise ErrMalformedHeader(f"fields add up to {pos + MAC_LEN}, H is {hlen}")
        _check_text("key reference", key_ref)
        _check_text("name", name)
        return Header(version=VERSION_2, header_len=hlen, chunk_size=csize, object_id=object_id,
                      alg=alg, key_ref=key_ref, name=name, wrapped_bk=wrapped_bk,
                      wrapped_dek=wrapped, seal_count=seal_count, table_digest=table_digest,
                      mac=hdr[hlen - MAC_LEN:], raw=bytes(hdr))
    if pos + MAC_LEN != hlen:                 # H must equal 71 + R + N + W
        raise ErrMalformedHeader(f"fields add up to {pos + MAC_LEN}, H is {hlen}")
    _check_text("key reference", key_ref)
    _check_text("name", name)
    return Header(version=VERSION, header_len=hlen, chunk_size=csize, object_id=object_id,
                  alg=alg, key_ref=key_ref, name=name, wrapped_dek=wrapped,
                  mac=hdr[hlen - MAC_LEN:], raw=bytes(hdr))


def build_header(csize, object_id, alg, key_ref, name, wrapped, k_mac):
    """Serialise a header and append its MAC (§2, §4)."""
    hlen = 71 + len(key_ref) + len(name) + len(wrapped)
    body = (MAGIC + bytes([VERSION]) + b"\0\0" + struct.pack(">II", hlen, csize)
            + object_id + bytes([alg])
            + struct.pack(">H", len(key_ref)) + key_ref
            + struct.pack(">H", len(name)) + name
            + struct.pack(">H", len(wrapped)) + wrapped)
    return body + hmac.new(k_mac, body, hashlib.sha256).digest()


# ----------------------------------------------------------- sizes (§5, §6.1)

def chunk_count(plen, csize):
    return 1 if plen == 0 else -(-plen // csize)


def object_size(hlen, csize, plen):
    """Writer's size: S = H + len(P) + 16 n."""
    return hlen + plen + TAG_LEN * chunk_count(plen, csize)


def body_layout(size, hlen, csize, version=VERSION):
    """Return (n, plaintext size) for an object of `size` bytes, or raise ErrInvalidSize."""
    if version == VERSION_2:                  # §11.1: U = C + 28
        b, u = size - hlen, csize + V2_OVERHEAD
        if b < V2_OVERHEAD:
            raise ErrInvalidSize(f"body of {b} bytes")
        n = -(-b // u)
        r = b - (n - 1) * u
        if not (V2_OVERHEAD < r <= u or (n == 1 and r == V2_OVERHEAD)):
            raise ErrInvalidSize(f"last chunk and its nonce would be {r} bytes")
        return n, b - V2_OVERHEAD * n
    b, t = size - hlen, csize + TAG_LEN
    if b < TAG_LEN:
        raise ErrInvalidSize(f"body of {b} bytes")
    n = -(-b // t)
    r = b - (n - 1) * t
    if not (TAG_LEN < r <= t or (n == 1 and r == TAG_LEN)):
        raise ErrInvalidSize(f"last sealed chunk would be {r} bytes")
    return n, b - TAG_LEN * n


def plaintext_size(size, hlen, csize):
    return body_layout(size, hlen, csize)[1]


# ------------------------------------------------------------ key schedule

def derive_keys(dek, object_id, infos=(INFO_CHUNK, INFO_MAC)):
    """§4: PRK = HKDF-Extract(object ID, DEK); K_chunk, K_mac = HKDF-Expand(PRK, info, 32)."""
    prk = hmac.new(object_id, dek, hashlib.sha256).digest()     # RFC 5869 extract
    k_chunk = HKDFExpand(hashes.SHA256(), 32, infos[0]).derive(prk)
    k_mac = HKDFExpand(hashes.SHA256(), 32, infos[1]).derive(prk)
    return k_chunk, k_mac


def chunk_nonce(i, final):
    """nonce_i = BE64(i) || 00 00 00 || final_i  (§5)."""
    return struct.pack(">Q", i) + b"\0\0\0" + (b"\1" if final else b"\0")


# ------------------------------------------------------------------ writing

def _read_full(f, n):
    """Read up to n bytes, looping over short reads (pipes); b'' only at EOF."""
    parts, got = [], 0
    while got < n:
        part = f.read(n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def validate_writer_text(label, text, limit):
    raw = text.encode("utf-8")           # raises on lone surrogates
    if len(raw) > limit:
        raise ErrUsage(f"{label} is {len(raw)} bytes (max {limit})")
    if any(_forbidden(ch) for ch in text):
        raise ErrUsage(f"{label} contains a control character")
    return raw


def encrypt_stream(src, dst, key, name, key_ref="", chunk_size=DEFAULT_CHUNK):
    """Encrypt file-like src into file-like dst, holding at most two chunks in memory."""
    kek = as_kek(key)
    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
        raise ErrUsage(f"chunk size {chunk_size} out of range {MIN_CHUNK}..{MAX_CHUNK}")
    if key_ref and not KEY_REF_RE.match(key_ref):
        raise ErrUsage("key reference must be https://<vault-host>/keys/<name>[/<version>]")
    name_b = validate_writer_text("name", name, MAX_NAME)
    ref_b = validate_writer_text("key reference", key_ref, MAX_KEY_REF)
    dek, object_id = os.urandom(DEK_LEN), os.urandom(16)
    alg, wrapped = wrap_dek(kek, dek)
    k_chunk, k_mac = derive_keys(dek, object_id)
    header = build_header(chunk_size, object_id, alg, ref_b, name_b, wrapped, k_mac)
    d = hashlib.sha256(header).digest()
    aead = AESGCM(k_chunk)
    dst.write(header)
    total = len(header)
    # One chunk of look-ahead tells us whether the current chunk is the final one.
    cur, i = _read_full(src, chunk_size), 0
    while True:
        nxt = _read_full(src, chunk_size) if len(cur) == chunk_size else b""
        final = not nxt
        sealed = aead.encrypt(chunk_nonce(i, final), cur, d)
        dst.write(sealed)
        total += len(sealed)
        if final:
            return total
        cur, i = nxt, i + 1


# ------------------------------------------------------------------ reading

class Opened:
    """An object whose header has been authenticated (§6.2 steps 1-4)."""

    def __init__(self, f, size, header, n, psize, aead, d, table=None):
        self.f, self.size, self.header, self.n, self.psize = f, size, header, n, psize
        self.aead, self.d, self.table = aead, d, table
        # v2: the nonce table follows the last chunk (§11.1)
        self.body_end = size - NONCE_LEN * n if table is not None else size

    def nonce_ad(self, i, final):
        """v1: (nonce_i, D) (§5); v2: (N_i from the table, AD_i) (§11.1)."""
        if self.table is None:
            return chunk_nonce(i, final), self.d
        return (self.table[i * NONCE_LEN:(i + 1) * NONCE_LEN],
                AD_V2 + struct.pack(">Q", i) + (b"\1" if final else b"\0"))

    def read_sealed(self, i):
        t = self.header.chunk_size + TAG_LEN
        start = self.header.header_len + i * t
        length = min(t, self.body_end - start)
        self.f.seek(start)
        data = _read_full(self.f, length)
        if len(data) != length:
            raise ErrTruncated(f"chunk {i}: object shrank while reading")
        return data

    def decrypt_chunk(self, i):
        """Decrypt chunk i; on failure, try the opposite final flag to classify
        the failure as truncation or extension (§5 'What this binds', §8)."""
        sealed = self.read_sealed(i)
        final = i == self.n - 1
        try:
            return self.aead.decrypt(*self._args(i, final, sealed))
        except InvalidTag:
            pass
        try:
            self.aead.decrypt(*self._args(i, not final, sealed))  # plaintext discarded
        except InvalidTag:
            raise ErrChunkAuth(f"chunk {i}") from None
        raise (ErrTruncated if final else ErrExtended)(f"chunk {i}")



def _opened_args(self, i, final, sealed):
    nonce, ad = self.nonce_ad(i, final)
    return nonce, sealed, ad


Opened._args = _opened_args


def _as_file(obj):
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(obj))
    return obj


def _file_size(f):
    pos = f.tell()
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(pos)
    return size


def read_header(f, size):
    """Read and parse the header at the start of f (§6.2 step 1, header part)."""
    f.seek(0)
    pre = _read_full(f, PREAMBLE_LEN)
    hlen, _ = parse_preamble(pre)
    if size < hlen:
        raise ErrMalformedHeader(f"object of {size} bytes is shorter than its {hlen}-byte header")
    return parse_header(pre + _read_full(f, hlen - PREAMBLE_LEN))


def open_object(obj, key, name=None):
    """§6.2 steps 1-4. name: expected logical name (str or bytes) or None to skip."""
    f = _as_file(obj)
    size = _file_size(f)
    hdr = read_header(f, size)                                   # step 1
    if hdr.version == VERSION_2:
        return _open_v2(f, size, hdr, key, name)
    n, psize = body_layout(size, hdr.header_len, hdr.chunk_size)
    dek = unwrap_dek(as_kek(key), hdr.alg, hdr.wrapped_dek)      # step 2
    k_chunk, k_mac = derive_keys(dek, hdr.object_id)             # step 3
    mac = hmac.new(k_mac, hdr.raw[:-MAC_LEN], hashlib.sha256).digest()
    if not hmac.compare_digest(mac, hdr.mac):
        raise ErrHeaderAuth()
    if name is not None:                                         # step 4
        want = name.encode("utf-8") if isinstance(name, str) else bytes(name)
        if want != hdr.name:
            raise ErrNameMismatch(f"sealed for {hdr.name.decode()!r}, expected "
                                  f"{want.decode('utf-8', 'replace')!r}")
    return Opened(f, size, hdr, n, psize, AESGCM(k_chunk), hashlib.sha256(hdr.raw).digest())


def _open_v2(f, size, hdr, key, name):
    """§11.2: sizes, BK, DEK = A256KW-unwrap(BK), MAC, name, table digest."""
    n, psize = body_layout(size, hdr.header_len, hdr.chunk_size, VERSION_2)
    bk = unwrap_dek(as_kek(key), hdr.alg, hdr.wrapped_bk, ECDH_INFO_V2)
    try:
        dek = aes_key_unwrap(bk, hdr.wrapped_dek)
    except (InvalidUnwrap, ValueError):
        raise ErrWrongKey("unwrapping the DEK with the batch key failed") from None
    if len(dek) != DEK_LEN:
        raise ErrWrongKey(f"unwrapped DEK is {len(dek)} bytes, not 32")
    k_chunk, k_mac = derive_keys(dek, hdr.object_id, (INFO_CHUNK_V2, INFO_MAC_V2))
    mac = hmac.new(k_mac, hdr.raw[:-MAC_LEN], hashlib.sha256).digest()
    if not hmac.compare_digest(mac, hdr.mac):
        raise ErrHeaderAuth()
    if name is not None:
        want = name.encode("utf-8") if isinstance(name, str) else bytes(name)
        if want != hdr.name:
            raise ErrNameMismatch(f"sealed for {hdr.name.decode()!r}, expected "
                                  f"{want.decode('utf-8', 'replace')!r}")
    f.seek(size - NONCE_LEN * n)
    table = _read_full(f, NONCE_LEN * n)
    if len(table) != NONCE_LEN * n or not hmac.compare_digest(hashlib.sha256(table).digest(),
                                                                hdr.table_digest):
        raise ErrHeaderAuth("nonce table digest mismatch")
    return Opened(f, size, hdr, n, psize, AESGCM(k_chunk), None, table)


def decrypt_stream(obj, dst, key, name=None):
    """Decrypt a whole object into file-like dst, chunk by chunk; returns the size."""
    o = open_object(obj, key, name)
    for i in range(o.n):
        dst.write(o.decrypt_chunk(i))
    return o.psize


def read_range(obj, key, name, off, length):
    """Return plaintext bytes [off, off+length), decrypting only the chunks that
    cover them (§6.2 step 5).  Like pread, the range is clipped at the end."""
    if off < 0 or length < 0:
        raise ValueError("negative offset or length")
    o = open_object(obj, key, name)
    end = min(off + length, o.psize)
    if off >= end:
        return b""
    c = o.header.chunk_size
    first, last = off // c, (end - 1) // c
    data = b"".join(o.decrypt_chunk(i) for i in range(first, last + 1))
    return data[off - first * c:end - first * c]


# ---------------------------------------------------------------------- CLI

def _atomic_write(out_path, fn):
    """Run fn(file) on a temp file next to out_path; rename only on success."""
    d = os.path.dirname(os.path.abspath(out_path))
    fd, tmp = tempfile.mkstemp(prefix=".skrfs-", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            result = fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out_path)
        return result
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def cmd_decrypt(a):
    kek = load_key(a.key)
    with open(a.input, "rb") as src:
        _atomic_write(a.output, lambda dst: decrypt_stream(src, dst, kek, a.name))


def cmd_encrypt(a):
    kek = load_key(a.key)
    name = a.name if a.name is not None else os.path.basename(a.input)
    with open(a.input, "rb") as src:
        _atomic_write(a.output, lambda dst: encrypt_stream(src, dst, kek, name, a.key_ref,
                                                           a.chunk_size))


def cmd_inspect(a):
    with open(a.input, "rb") as f:
        size = _file_size(f)
        hdr = read_header(f, size)
    print(json.dumps(hdr.to_json(size), indent=2))


def _same_content(path, produce):
    """Compare a file with streamed output without holding either in memory."""
    class Hasher:
        def __init__(self):
            self.h = hashlib.sha256()

        def write(self, b):
            self.h.update(b)
    got = Hasher()
    produce(got)
    want = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            want.update(block)
    return got.h.digest() == want.digest()


def check_case(d, case):
    """Return None if the vector case passes, else a reason string."""
    key = load_key(os.path.join(d, case["key"]), raw=(case["key_type"] == "oct"))
    if key.kind != case["key_type"]:
        return f"key file is {key.kind}, vector says {case['key_type']}"
    # An error case has no plaintext file: compare with the empty file then,
    # the result is irrelevant because success is already a failure.
    want = os.path.join(d, case["plaintext"]) if "plaintext" in case else os.devnull
    try:
        with open(os.path.join(d, case["object"]), "rb") as f:
            ok = _same_content(want, lambda dst: decrypt_stream(f, dst, key, case["name"]))
    except SkrfsError as e:
        if e.kind == case.get("error"):
            return None
        return f"got {e}, expected {case.get('error', 'success')}"
    if "error" in case:
        return f"decrypted, expected {case['error']}"
    return None if ok else "plaintext differs"


def cmd_check_vectors(a):
    with open(os.path.join(a.dir, "vectors.json"), encoding="utf-8") as f:
        cases = json.load(f)
    passed = failed = 0
    for case in cases:
        try:
            reason = check_case(a.dir, case)
        except (SkrfsError, OSError, KeyError) as e:   # broken vector file itself
            reason = f"{type(e).__name__}: {e}"
        if reason is None:
            passed += 1
            print(f"ok {case.get('id')}")
        else:
            failed += 1
            print(f"FAIL {case.get('id')}: {reason}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def main(argv=None):
    p = argparse.ArgumentParser(description="skrfs v1 object tool (independent Python implementation)")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("decrypt")
    s.add_argument("--key", required=True)
    s.add_argument("--name")
    s.add_argument("input")
    s.add_argument("output")
    s = sub.add_parser("encrypt")
    s.add_argument("--key", required=True)
    s.add_argument("--key-ref", default="")
    s.add_argument("--name")
    s.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK)
    s.add_argument("input")
    s.add_argument("output")
    s = sub.add_parser("inspect")
    s.add_argument("input")
    s = sub.add_parser("check-vectors")
    s.add_argument("dir")
    a = p.parse_args(argv)
    try:
        handler = {"decrypt": cmd_decrypt, "encrypt": cmd_encrypt, "inspect": cmd_inspect,
                   "check-vectors": cmd_check_vectors}[a.cmd]
        return handler(a) or 0
    except SkrfsError as e:
        print(str(e).replace("\n", " "), file=sys.stderr)
    except OSError as e:
        print(f"ErrIO: {e}".replace("\n", " "), file=sys.stderr)
    except UnicodeError as e:
        print(f"ErrUsage: {e}".replace("\n", " "), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
