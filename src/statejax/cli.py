"""The ``statejax`` command: ``list`` the transforms, print a ``schema``, run the ``demo``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from statejax.registry._manager import get_registry
from statejax.registry._protocol import spec_schema

__all__ = ["main"]


def _options(spec: type) -> str:
    from pydantic import BaseModel

    assert issubclass(spec, BaseModel)
    parts = []
    for name, field in spec.model_fields.items():
        default = "required" if field.is_required() else repr(field.default)
        parts.append(f"{name}={default}")
    return ", ".join(parts) or "no options"


def _list() -> int:
    registry = get_registry()
    for name in sorted(registry.transforms):
        entry = registry.transforms[name]
        origin = entry.origin
        summary = getattr(entry.transform, "summary", "")
        print(f"{name:14s} {origin.distribution} {origin.version}  {summary}")
        print(f"{'':14s} options: {_options(entry.spec)}")
    for error in registry.errors:
        print(f"error: {error}")
    return 1 if registry.errors else 0


def _schema(name: str) -> int:
    try:
        entry = get_registry().get(name)
    except AttributeError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(json.dumps(spec_schema(entry.spec), indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``statejax`` console script.

    Example:
        >>> from statejax.cli import main
        >>> main(["schema", "jit"])  # doctest: +ELLIPSIS
        {
          "additionalProperties": false,
        ...
        0
    """
    parser = argparse.ArgumentParser(prog="statejax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every registered transform: distribution, version, options")
    schema = sub.add_parser("schema", help="the JSON schema of a transform's options")
    schema.add_argument("name")
    sub.add_parser(
        "demo",
        help="train a small MLP with jit(grad) and optax Adam (options: statejax demo --help)",
        add_help=False,
    )
    ns, rest = parser.parse_known_args(argv)
    if ns.command == "demo":
        from statejax.demo import main as demo_main

        return demo_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if ns.command == "list":
        return _list()
    return _schema(ns.name)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
