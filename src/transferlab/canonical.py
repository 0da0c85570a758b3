"""Canonical JSON: one text per value, so equal plans, specs and sweeps hash equal."""

from __future__ import annotations

import json


def canonical_json(data) -> str:
    """Sorted keys, no spaces, Unicode as is: the text every identity hash is taken over."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
