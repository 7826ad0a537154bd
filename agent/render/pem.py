"""The PEM and PKCS#12 filters: the certificates and the private key of PEM text or of a PKCS#12 file.

Why a module of its own: both read data shaped by whoever wrote the secret, with care the other filters
(``agent.render.filters``) do not need. PEM blocks are found by a linear scan: a regular expression with a
lazy body would be quadratic on BEGIN lines without an END. A PKCS#12 file chooses its own key-derivation
rounds, enough to keep OpenSSL busy for minutes, so before OpenSSL sees a file its DER is walked
(iteratively, bounded in depth and in elements) and every iteration count visible there is checked
against ``MAX_PKCS12_ITERATIONS``; a file already read is kept in the render's budget cache.

Known limit: a PKCS#12 file's key-derivation rounds are checked where they are visible before decryption
(the MAC and each bag's encryption parameters); the parameters of a key bag nested inside an encrypted bag
become visible only to OpenSSL.
"""

from __future__ import annotations

import re
from typing import Any

from agent.render.budget import RenderFault, current
from agent.render.keys import ExtractError, decode_payload
from agent.render.values import to_text

MAX_PKCS12_ITERATIONS = 1_000_000
"""Most key-derivation rounds of one PKCS#12 parameter (OpenSSL uses 2,048; 1,000,000 takes ~0.25 s)."""

# --- PEM -------------------------------------------------------------------------------------------------

_PEM_BEGIN = re.compile(r"-----BEGIN ([A-Z0-9][A-Z0-9 ]{0,62})-----")
_PRIVATE_KEY_LABELS = frozenset({"PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY"})


def _pem_text(value: Any, what: str) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8").replace("\r\n", "\n")
        except UnicodeDecodeError:
            raise RenderFault(f"{what}: the data is not PEM text") from None
    return to_text(value).replace("\r\n", "\n")


def _pem_blocks(text: str, what: str) -> list[tuple[str, str]]:
    blocks: list[tuple[str, str]] = []
    position = 0
    while (begin := _PEM_BEGIN.search(text, position)) is not None:
        current().step()
        label = begin[1]
        end_line = f"-----END {label}-----"
        end = text.find(end_line, begin.end())
        if end < 0 or "-----" in text[begin.end() : end]:
            raise RenderFault(f"{what}: a PEM block without its END line")
        position = end + len(end_line)
        blocks.append((label, text[begin.start() : position] + "\n"))
    return blocks


def pem_certificates(value: Any) -> list[str]:
    """Every CERTIFICATE block of PEM text, in order."""
    what = "filter 'pem_certificates'"
    found = [block for label, block in _pem_blocks(_pem_text(value, what), what) if label == "CERTIFICATE"]
    if not found:
        raise RenderFault(f"{what}: no CERTIFICATE block")
    return found


def pem_private_key(value: Any) -> str:
    """The one private key block of PEM text."""
    what = "filter 'pem_private_key'"
    found = [
        block for label, block in _pem_blocks(_pem_text(value, what), what) if label in _PRIVATE_KEY_LABELS
    ]
    if len(found) != 1:
        raise RenderFault(f"{what}: {'no' if not found else 'more than one'} private key block")
    return found[0]


# --- PKCS#12 ---------------------------------------------------------------------------------------------


