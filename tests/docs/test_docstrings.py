"""Every public docstring is in the one style mkdocstrings renders (shared/STYLE.md).

Markdown and Google sections: no reST roles or directives, no double backticks, and
examples under `Examples:` (a singular `Example:` renders its `>>>` lines as text).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from collections.abc import Iterator

import pytest
import statejax_ema

import statejax

REST = re.compile(r":(?:func|class|meth|mod|attr|data|exc|obj|ref):`|``|^\s*\.\. \w+::", re.M)
SINGULAR_EXAMPLE = re.compile(r"^\s*Example:\s*$", re.M)


def _docstrings() -> Iterator[tuple[str, str]]:
    seen: set[int] = set()
    for package in (statejax, statejax_ema):
        names = [package.__name__] + [
            m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
        ]
        for name in names:
            module = importlib.import_module(name)
            yield name, inspect.getdoc(module) or ""
            for attr, obj in vars(module).items():
                if getattr(obj, "__module__", None) != name or id(obj) in seen:
                    continue
                seen.add(id(obj))
                if inspect.isclass(obj) or inspect.isfunction(obj):
                    yield f"{name}.{attr}", inspect.getdoc(obj) or ""
                if inspect.isclass(obj):
                    for member, value in vars(obj).items():
                        if inspect.isfunction(value) or isinstance(value, property):
                            yield f"{name}.{attr}.{member}", inspect.getdoc(value) or ""


DOCSTRINGS = list(_docstrings())


def test_docstrings_were_found() -> None:
    assert len(DOCSTRINGS) > 100


@pytest.mark.parametrize("pattern", [REST, SINGULAR_EXAMPLE], ids=["rest", "singular-example"])
def test_no_docstring_uses_rest_or_a_singular_example_section(pattern: re.Pattern[str]) -> None:
    bad = [where for where, doc in DOCSTRINGS if pattern.search(doc)]
    assert bad == [], f"docstrings not in the project's Markdown style: {bad}"
