"""Every ```python block in docs/ and the README runs (a page's blocks share a namespace).

Fragments that are not meant to run on their own are fenced as ```py instead.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
DOCS = ROOT / "docs"
PAGES = [
    *sorted(p for p in DOCS.rglob("*.md") if "```python" in p.read_text()),
    ROOT / "README.md",
    ROOT / "PYPI.md",
]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_python_blocks_run(page: Path) -> None:
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for block in re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S):
        # dont_inherit: blocks run without this module's `from __future__ import annotations`
        exec(compile(block, str(page), "exec", dont_inherit=True), namespace)