def _der_elements(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """(tag, content start, content end) of the DER elements filling data[start:end]; ValueError if they
    do not."""
    elements: list[tuple[int, int, int]] = []
    position = start
    while position < end:
        if end - position < 2 or data[position] & 0x1F == 0x1F:
            raise ValueError("not DER")
        tag, length = data[position], data[position + 1]
        position += 2
        if length & 0x80:
            width = length & 0x7F
            if not 0 < width <= 4 or position + width > end:
                raise ValueError("not DER")
            length = int.from_bytes(data[position : position + width], "big")
            position += width
        if position + length > end:
            raise ValueError("not DER")
        elements.append((tag, position, position + length))
        position += length
    return elements


def _check_pkcs12_rounds(data: bytes) -> None:
    """Refuse a PKCS#12 file whose key derivation would take too long: every visible iteration count (the
    MAC's ``SEQUENCE {DigestInfo, salt, iterations}`` and every PBE or PBKDF2 ``SEQUENCE {salt,
    iterations, ...}``), found by walking its DER, nested OCTET STRINGs included."""
    stack = [(0, len(data), 0)]
    visited = total = 0
    while stack:
        start, end, depth = stack.pop()
        try:
            elements = _der_elements(data, start, end)
        except ValueError:
            continue
        tags = [tag for tag, _, _ in elements]
        counts = []
        if tags[:2] == [0x04, 0x02]:
            counts.append(elements[1])
        if tags[:3] == [0x30, 0x04, 0x02]:
            counts.append(elements[2])
        for _, begin, finish in counts:
            rounds = int.from_bytes(data[begin:finish], "big", signed=True)
            total += rounds
            if finish - begin > 4 or rounds > MAX_PKCS12_ITERATIONS or total > 3 * MAX_PKCS12_ITERATIONS:
                raise RenderFault(
                    f"pkcs12: the data asks for more than {MAX_PKCS12_ITERATIONS} key-derivation rounds"
                )
        for tag, begin, finish in elements:
            visited += 1
            if visited > 50_000 or depth > 32:
                raise RenderFault("pkcs12: the data nests too deeply or holds too many elements")
            if tag & 0x20 or (tag == 0x04 and finish > begin and data[begin] == 0x30):
                stack.append((begin, finish, depth + 1))


_Pkcs12 = tuple[Any, Any, list[Any]]


def _pkcs12(value: Any, password: Any) -> _Pkcs12:
    budget = current()
    if isinstance(value, bytes):
        data = value
    else:
        try:
            data = decode_payload(to_text(value).encode("utf-8"), "base64")
        except ExtractError:
            raise RenderFault("pkcs12: the text is not base64 of PKCS#12 data") from None
    secret = (
        None if password is None else password if isinstance(password, bytes) else to_text(password).encode()
    )
    cache_key = ("pkcs12", data, secret)
    cached = budget.cache.get(cache_key)
    if cached is not None:
        return cached  # type: ignore[return-value]
    _check_pkcs12_rounds(data)
    from cryptography.hazmat.primitives.serialization import pkcs12  # only templates reading PKCS#12 pay

    try:
        key, certificate, others = pkcs12.load_key_and_certificates(data, secret)
    except Exception:
        raise RenderFault("pkcs12: cannot read the PKCS#12 data (a wrong password, or not PKCS#12)") from None
    budget.check_time()
    result: _Pkcs12 = (key, certificate, list(others))
    budget.cache[cache_key] = result
    return result


def pkcs12_certificates(value: Any, password: Any = None) -> list[str]:
    """The certificates of a PKCS#12 file (binary, or base64 text) as PEM: its own first, then the others."""
    _, certificate, others = _pkcs12(value, password)
    found = ([certificate] if certificate is not None else []) + others
    if not found:
        raise RenderFault("pkcs12: the PKCS#12 data holds no certificate")
    from cryptography.hazmat.primitives import serialization

    return [item.public_bytes(serialization.Encoding.PEM).decode("ascii") for item in found]


def pkcs12_private_key(value: Any, password: Any = None) -> str:
    """The private key of a PKCS#12 file (binary, or base64 text) as unencrypted PKCS#8 PEM."""
    key, _, _ = _pkcs12(value, password)
    if key is None:
        raise RenderFault("pkcs12: the PKCS#12 data holds no private key")
    from cryptography.hazmat.primitives import serialization

    pem: bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem.decode("ascii")


__all__ = [
    "MAX_PKCS12_ITERATIONS",
    "pem_certificates",
    "pem_private_key",
    "pkcs12_certificates",
    "pkcs12_private_key",
]
