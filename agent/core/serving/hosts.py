"""Which ``Host`` header values a listener answers: the defence against DNS rebinding.

A web page in a developer's browser can make its own DNS name resolve to 127.0.0.1 (or a pod IP) and then
read whatever a listener there answers, as a same-origin request: the browser sends that name in ``Host``.
Refusing names we do not know closes the hole; an IP literal in ``Host`` involves no DNS, so it cannot be
rebound.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

LOOPBACK_NAMES = frozenset({"localhost"})
"""The names that always mean this machine (RFC 6761), whatever DNS says."""

_HOST = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+(?:%[\w.~-]+)?)\]|(?P<name>[^:\[\]]+))(?::(?P<port>\d*))?")

HostKind = Literal["loopback", "ip", "name", "invalid"]


@functools.lru_cache(maxsize=256)
def parse_host(header: str) -> tuple[HostKind, str]:
    """``Host`` -> (kind, normalised name): ``127.0.0.1:8730`` -> ``("loopback", "127.0.0.1")``,
    ``[fd00::1]`` -> ``("ip", "fd00::1")``, ``Example.COM.`` -> ``("name", "example.com")``; anything else is
    ``("invalid", "")``. Cached: clients send the same few values over and over."""
    match = _HOST.fullmatch(header.strip())
    if match is None:
        return "invalid", ""
    text = match["v6"] or match["name"]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        if match["v6"]:
            return "invalid", ""
        name = text.lower().removesuffix(".")
        return ("loopback" if name in LOOPBACK_NAMES else "name"), name
    return ("loopback" if address.is_loopback else "ip"), str(address)


def normalise_names(names: Iterable[str]) -> frozenset[str]:
    """Configured host names as ``parse_host`` spells them (lower case, no trailing dot, no brackets)."""
    normalised = set()
    for name in names:
        kind, text = parse_host(name)
        if kind == "invalid":
            raise ValueError(f"not a host name or address: {name!r}")
        normalised.add(text)
    return frozenset(normalised)


@dataclass(frozen=True)
class HostPolicy:
    """Which ``Host`` values a listener answers.

    ``addresses``: ``"loopback"`` accepts loopback IP literals only (the local endpoint), ``"any"`` every IP
    literal (the probes: the kubelet and Prometheus come by pod IP). Loopback names (``localhost``) are always
    accepted, ``names`` too; any other DNS name is refused. ``missing``: whether a request without ``Host``
    (HTTP/1.0; a browser always sends one) is answered."""

    names: frozenset[str] = frozenset()
    addresses: Literal["loopback", "any"] = "loopback"
    missing: bool = False

    @classmethod
    def of(
        cls, names: Iterable[str] = (), *, addresses: Literal["loopback", "any"], missing: bool
    ) -> HostPolicy:
        """A policy with ``names`` normalised (ValueError names a malformed one)."""
        return cls(normalise_names(names), addresses, missing)

    def allows(self, header: str | None) -> bool:
        """Whether a request with this ``Host`` header (None: none) is answered."""
        if header is None:
            return self.missing
        kind, name = parse_host(header)
        if kind == "loopback":
            return True
        if kind == "ip":
            return self.addresses == "any" or name in self.names
        return kind == "name" and name in self.names
