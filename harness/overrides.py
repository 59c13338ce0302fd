"""``--set a.b.c=VALUE``: edits of a spec's data from the command line, made before validation,
so the schema and the plugins' configs check them as they check the file (and every content
address follows, as if the YAML had been edited).

``VALUE`` is YAML (``seed=3``, ``'ground_truth.removal=[0.1, 0.2]'``, ``name=other``). The path
walks mappings, creating missing ones (a ``null`` counts as missing); a key may hold dots (a
label such as ``icp.v2``): the longest run of parts naming an existing key is taken first.
"""

from __future__ import annotations

from typing import Any

import yaml

from dvbench.harness.errors import InputError

USAGE = "write --set a.b.c=VALUE (VALUE in YAML, as --set seed=3 or --set valuators.icp.batch_size=4)"


def apply(data: dict[str, Any], overrides: list[str]) -> dict[tuple, str]:
    """Set each ``a.b.c=VALUE`` in ``data``, in order; return the YAML path each set, mapped to
    the override's text (a later override of the same path wins, as it does in ``data``)."""
    origins: dict[tuple, str] = {}
    for text in overrides:
        parts, value = _parse(text)
        node, path = data, ()
        while True:
            take = _longest_key(node, parts)
            key, parts = ".".join(parts[:take]), parts[take:]
            path += (key,)
            if not parts:
                node[key] = value
                break
            if node.get(key) is None:
                node[key] = {}
            if not isinstance(node[key], dict):
                raise InputError(f"--set {text}: {'.'.join(path)} is {_kind(node[key])}, not a mapping; "
                                 f"set {'.'.join(path)} itself")
            node = node[key]
        origins = {p: o for p, o in origins.items() if p[:len(path)] != path}
        origins[path] = text
    return origins


def _parse(text: str) -> tuple[list[str], Any]:
    dotted, equals, raw = text.partition("=")
    parts = dotted.strip().split(".")
    if not equals or not all(part.strip() for part in parts):
        raise InputError(f"--set {text}: expected a dotted path, '=' and a value; {USAGE}")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        raise InputError(f"--set {text}: the value is not valid YAML ({getattr(error, 'problem', error)}); "
                         f"quote it for the shell, as --set 'key=[1, 2]'") from None
    return [part.strip() for part in parts], value


def _longest_key(node: dict, parts: list[str]) -> int:
    """How many leading ``parts``, joined by dots, name an existing key of ``node`` (1 if none)."""
    for take in range(len(parts), 1, -1):
        if ".".join(parts[:take]) in node:
            return take
    return 1


def _kind(value: Any) -> str:
    return "a list" if isinstance(value, list) else f"{type(value).__name__} {value!r}"
