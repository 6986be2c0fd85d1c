"""The `statejax` command: `list` the transforms, print a `schema`, run the `demo`.

Exit status: 0 on success; 1 if a plugin failed to load (`list`) or the demo missed its
accuracy bar (`demo`); 2 for a usage error or an unknown transform name (`schema`).
Output cut short by its reader (`statejax schema vmap | head -1`) is not an error: the
command stops quietly and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import warnings
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as metadata_version
from typing import Any

from statejax.registry._manager import PluginWarning, Registry, get_registry
from statejax.registry._protocol import spec_schema

__all__ = ["DEMO_ACCURACY_BAR", "main"]

#: The test accuracy `statejax demo` must reach (it exits 1 below it). The command owns
#: the bar; `statejax.demo` only trains, and is imported only when the demo runs, so
#: `statejax list` and `schema` load neither optax nor tqdm.
DEMO_ACCURACY_BAR = 0.95


_DESCRIPTION = "List statejax's transforms, print their option schemas, or run the demo."

_EPILOG = """\
exit status:
  0  success
  1  a plugin failed to load (list), or the demo missed its accuracy bar (demo)
  2  usage error, or no transform of that name (schema)
Output cut short by its reader (statejax schema vmap | head -1) exits 0 quietly."""

_LIST_EPILOG = """\
exit status:
  0  every plugin loaded
  1  a plugin failed to load: its error is printed to stderr, once; the transforms
     of the other plugins are still listed"""


class _Formatter(argparse.HelpFormatter):
    """Wraps paragraphs of one line; keeps text already laid out on several lines as is."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _version() -> str:
    try:
        return metadata_version("statejax")
    except PackageNotFoundError:  # running from a source tree
        return "0.0.0+unknown"


def _registry() -> Registry:
    # The CLI prints plugin failures itself (once); silence the duplicate warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)
        return get_registry()


def _options(spec: type) -> str:
    from pydantic import BaseModel

    assert issubclass(spec, BaseModel)
    parts = []
    for name, field in spec.model_fields.items():
        default = "required" if field.is_required() else repr(field.default)
        parts.append(f"{name}={default}")
    return ", ".join(parts) or "no options"


def _list() -> int:
    registry = _registry()
    rows = []
    for name in sorted(registry.transforms):
        entry = registry.transforms[name]
        summary = str(getattr(entry.transform, "summary", ""))
        rows.append((name, entry.origin.distribution, entry.origin.version, summary, entry.spec))
    if rows:
        name_w = max(len(row[0]) for row in rows)
        dist_w = max(len(row[1]) for row in rows)
        version_w = max(len(row[2]) for row in rows)
        for name, dist, version, summary, spec in rows:
            print(f"{name:<{name_w}}  {dist:<{dist_w}}  {version:<{version_w}}  {summary}".rstrip())
            print(f"{'':<{name_w}}  options: {_options(spec)}")
    for error in registry.errors:
        print(f"statejax list: {error}", file=sys.stderr)
    return 1 if registry.errors else 0


_SECTION = re.compile(r"^\s*(Examples?|Args|Arguments|Returns|Raises|Attributes|Notes?):\s*$", re.M)
_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`]+)`")  # `x`, :py`x`
_XREF = re.compile(r"\[([^\]]+)\]\[[^\]]*\]")  # Markdown cross-reference [x][path.x]


def _plain(text: str) -> str:
    """A docstring or field description as plain text: no markup, no doctest sections."""
    match = _SECTION.search(text)
    if match:
        text = text[: match.start()]
    text = _ROLE.sub(r"\1", text)
    text = _XREF.sub(r"\1", text)
    text = re.sub(r"`+([^`]*?)`+", r"\1", text)
    return text.strip()


def _plain_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: _plain(value)
            if key == "description" and isinstance(value, str)
            else _plain_descriptions(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_plain_descriptions(value) for value in node]
    return node


def _schema(name: str) -> int:
    try:
        entry = _registry().get(name)
    except AttributeError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(json.dumps(_plain_descriptions(spec_schema(entry.spec)), indent=2))
    return 0


def _demo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    from statejax.demo import run

    result = run(args.steps, seed=args.seed, progress=not args.no_progress)
    if result.test_accuracy >= DEMO_ACCURACY_BAR:
        return 0
    sys.stdout.flush()
    print(
        f"statejax demo: failed: test accuracy {100 * result.test_accuracy:.1f}% is below the "
        f"demo's bar of {100 * DEMO_ACCURACY_BAR:.0f}% after {args.steps} steps. "
        "Train for more steps (the default, 1000, clears it) or try another --seed.",
        file=sys.stderr,
    )
    return 1


def _parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    raw = _Formatter
    parser = argparse.ArgumentParser(
        prog="statejax", description=_DESCRIPTION, epilog=_EPILOG, formatter_class=raw
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser(
        "list",
        help="every registered transform: distribution, version, summary, options",
        description="List every registered transform with the distribution and version that "
        "registered it, a one-line summary, and its options with their defaults.",
        epilog=_LIST_EPILOG,
        formatter_class=raw,
    )
    schema = sub.add_parser(
        "schema",
        help="the JSON schema of a transform's options",
        description="Print the JSON schema of a transform's options (field types, defaults, "
        "descriptions) to stdout.",
        epilog="exit status:\n  0  the schema was printed\n"
        "  2  no transform of that name (a close match is suggested on stderr)",
        formatter_class=raw,
    )
    schema.add_argument(
        "name", help="a registered transform name, e.g. vmap or scan (statejax list shows them)"
    )
    bar = f"{100 * DEMO_ACCURACY_BAR:.0f}%"
    demo = sub.add_parser(
        "demo",
        help=f"train a small MLP with jit(grad) and optax Adam; fails below {bar}% test accuracy",
        description="Train a small MLP on a synthetic two-moons data set with jit(grad) and "
        f"optax Adam, then report its test accuracy. The demo has an accuracy bar of {bar}: "
        "below it, the command says so and exits 1.",
        epilog=f"exit status:\n  0  the test accuracy reached {bar}\n"
        f"  1  the test accuracy is below {bar} (e.g. too few --steps)",
        formatter_class=raw,
    )
    demo.add_argument("--steps", type=int, default=1000, help="training steps (default 1000)")
    demo.add_argument("--seed", type=int, default=0, help="seed of data and weights (default 0)")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser, demo


def _main(argv: Sequence[str] | None) -> int:
    parser, demo = _parser()
    ns = parser.parse_args(argv)
    if ns.command == "demo":
        return _demo(ns, demo)
    if ns.command == "list":
        return _list()
    return _schema(ns.name)


def _discard_stdout() -> None:
    """Point stdout at the null device, so that flushing it at exit cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError):  # stdout without a file descriptor (captured)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `statejax` console script; returns the exit status.

    Args:
        argv: the arguments after `statejax`; `None` reads `sys.argv`.

    Returns:
        0 on success, 1 if a plugin failed to load or the demo missed its accuracy bar,
        2 for an unknown transform name. Usage errors, `--help` and `--version` raise
        `SystemExit` (from argparse) instead.

    Examples:
        >>> from statejax.cli import main
        >>> main(["schema", "jit"])  # doctest: +ELLIPSIS
        {
          "additionalProperties": false,
        ...
        0
    """
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()
    except BrokenPipeError:  # the reader closed the pipe (| head): not an error
        _discard_stdout()
        return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
