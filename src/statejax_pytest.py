"""The statejax pytest plugin: the `statejax_conformance` fixture, and nothing else.

Installed with statejax through the `pytest11` entry point. It is off unless
requested: it defines one fixture, adds no hook, option or autouse fixture, and
imports statejax (and JAX) only when a test requests the fixture. Disable it with
`-p no:statejax`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture
def statejax_conformance() -> Callable[..., tuple[str, ...]]:
    """`statejax.testing.check_transform`: run a transform through the conformance checks.

    A test that requests it gets that function:
    `def test_ema(statejax_conformance): statejax_conformance("ema", apply=...)`.

    Examples:
        >>> from statejax.testing import check_transform  # what the fixture returns
        >>> check_transform("jit", checks=["eager"])
        ('eager',)
    """
    from statejax.testing import check_transform

    check: Callable[..., Any] = check_transform
    return check
