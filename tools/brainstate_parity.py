"""Run BrainState's own tests against statejax through a names-only import shim.

BrainState 0.5.4 ships its tests inside its wheel. This script copies the tests of one
or more groups into a scratch folder, puts a `brainstate` package there whose public
names are statejax's (`brainstate.transform` is `statejax.transform`, and so on), and
runs pytest on them. A test that imports a private BrainState module (`brainstate._state`,
`brainstate.transform._jit`) fails to import: such tests are out of scope.

Usage (BrainState installed in a scratch environment, never in statejax's):

    python3 -m venv /tmp/bsenv && /tmp/bsenv/bin/pip install brainstate==0.5.4
    python tools/brainstate_parity.py \
        --brainstate /tmp/bsenv/lib/python3.11/site-packages/brainstate transform

It prints, per test file, how many tests passed, failed and errored, then the totals.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

GROUPS = {
    "transform": ["transform/*_test.py"],
    "state": ["_state_test.py"],
    "graph": ["graph/*_test.py"],
    "random": ["random/*_test.py"],
    # State hooks (`State.register_hook`, `register_state_hook`, ...) and the thread-safety
    # tests of states with hooks.
    "hooks": [
        "_state_hook*_test.py",
        "_state_global_hooks_test.py",
        "_state_thread_safety_test.py",
    ],
    "environ": ["environ_test.py"],
}
# BrainState modules outside statejax's scope (shared/DESIGN.md section 4).
OUT_OF_SCOPE = ("_ir_",)

SHIM = '''\
"""A names-only shim: BrainState's names, served by statejax.

`brainstate.X` is statejax's `X`; `brainstate.transform`, `.graph`, `.random` and
`.environ` are statejax's modules of those names; `brainstate.util.filter` is
`statejax.filters`. Any other submodule (private ones included) resolves names through
the same public modules.
A name statejax lacks becomes a placeholder that fails when used, so one missing name
fails the tests that use it, not the whole file.
"""
import importlib.abc
import importlib.machinery
import sys
import types

import statejax
import statejax.environ
import statejax.filters
import statejax.graph
import statejax.random
import statejax.transform

PUBLIC = {
    "transform": statejax.transform,
    "graph": statejax.graph,
    "random": statejax.random,
    "environ": statejax.environ,
    "util.filter": statejax.filters,
}


class Missing:
    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise AttributeError(f"statejax has no {self._name}.{attr} ({self._name} is missing)")

    def __call__(self, *args, **kwargs):
        raise AttributeError(f"statejax has no {self._name}")

    def __mro_entries__(self, bases):
        raise AttributeError(f"statejax has no {self._name}")


def lookup(module_key, name):
    full = f"{module_key}.{name}" if module_key else name
    if full in PUBLIC:  # `brainstate.util.filter` reached as an attribute
        return PUBLIC[full]
    for source in (PUBLIC.get(module_key), PUBLIC.get(module_key.split(".")[0]), statejax):
        if source is not None and hasattr(source, name):
            return getattr(source, name)
    return Missing(f"brainstate.{module_key + '.' if module_key else ''}{name}")


class ShimModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        key = self.__name__.removeprefix("brainstate").lstrip(".")
        return lookup(key, name)


class ShimFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname.startswith("brainstate."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = ShimModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


sys.meta_path.insert(0, ShimFinder())
__path__ = []


# BrainState's subpackages (filled in when the scratch folder is made): `brainstate.nn`
# reached as an attribute is the shim submodule, as `import brainstate.nn` gives.
SUBPACKAGES = set()


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    if name in SUBPACKAGES and not hasattr(statejax, name):
        import importlib

        return importlib.import_module(f"brainstate.{name}")
    return lookup("", name)
'''


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--brainstate", required=True, type=Path, help="BrainState's package folder"
    )
    parser.add_argument("groups", nargs="+", choices=sorted(GROUPS))
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("-k", default=None, help="pytest -k expression")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bs-parity-"))
    (scratch / "shim" / "brainstate").mkdir(parents=True)
    subpackages = sorted(p.parent.name for p in args.brainstate.glob("*/__init__.py"))
    (scratch / "shim" / "brainstate" / "__init__.py").write_text(
        SHIM.replace("SUBPACKAGES = set()", f"SUBPACKAGES = set({subpackages!r})")
    )
    tests = scratch / "tests"
    tests.mkdir()
    shutil.copy(args.brainstate / "conftest.py", tests / "conftest.py")
    for group in args.groups:
        for pattern in GROUPS[group]:
            for path in sorted(args.brainstate.glob(pattern)):
                if any(tag in path.name for tag in OUT_OF_SCOPE):
                    continue
                target = tests / group / path.name
                target.parent.mkdir(exist_ok=True)
                shutil.copy(path, target)
    report = scratch / "report.xml"
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(tests),
        "-q",
        "-p",
        "no:cacheprovider",
        "--import-mode=importlib",
        "-o",
        "addopts=",
        "-o",
        "filterwarnings=",
        f"--junitxml={report}",
        "--rootdir",
        str(scratch),
        "--continue-on-collection-errors",
    ]
    if args.k:
        command += ["-k", args.k]
    env = {**__import__("os").environ, "PYTHONPATH": str(scratch / "shim")}
    subprocess.run(command, env=env, cwd=scratch, stdout=subprocess.DEVNULL)
    counts: dict[str, Counter[str]] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        classname = case.get("classname", "")
        parts = classname.split(".")
        module = [i for i, part in enumerate(parts) if part.endswith("_test")]
        file = ".".join(parts[: module[0] + 1]) if module else classname
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
        counts.setdefault(file, Counter())[outcome] += 1
    total: Counter[str] = Counter()
    for file, counter in sorted(counts.items()):
        total.update(counter)
        print(f"{file:60s} " + " ".join(f"{k}={v}" for k, v in sorted(counter.items())))
    print("TOTAL", " ".join(f"{k}={v}" for k, v in sorted(total.items())))
    if args.keep:
        print("scratch:", scratch)
    else:
        shutil.rmtree(scratch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
