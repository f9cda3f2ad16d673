"""What an auditor runs, with standard tools only: a JOSE library for the certificate and a
few lines of ``cryptography`` for the C2SP checkpoint and the RFC 9162 proofs. It imports
nothing from Unlearnd (it fails if anything did) and reads only the files it is given:

    python check_proofs.py DIR

where DIR holds ``keys.json`` (the JWKS), ``certificate.jws``, ``checkpoint`` (the signed
note), ``checkpoint-keys`` (note verifier keys), ``inclusion.json`` and ``consistency.json``
(the service's proofs for the certificate's event and from its tree to the checkpoint's).
Prints what it checked as JSON; exits 1 with the reason on the first failure.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from joserfc import jws
from joserfc.jwk import KeySet


class Failed(Exception):
    pass


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion(index: int, size: int, leaf: bytes, path: list[bytes], root: bytes) -> None:
    """RFC 9162 section 2.1.3.2."""
    if index >= size:
        raise Failed("inclusion: leaf index outside the tree")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise Failed("inclusion: path too long")
        if fn & 1 or fn == sn:
            r = node(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0 or r != root:
        raise Failed("inclusion: path does not lead to the root")


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes, path: list[bytes]) -> None:
    """RFC 9162 section 2.1.4.2."""
    if first == second:
        if path or first_root != second_root:
            raise Failed("consistency: equal sizes need equal roots and no path")
        return
    if not path:
        raise Failed("consistency: empty path")
    if first & (first - 1) == 0:
        path = [first_root, *path]
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise Failed("consistency: path too long")
        if fn & 1 or fn == sn:
            fr, sr = node(c, fr), node(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if fr != first_root or sr != second_root or sn != 0:
        raise Failed("consistency: path does not connect the two roots")


def verify_checkpoint(note: str, verifier_keys: list[str]) -> tuple[str, int, bytes]:
    """C2SP signed-note + tlog-checkpoint: a body, a blank line, then signature lines."""
    body, _, signatures = note.partition("\n\n")
    body += "\n"
    origin, size, root, *_extensions = body.splitlines()
    for vkey in verifier_keys:
        name, key_hash_hex, key_b64 = vkey.split("+", 2)
        key = base64.b64decode(key_b64)
        if key[0] != 1 or hashlib.sha256(name.encode() + b"\n" + key).digest()[:4].hex() != key_hash_hex:
            raise Failed("a verifier key does not hash to its own key hash")
        for line in signatures.splitlines():
            dash, signer_name, blob_b64 = line.split(" ")
            blob = base64.b64decode(blob_b64)
            if dash != "\u2014" or signer_name != name or blob[:4].hex() != key_hash_hex:
                continue
            Ed25519PublicKey.from_public_bytes(key[1:]).verify(blob[4:], body.encode())  # raises if forged
            if origin != name:
                raise Failed("the checkpoint's origin is not the key's name")
            return origin, int(size), base64.b64decode(root)
    raise Failed("no signature line by a known key")


def main(folder: Path) -> dict[str, object]:
    key_set = KeySet.import_key_set(json.loads((folder / "keys.json").read_text()))
    token = (folder / "certificate.jws").read_text()
    try:
        verified = jws.deserialize_compact(token, key_set, algorithms=["EdDSA"])
    except Exception as exc:  # joserfc's BadSignatureError and friends
        raise Failed(f"JWS: {type(exc).__name__}: {exc}") from None
    certificate = json.loads(verified.payload)["certificate"]
    anchor = certificate["anchor"]
    event, head = anchor["event"], anchor["tree_head"]
    leaf = hashlib.sha256(b"\x00" + bytes.fromhex(event["hash"])).digest()
    proof = anchor["inclusion_proof"]
    verify_inclusion(proof["leaf_index"], proof["tree_size"], leaf, [bytes.fromhex(p) for p in proof["audit_path"]],
                     bytes.fromhex(head["root_hash"]))

    origin, size, root = verify_checkpoint((folder / "checkpoint").read_text(),
                                           (folder / "checkpoint-keys").read_text().split())
    consistency = json.loads((folder / "consistency.json").read_text())
    if (consistency["first_size"], consistency["second_size"]) != (head["tree_size"], size):
        raise Failed("consistency proof is for other tree sizes")
    verify_consistency(head["tree_size"], size, bytes.fromhex(head["root_hash"]), root,
                       [bytes.fromhex(p) for p in consistency["proof"]])
    inclusion = json.loads((folder / "inclusion.json").read_text())
    if (inclusion["leaf_index"], inclusion["tree_size"]) != (event["seq"] - 1, size):
        raise Failed("inclusion proof is for another leaf or tree")
    verify_inclusion(inclusion["leaf_index"], size, leaf, [bytes.fromhex(p) for p in inclusion["audit_path"]], root)
    loaded = sorted(m for m in sys.modules if m == "app" or m.startswith(("app.", "workers")))
    if loaded:
        raise Failed(f"the auditor's check imported Unlearnd: {loaded}")
    return {"request_id": certificate["request"]["id"], "jws_kid": verified.headers()["kid"],
            "certificate_tree_size": head["tree_size"], "checkpoint_origin": origin, "checkpoint_size": size}


if __name__ == "__main__":
    try:
        print(json.dumps(main(Path(sys.argv[1]))))
    except Exception as exc:  # any failure, including a forged signature, is the auditor's "no"
        print(f"FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
