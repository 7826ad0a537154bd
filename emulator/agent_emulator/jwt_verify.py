"""Verifying a subject token (a JWT, RS256 or ES256) against keys the identity config trusts.

Pure functions, no network: keys come from a JWKS document or PEM text the config holds (inline or from a
file), never from the issuer's discovery document. Everything a hostile token can make the verifier do is
bounded: the token's size (:data:`MAX_TOKEN_BYTES`), its JSON (depth, number sizes, through
:mod:`agent_emulator.bounded`), and the keys tried (those of the token's algorithm and ``kid`` only).

Errors are :class:`JwtRejected`, whose ``reason`` says what failed in Google's STS wording; it never quotes
the token (a subject token is a credential), only claims that name things (issuer, audience, times).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from agent_emulator import bounded

MAX_TOKEN_BYTES = 16 * 1024
"""Longest subject token accepted (a Kubernetes service-account token is about 1 KiB)."""
MAX_KEYS = 100
"""Most keys one provider may trust (a JWKS during a key rotation holds two or three)."""
MIN_RSA_BITS = 2048
"""Smallest RSA modulus accepted, as Google's workload identity pools require."""
MAX_RSA_BITS = 8192
"""Largest RSA modulus accepted (verification cost grows with it)."""
CLOCK_SKEW_SECONDS = 60.0
"""Tolerance on ``exp``, ``iat`` and ``nbf``: Google's STS accepts about a minute either way."""

Algorithm = Literal["RS256", "ES256"]
ALGORITHMS: tuple[Algorithm, ...] = ("RS256", "ES256")

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_PEM_BLOCK = re.compile(
    r"-----BEGIN (PUBLIC KEY|RSA PUBLIC KEY|CERTIFICATE)-----[A-Za-z0-9+/=\s]*?-----END \1-----"
)

# What the STS answers, by failure (Google's wording, measured against sts.googleapis.com).
UNPARSABLE = "Unable to parse the ID Token."
NO_KEY = "Error connecting to the given credential's issuer."
BAD_SIGNATURE = "Unable to verify the ID Token signature."


class JwtRejected(Exception):
    """The subject token is refused; ``error`` is the OAuth error code, ``reason`` the description."""

    def __init__(self, reason: str, error: str = "invalid_grant") -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error


class KeyProblem(ValueError):
    """A trusted key that cannot be used (malformed JWKS or PEM, unsupported type, key too small)."""


@dataclass(frozen=True)
class VerificationKey:
    """One public key a provider trusts, with its ``kid`` when the JWKS named one."""

    algorithm: Algorithm
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    kid: str | None = None


@dataclass(frozen=True)
class DecodedJwt:
    """A JWT split and decoded, not yet verified."""

    header: Mapping[str, Any]
    claims: Mapping[str, Any]
    signing_input: bytes
    signature: bytes


# ---- keys -----------------------------------------------------------------------------------------------


def _b64url_decode(text: str) -> bytes:
    if not isinstance(text, str) or not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _rsa_key(key: rsa.RSAPublicKey, kid: str | None, where: str) -> VerificationKey:
    if not MIN_RSA_BITS <= key.key_size <= MAX_RSA_BITS:
        raise KeyProblem(
            f"{where}: an RSA key of {key.key_size} bits; expected {MIN_RSA_BITS} to {MAX_RSA_BITS} bits"
        )
    return VerificationKey("RS256", key, kid)


def _ec_key(key: ec.EllipticCurvePublicKey, kid: str | None, where: str) -> VerificationKey:
    if not isinstance(key.curve, ec.SECP256R1):
        raise KeyProblem(f"{where}: an EC key on {key.curve.name}; only P-256 (ES256) is supported")
    return VerificationKey("ES256", key, kid)


