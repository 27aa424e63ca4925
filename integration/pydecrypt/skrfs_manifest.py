#!/usr/bin/python3
"""Independent verifier of skrfs signed dataset manifests.

Written from docs/format.md section 12 alone (no Go code consulted).  Section
numbers in comments ("§12.2") refer to that document.  Needs only the
standard library and `cryptography`.

Usage:
  skrfs_manifest.py verify --signer PEM [--signer PEM ...] MANIFEST
  skrfs_manifest.py check-vectors DIR
"""

import argparse
import base64
import datetime
import hashlib
import json
import os
import re
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

MAX_MANIFEST = 256 * 1024 * 1024          # §12.1
MAX_ENTRIES = 10_000_000
MAX_INT = 2 ** 53 - 1
TYP = "skrfs-manifest+jws"
REFUSED_MEMBERS = ("crit", "jku", "jwk", "x5u", "x5c", "b64")
DATASET_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
CREATED_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
HEX64_RE = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(Exception):
    kind = "ErrManifest"


class Malformed(ManifestError):
    kind = "ErrManifestMalformed"


class Signer(ManifestError):
    kind = "ErrManifestSigner"


class Signature(ManifestError):
    kind = "ErrManifestSignature"


def b64d(s):
    if not re.fullmatch(r"[A-Za-z0-9_-]*", s) or len(s) % 4 == 1:
        raise ValueError("not base64url")
    b = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    if b64e(b) != s:  # §12.1: base64url without padding; one encoding only
        raise ValueError("non-canonical base64url")
    return b


