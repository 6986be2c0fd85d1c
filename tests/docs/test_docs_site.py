"""The documentation site builds without warnings and renders what its sources mean.

mkdocstrings renders Markdown docstrings with Google sections; a docstring written in
another style still builds, but shows reST roles (":func:`grad`") as literal text and
`>>>` examples as block quotes of plain text. This test builds the site with
`--strict` and reads the generated HTML for those marks outside code blocks.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]

# Text that means a docstring or page was written for another renderer.
LITERAL_MARKUP = re.compile(
    r":(func|class|meth|mod|attr|obj|data|exc|ref|doc):`"  # reST roles
    r"|``\w"  # reST double-backtick literals
    r"|^\s*\.\. \w+::"  # reST directives
    r"|>>> "  # a doctest line outside a code block
    r"|^\s*(Args|Returns|Raises|Examples?|Yields|Attributes):\s*$",  # an unparsed section
    flags=re.M,
)


VOID_TAGS = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "source",
    "wbr",
}


class TextOutsideCode(HTMLParser):
    """Collect a page's text outside code and outside mkdocstrings' own section titles."""

    SKIP_TAGS = frozenset({"pre", "code", "script", "style", "textarea"})
    # mkdocstrings renders a parsed "Examples:" heading in this element: not a leftover.
    SKIP_CLASSES = frozenset({"doc-section-title"})

    def __init__(self) -> None:
        super().__init__()
        self.open_tags: list[bool] = []  # for each open element: is its text skipped?
        self.depth = 0
        self.chunks: list[str] = []
        self.admonition_titles: list[str] = []
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = set((dict(attrs).get("class") or "").split())
        skipped = tag in self.SKIP_TAGS or bool(classes & self.SKIP_CLASSES)
        if tag not in VOID_TAGS:
            self.open_tags.append(skipped)
            self.depth += skipped
        self._in_title = "admonition-title" in classes

    def handle_endtag(self, tag: str) -> None:
        if tag not in VOID_TAGS and self.open_tags:
            self.depth -= self.open_tags.pop()

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.admonition_titles.append(data.strip())
            self._in_title = False
        if not self.depth:
            self.chunks.append(data)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(target)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "WARNING" not in result.stderr, result.stderr[-4000:]
    return target


def pages(site: Path) -> list[Path]:
    return sorted(p for p in site.rglob("index.html") if "search" not in p.parts)


@pytest.mark.slow
def test_every_page_renders_its_markup(site: Path) -> None:
    problems: list[str] = []
    for page in pages(site):
        parser = TextOutsideCode()
        parser.feed(page.read_text())
        text = "".join(parser.chunks)
        for match in LITERAL_MARKUP.finditer(text):
            start = max(match.start() - 60, 0)
            problems.append(f"{page.relative_to(site)}: {text[start : match.end() + 40]!r}")
        # A singular "Example:" section renders as a prose admonition titled "Example".
        problems += [
            f"{page.relative_to(site)}: admonition {title!r} (use 'Examples:')"
            for title in parser.admonition_titles
            if title == "Example"
        ]
    assert not problems, "\n".join(problems[:40])


@pytest.mark.slow
def test_api_examples_are_code_blocks(site: Path) -> None:
    """The reference's examples are highlighted code, one block per documented example."""
    html = "".join(p.read_text() for p in (site / "reference").rglob("index.html"))
    html += "".join(p.read_text() for p in (site / "transforms").rglob("index.html"))
    code_blocks = html.count('<div class="highlight">')
    examples = html.count("&gt;&gt;&gt;")
    assert examples > 100
    assert code_blocks > 50
    assert "<blockquote>" not in html


@pytest.mark.slow
def test_the_reference_is_split_and_each_transform_page_has_one(site: Path) -> None:
    """No one-page reference: each module has a page of moderate size, and each transform
    page ends with the reference of its transforms."""
    reference = sorted((site / "reference").rglob("index.html"))
    assert len(reference) >= 10
    sizes = {str(p.relative_to(site)): p.stat().st_size for p in reference}
    assert max(sizes.values()) < 600_000, sizes
    for page in ("jit", "vmap", "control_flow", "autodiff", "abstract"):
        html = (site / "transforms" / page / "index.html").read_text()
        assert 'id="reference"' in html and "doc-function" in html, page


@pytest.mark.slow
def test_signatures_show_the_options_formatted(site: Path) -> None:
    """An overloaded transform shows its overloads (its real options), not the
    implementation's `fn=None, /, **options`, one parameter per line (ruff formats them)."""
    html = (site / "transforms" / "jit" / "index.html").read_text()
    overloads = html[html.index('class="doc-overloads"') :]
    text = re.sub(r"<[^>]+>", "", overloads[: overloads.index("doc-contents")])
    assert "static_argnums" in text and "state_shardings" in text
    assert "**options" not in text
    assert "\n    static_argnums" in text  # formatted: one option per line


def problems_in(html: str) -> list[str]:
    parser = TextOutsideCode()
    parser.feed(html)
    text = "".join(parser.chunks)
    return [m.group(0) for m in LITERAL_MARKUP.finditer(text)] + [
        t for t in parser.admonition_titles if t == "Example"
    ]


def test_the_scan_finds_what_it_looks_for() -> None:
    """The detector itself: marks outside code are found, the same inside code are not."""
    assert problems_in("<p>See :func:`jax.grad` and ``x``.</p>") == [":func:`", "``x"]
    assert problems_in("<blockquote><p>&gt;&gt;&gt; f(1)</p></blockquote>") == [">>> "]
    assert problems_in('<div class="admonition"><p class="admonition-title">Example</p></div>')
    assert problems_in("<p>Args:\n  x: y</p>") == ["Args:"]
    assert not problems_in("<pre><code>&gt;&gt;&gt; f(1)<br>:func:`g`</code></pre>")
    assert not problems_in('<p><span class="doc-section-title">Examples:</span></p>')