def _jwk(entry: object, where: str) -> VerificationKey:
    if not isinstance(entry, Mapping):
        raise KeyProblem(f"{where}: expected a JWK (a mapping), got {type(entry).__name__}")
    kid = entry.get("kid")
    if kid is not None and (not isinstance(kid, str) or len(kid) > 256):
        raise KeyProblem(f"{where}.kid: expected a string of at most 256 characters")
    use = entry.get("use")
    if use is not None and use != "sig":
        raise KeyProblem(f"{where}.use: a signing key has use 'sig' (or none)")
    alg = entry.get("alg")
    kty = entry.get("kty")
    try:
        if kty == "RSA":
            if alg is not None and alg != "RS256":
                raise KeyProblem(f"{where}.alg: {bounded.shown(alg)} is not supported; RSA keys verify RS256")
            n = int.from_bytes(_b64url_decode(entry.get("n", "")), "big")
            e = int.from_bytes(_b64url_decode(entry.get("e", "")), "big")
            return _rsa_key(rsa.RSAPublicNumbers(e, n).public_key(), kid, where)
        if kty == "EC":
            if alg is not None and alg != "ES256":
                raise KeyProblem(f"{where}.alg: {bounded.shown(alg)} is not supported; EC keys verify ES256")
            if entry.get("crv") != "P-256":
                raise KeyProblem(f"{where}.crv: only P-256 is supported")
            x = int.from_bytes(_b64url_decode(entry.get("x", "")), "big")
            y = int.from_bytes(_b64url_decode(entry.get("y", "")), "big")
            return _ec_key(ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key(), kid, where)
    except KeyProblem:
        raise
    except ValueError:
        raise KeyProblem(f"{where}: the key material is not a valid {kty} public key") from None
    raise KeyProblem(f"{where}.kty: expected RSA or EC, got {bounded.shown(kty)}")