def b64e(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def thumbprint(pub):
    """RFC 7638 JWK thumbprint (SHA-256, base64url): the kid (§12.1)."""
    if isinstance(pub, ec.EllipticCurvePublicKey):
        size = {"secp256r1": 32, "secp384r1": 48}[pub.curve.name]
        crv = {"secp256r1": "P-256", "secp384r1": "P-384"}[pub.curve.name]
        n = pub.public_numbers()
        canon = '{"crv":"%s","kty":"EC","x":"%s","y":"%s"}' % (
            crv, b64e(n.x.to_bytes(size, "big")), b64e(n.y.to_bytes(size, "big")))
    elif isinstance(pub, rsa.RSAPublicKey):
        n = pub.public_numbers()
        e = n.e.to_bytes((n.e.bit_length() + 7) // 8, "big")
        canon = '{"e":"%s","kty":"RSA","n":"%s"}' % (
            b64e(e), b64e(n.n.to_bytes((n.n.bit_length() + 7) // 8, "big")))
    else:
        raise TypeError("unsupported key")
    return b64e(hashlib.sha256(canon.encode()).digest())


def key_alg(pub):
    if isinstance(pub, ec.EllipticCurvePublicKey):
        return {"secp256r1": "ES256", "secp384r1": "ES384"}.get(pub.curve.name)
    if isinstance(pub, rsa.RSAPublicKey) and 2048 <= pub.key_size <= 4096:
        return "PS256"
    return None


def load_public(path):
    with open(path, "rb") as f:
        return serialization.load_pem_public_key(f.read())


def _verify_sig(alg, pub, signing_input, sig):
    try:
        if alg in ("ES256", "ES384"):
            size = 32 if alg == "ES256" else 48
            if len(sig) != 2 * size:
                raise Signature("bad signature length")
            r = int.from_bytes(sig[:size], "big")
            s = int.from_bytes(sig[size:], "big")
            h = hashes.SHA256() if alg == "ES256" else hashes.SHA384()
            pub.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(h))
        else:
            pub.verify(sig, signing_input,
                       padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
                       hashes.SHA256())
    except InvalidSignature:
        raise Signature("signature does not verify")


def _no_dups(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise Malformed("duplicate member %r" % k)
        d[k] = v
    return d


def _is_uint(v):
    return type(v) is int and 0 <= v <= MAX_INT


def _check_name(name):
    # §12.1 entry rules, with §2.2's forbidden characters.
    if not isinstance(name, str) or not name or len(name.encode("utf-8", "surrogatepass")) > 4096:
        raise Malformed("bad entry name")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise Malformed("entry name is not UTF-8")
    for ch in name:
        o = ord(ch)
        if o <= 0x1F or 0x7F <= o <= 0x9F or o in (0x2028, 0x2029, 0x200E, 0x200F) \
                or 0x202A <= o <= 0x202E or 0x2066 <= o <= 0x2069:
            raise Malformed("forbidden character in %r" % name)
    if name.startswith(".skrfs/"):
        raise Malformed("reserved name")
    for seg in name.split("/"):
        if seg in ("", ".", ".."):
            raise Malformed("bad segment in %r" % name)


def _parse_int_strict(raw_payload):
    """json.loads hook: refuse floats, and integers written with a sign,
    exponent or leading zero are refused by the regular expression check."""
    def parse_float(s):
        raise Malformed("non-integer number %s" % s)

    def parse_int(s):
        if not re.fullmatch(r"0|[1-9][0-9]*", s):
            raise Malformed("integer %s" % s)
        return int(s)
    return json.loads(raw_payload, object_pairs_hook=_no_dups,
                      parse_float=parse_float, parse_int=parse_int,
                      parse_constant=lambda c: (_ for _ in ()).throw(Malformed(c)))


def verify(token, pinned):
    """§12.2, in order. token: bytes; pinned: list of public keys.  Returns
    the payload dict with 'alg' and 'kid' added."""
    # 1. size and three parts
    if len(token) > MAX_MANIFEST:
        raise Malformed("too large")
    try:
        text = token.decode("ascii")
    except UnicodeDecodeError:
        raise Malformed("not ASCII")
    parts = text.split(".")
    if len(parts) != 3 or not all(parts):
        raise Malformed("not a compact JWS")
    # 2. protected header
    try:
        hdr = json.loads(b64d(parts[0]).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise Malformed("protected header")
    if not isinstance(hdr, dict):
        raise Malformed("protected header is not an object")
    for m in REFUSED_MEMBERS:
        if m in hdr:
            raise Malformed("refused member %s" % m)
    alg, typ, kid = hdr.get("alg"), hdr.get("typ"), hdr.get("kid")
    if alg not in ("ES256", "ES384", "PS256") or typ != TYP or not isinstance(kid, str) or not kid:
        raise Malformed("alg/typ/kid")
    # 3. pinned signer of the right kind
    keys = {thumbprint(k): k for k in pinned}
    pub = keys.get(kid)
    if pub is None:
        raise Signer("kid %s is not pinned" % kid)
    if key_alg(pub) != alg:
        raise Signer("kid %s is not a %s key" % (kid, alg))
    # 4. signature
    try:
        sig = b64d(parts[2])
    except ValueError:
        raise Signature("signature is not base64url")
    _verify_sig(alg, pub, (parts[0] + "." + parts[1]).encode("ascii"), sig)
    # 5. payload
    try:
        raw = b64d(parts[1]).decode("utf-8")
        p = _parse_int_strict(raw)
    except Malformed:
        raise
    except (ValueError, UnicodeDecodeError):
        raise Malformed("payload is not JSON")
    if not isinstance(p, dict) or set(p) != {"v", "dataset", "epoch", "created", "entries"}:
        raise Malformed("payload members")
    if p["v"] != 1 or type(p["v"]) is not int:
        raise Malformed("payload version")
    if not isinstance(p["dataset"], str) or not DATASET_RE.match(p["dataset"]):
        raise Malformed("dataset id")
    if not _is_uint(p["epoch"]) or p["epoch"] < 1:
        raise Malformed("epoch")
    c = p["created"]
    if not isinstance(c, str) or not CREATED_RE.match(c):
        raise Malformed("created")
    try:
        datetime.datetime.strptime(c, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        raise Malformed("created")
    ents = p["entries"]
    if not isinstance(ents, list) or len(ents) > MAX_ENTRIES:
        raise Malformed("entries")
    prev = None
    for e in ents:
        if not isinstance(e, dict) or set(e) != {"name", "size", "sha256"}:
            raise Malformed("entry members")
        _check_name(e["name"])
        if not _is_uint(e["size"]):
            raise Malformed("size")
        if not isinstance(e["sha256"], str) or not HEX64_RE.match(e["sha256"]):
            raise Malformed("sha256")
        key = e["name"].encode("utf-8")
        if prev is not None and not prev < key:
            raise Malformed("entries not strictly increasing")
        prev = key
    p["alg"], p["kid"] = alg, kid
    return p


def header_digest(obj):
    """SHA-256 of an object's header[0:H] (§12.1; H at offset 8, §2.1)."""
    h = int.from_bytes(obj[8:12], "big")
    return hashlib.sha256(obj[:h]).hexdigest()


def check_vectors(d):
    with open(os.path.join(d, "vectors.json")) as f:
        cases = json.load(f)
    bad = 0
    for c in cases:
        with open(os.path.join(d, c["manifest"]), "rb") as f:
            tok = f.read()
        pinned = [load_public(os.path.join(d, s)) for s in c["signers"]]
        try:
            p = verify(tok, pinned)
            got = None
        except ManifestError as e:
            p, got = None, e.kind
        ok = True
        if c.get("error"):
            ok = got == c["error"]
        elif got is not None:
            ok = False
        else:
            ok = (p["dataset"] == c["dataset"] and p["epoch"] == c["epoch"]
                  and p["created"] == c["created"] and p["alg"] == c["alg"]
                  and p["entries"] == c.get("entries", []))
            # The entries pin the v1 vectors' headers (../../v1).
            for name, fname in (c.get("v1_objects") or {}).items():
                with open(os.path.join(d, "..", "..", "v1", fname), "rb") as f:
                    obj = f.read()
                ent = [e for e in p["entries"] if e["name"] == name]
                ok = ok and len(ent) == 1 and ent[0]["sha256"] == header_digest(obj)
        print("%-28s %s%s" % (c["id"], "ok" if ok else "FAIL", "" if ok else " (got %s)" % got))
        bad += not ok
    if bad:
        print("%d manifest vector(s) failed" % bad)
        return 1
    print("all %d manifest vectors ok" % len(cases))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("verify")
    v.add_argument("--signer", action="append", required=True)
    v.add_argument("manifest")
    cv = sub.add_parser("check-vectors")
    cv.add_argument("dir")
    a = ap.parse_args(argv)
    if a.cmd == "check-vectors":
        return check_vectors(a.dir)
    with open(a.manifest, "rb") as f:
        tok = f.read()
    try:
        p = verify(tok, [load_public(s) for s in a.signer])
    except ManifestError as e:
        print("refused: %s: %s" % (e.kind, e), file=sys.stderr)
        return 1
    print(json.dumps({k: p[k] for k in ("dataset", "epoch", "created", "alg", "kid")}))
    print("%d entries" % len(p["entries"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
