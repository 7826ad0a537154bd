"""Kubernetes resource quantities (``100m``, ``64Mi``, ``1.5``, ``2e3``): validation and comparison (pure).

The webhook checks the quantities it injects itself, so a typo in an annotation is refused with a message
naming the annotation instead of an API server error about a container the user never wrote.
"""

from __future__ import annotations

import re
from decimal import Decimal

_QUANTITY = re.compile(
    r"\+?(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]{1,3})?"
)
_FACTORS: dict[str, Decimal] = {
    "": Decimal(1),
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
    **{s: Decimal(10) ** e for s, e in (("n", -9), ("u", -6), ("m", -3), ("k", 3), ("M", 6), ("G", 9))},
    **{s: Decimal(10) ** e for s, e in (("T", 12), ("P", 15), ("E", 18))},
}


def parse_quantity(text: str) -> Decimal:
    """``"64Mi"`` -> ``Decimal(67108864)``; raises ValueError (with a user-facing message) for anything the
    API server would refuse, and for negative quantities, which no resource request may be."""
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError(f"expected a Kubernetes quantity such as 100m, 0.5, 64Mi or 1Gi, got {text!r}")
    suffix = match["suffix"] or ""
    if suffix[:1] in ("e", "E") and suffix not in _FACTORS:
        return Decimal(match["number"]) * Decimal(10) ** int(suffix[1:])
    return Decimal(match["number"]) * _FACTORS[suffix]