def keys_from_jwks(document: object) -> list[VerificationKey]:
    """The keys of a JWKS document (``{"keys": [...]}``, decoded JSON); KeyProblem naming the bad entry."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise KeyProblem('a JWKS is a mapping {"keys": [...]}')
    entries = document["keys"]
    if not entries:
        raise KeyProblem("the JWKS has no keys")
    if len(entries) > MAX_KEYS:
        raise KeyProblem(f"the JWKS has {len(entries)} keys; at most {MAX_KEYS} are accepted")
    return [_jwk(entry, f"keys[{index}]") for index, entry in enumerate(entries)]


def keys_from_pem(text: str) -> list[VerificationKey]:
    """The keys of PEM text: one or more ``PUBLIC KEY`` (or ``RSA PUBLIC KEY``) or ``CERTIFICATE`` blocks."""
    blocks = [match.group(0) for match in _PEM_BLOCK.finditer(text)]
    if not blocks:
        raise KeyProblem("no PEM block found (expected -----BEGIN PUBLIC KEY----- or a CERTIFICATE)")
    if len(blocks) > MAX_KEYS:
        raise KeyProblem(f"{len(blocks)} PEM blocks; at most {MAX_KEYS} are accepted")
    found: list[VerificationKey] = []
    for index, block in enumerate(blocks):
        try:
            if "CERTIFICATE" in block.split("\n", 1)[0]:
                key: Any = x509.load_pem_x509_certificate(block.encode()).public_key()
            else:
                key = serialization.load_pem_public_key(block.encode())
        except ValueError:
            raise KeyProblem(f"PEM block {index + 1} is not a valid public key or certificate") from None
        if isinstance(key, rsa.RSAPublicKey):
            found.append(_rsa_key(key, None, f"PEM block {index + 1}"))
        elif isinstance(key, ec.EllipticCurvePublicKey):
            found.append(_ec_key(key, None, f"PEM block {index + 1}"))
        else:
            raise KeyProblem(f"PEM block {index + 1}: only RSA and EC P-256 keys are supported")
    return found


# ---- tokens ---------------------------------------------------------------------------------------------


def _json_part(text: str) -> Any:
    try:
        return bounded.loads_json(_b64url_decode(text).decode("utf-8"))
    except (ValueError, binascii.Error, UnicodeDecodeError, bounded.InputError):
        raise JwtRejected(UNPARSABLE) from None


def decode(token: str) -> DecodedJwt:
    """Split a compact JWS into header, claims and signature; JwtRejected when it is not one."""
    if len(token.encode("utf-8", "replace")) > MAX_TOKEN_BYTES:
        raise JwtRejected(f"The ID Token is larger than {MAX_TOKEN_BYTES} bytes.", "invalid_request")
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise JwtRejected(UNPARSABLE)
    header = _json_part(parts[0])
    claims = _json_part(parts[1])
    try:
        signature = _b64url_decode(parts[2])
    except (ValueError, binascii.Error):
        raise JwtRejected(UNPARSABLE) from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise JwtRejected(UNPARSABLE)
    return DecodedJwt(header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), signature)


def _verifies(key: VerificationKey, jwt: DecodedJwt) -> bool:
    try:
        if isinstance(key.public_key, rsa.RSAPublicKey):
            key.public_key.verify(jwt.signature, jwt.signing_input, padding.PKCS1v15(), hashes.SHA256())
        else:
            if len(jwt.signature) != 64:
                return False
            r = int.from_bytes(jwt.signature[:32], "big")
            s = int.from_bytes(jwt.signature[32:], "big")
            key.public_key.verify(encode_dss_signature(r, s), jwt.signing_input, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def verify_signature(jwt: DecodedJwt, keys: Sequence[VerificationKey]) -> None:
    """Check the signature with the trusted keys of the token's ``alg`` (and ``kid``, when both name one).

    No such key: Google's "Error connecting to the given credential's issuer." (what its STS says when it
    finds no key for the token); a key but a bad signature: "Unable to verify the ID Token signature.".
    """
    alg = jwt.header.get("alg")
    kid = jwt.header.get("kid")
    candidates = [
        key for key in keys if key.algorithm == alg and (kid is None or key.kid is None or key.kid == kid)
    ]
    if not candidates:
        raise JwtRejected(NO_KEY)
    if not any(_verifies(key, jwt) for key in candidates):
        raise JwtRejected(BAD_SIGNATURE)


def clip(value: object, limit: int = 200) -> str:
    """A claim as an error message may show it: ``null`` when absent, cut to ``limit`` characters."""
    if value is None:
        return "null"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=True)[: limit + 1]
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= limit else text[:limit] + "..."


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) < 1e13:
        return float(value)
    return None


def _audiences(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value[:50] if isinstance(item, str)]
    return []


def check_claims(claims: Mapping[str, Any], *, issuer: str, audiences: Iterable[str], now: float) -> float:
    """Check ``iss``, ``aud`` and the time window (``iat``, ``exp``, ``nbf``, with CLOCK_SKEW_SECONDS) the
    way Google's STS does, in its wording; returns ``exp``."""
    iss = claims.get("iss")
    if iss != issuer:
        raise JwtRejected(
            f"The issuer in ID Token {clip(iss)} does not match the expected one in config: {issuer}"
        )
    given = _audiences(claims.get("aud"))
    if not set(given) & set(audiences):
        shown = ", ".join(clip(item, 120) for item in given[:5]) + (", ..." if len(given) > 5 else "")
        raise JwtRejected(f"The audience in ID Token [{shown}] does not match the expected audience.")
    iat = _number(claims.get("iat"))
    exp = _number(claims.get("exp"))
    nbf = claims.get("nbf")
    stale = JwtRejected(f"ID Token issued at {clip(claims.get('iat'), 40)} is stale to sign-in.")
    if iat is None or exp is None or exp + CLOCK_SKEW_SECONDS < now or iat > now + CLOCK_SKEW_SECONDS:
        raise stale
    if nbf is not None:
        not_before = _number(nbf)
        if not_before is None or not_before > now + CLOCK_SKEW_SECONDS:
            raise stale
    return exp
