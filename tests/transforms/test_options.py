"""Options several transforms share: positions (static_argnums) and sizes (length,
axis_size, batch_size, unroll, pbar) refuse bools, floats and huge ints, and take NumPy
integers."""

from __future__ import annotations

import inspect
import typing
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statejax as sj
from statejax._transforms.abstract import make_jaxpr
from statejax._transforms.vmap import map as sj_map
from statejax.extend import parse_spec


def _loss(x: jax.Array) -> jax.Array:
    return jnp.sum(x**2)


@pytest.mark.parametrize("bad", [False, True, 2**70, 2.0, "1"])
def test_positions_reject_bools_floats_and_huge_ints(bad: Any) -> None:
    f = lambda x: x  # noqa: E731
    for make, option in [
        (lambda: sj.jit(f, static_argnums=bad), "jit: option static_argnums"),
        (lambda: sj.jit(f, static_argnums=(0, bad)), "jit: option static_argnums"),
        (lambda: sj.checkpoint(f, static_argnums=bad), "checkpoint: option static_argnums"),
        (lambda: make_jaxpr(f, static_argnums=bad), "make_jaxpr: option static_argnums"),
    ]:
        if isinstance(bad, str) and "make_jaxpr" not in option:
            continue  # a string is a static argument name there, not a position
        with pytest.raises(sj.SpecError, match=rf"statejax\.{option}"):
            make()


@pytest.mark.parametrize("bad", [False, True, 2**40, 2**70, 3.0])
def test_sizes_reject_bools_floats_and_huge_ints(bad: Any) -> None:
    xs = jnp.arange(3.0)
    step = lambda c, x: (c, x)  # noqa: E731
    cases = [
        (lambda: sj.scan(step, 0, xs, length=bad), "scan: option length"),
        (lambda: sj.for_loop(lambda x: x, xs, length=bad), "for_loop: option length"),
        (lambda: sj.vmap(lambda x: x, axis_size=bad), "vmap: option axis_size"),
        (lambda: sj_map(lambda x: x, xs, batch_size=bad), "map: option batch_size"),
    ]
    if not isinstance(bad, bool):  # unroll=True/False: unroll all steps or none (lax.scan)
        cases.append((lambda: sj.scan(step, 0, xs, unroll=bad), "scan: option unroll"))
    cases.append((lambda: sj.scan(step, 0, xs, pbar=bad), "scan: option pbar"))
    for make, option in cases:
        with pytest.raises(sj.SpecError, match=rf"statejax\.{option}"):
            make()


def test_valid_numbers_still_pass() -> None:
    xs = jnp.arange(4.0)
    assert sj.scan(lambda c, x: (c + x, x), 0.0, xs, length=np.int64(4), pbar=np.int64(2))[1].shape
    assert sj.jit(lambda x, n: x * n, static_argnums=np.int64(1))(xs, 2).shape == (4,)
    np.testing.assert_allclose(sj_map(lambda x: x + 1, xs, batch_size=np.int64(3)), xs + 1)
    assert sj.grad(_loss, argnums=(0,))(xs)[0].shape == (4,)


# --- every option written in a signature agrees with the spec ----------------------------
#
# An option is written in the implementation's signature, in each `@overload` (for mypy),
# and in the spec class. The checks below hold every built-in transform's copies to its
# spec: each option parameter is a spec field (or listed below with its reason), each
# default in a signature validates to the spec's own default, and each spec field is
# offered in some signature.

# Parameters that are the call's arguments, not options.
ARGUMENTS = {
    "fn", "fun", "f", "x", "init", "xs", "init_val", "cond_fun", "body_fun", "pred",
    "true_fun", "false_fun", "index", "branches", "conditions", "primals", "tangents",
    "module", "init_kwargs", "has_nan", "error",
}  # fmt: skip
_GRAD_STATES = "the states to differentiate: normalised by the grad core at decoration"
# Options a transform takes outside its spec, with the reason.
NOT_IN_SPEC: dict[str, dict[str, str]] = {
    **{
        name: {"grad_states": _GRAD_STATES}
        for name in ("grad", "vector_grad", "jacrev", "jacobian", "jacfwd", "hessian", "vjp")
    },
    "fwd_grad": {"grad_states": _GRAD_STATES, "key": "a PRNG key (an array, not hashable)"},
    "pmap2": {"global_arg_shapes": "BrainState's; only None (JAX removed it from jax.pmap)"},
    "vmap_new_states": {
        option: "BrainState's; only None (SpecError otherwise): see docs/porting.md"
        for option in ("state_to_exclude", "in_states", "out_states")
    },
}
# Options without a default: the values the spec needs to validate.
REQUIRED: dict[str, dict[str, Any]] = {
    "bounded_while_loop": {"max_steps": 8},
    "named_scope": {"name": "scope"},
    "shard_map": {
        "mesh": jax.make_mesh((1,), ("d",), devices=jax.devices()[:1]),
        "in_specs": jax.sharding.PartitionSpec(),
        "out_specs": jax.sharding.PartitionSpec(),
    },
}


def _builtins() -> list[Any]:
    from statejax.registry._manager import get_registry

    entries = get_registry().transforms
    return [entries[name] for name in sorted(entries) if entries[name].origin.builtin]


def _copies(fn: Any) -> list[inspect.Signature]:
    """The implementation's signature and each overload's."""
    return [inspect.signature(fn), *(inspect.signature(o) for o in typing.get_overloads(fn))]


def _options(transform: Any, sig: inspect.Signature) -> list[inspect.Parameter]:
    skip = ARGUMENTS | set(NOT_IN_SPEC.get(transform.name, {}))
    return [
        p
        for p in sig.parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in skip
    ]


BUILTINS = _builtins()


def test_the_built_in_transforms_are_all_checked() -> None:
    names = {t.name for t in BUILTINS}
    assert {"grad", "vjp", "fwd_grad", "jit", "vmap", "vmap2", "pmap", "scan"} <= names
    assert set(NOT_IN_SPEC) | set(REQUIRED) <= names


@pytest.mark.parametrize("transform", BUILTINS, ids=lambda t: t.name)
def test_every_option_in_a_signature_is_a_spec_field(transform: Any) -> None:
    fields = transform.spec.model_fields
    for sig in _copies(transform.function):
        strays = [p.name for p in _options(transform, sig) if p.name not in fields]
        assert strays == [], f"{transform.name}{sig}: not fields of {transform.spec.__name__}"


@pytest.mark.parametrize("transform", BUILTINS, ids=lambda t: t.name)
def test_every_default_in_a_signature_is_the_spec_default(transform: Any) -> None:
    fields = transform.spec.model_fields
    required = REQUIRED.get(transform.name, {})
    for sig in _copies(transform.function):
        for p in _options(transform, sig):
            # `= ...` in an overload: a default is there, written in the implementation.
            if p.default in (inspect.Parameter.empty, ...) or p.name in required:
                continue
            options = {**required, p.name: p.default}
            parsed = getattr(parse_spec(transform.spec, transform.name, **options), p.name)
            spec_default = fields[p.name].get_default(call_default_factory=True)
            assert parsed == spec_default, (
                f"{transform.name}: {p.name}={p.default!r} in {sig} validates to {parsed!r}, "
                f"but {transform.spec.__name__}.{p.name} defaults to {spec_default!r}"
            )


@pytest.mark.parametrize("transform", BUILTINS, ids=lambda t: t.name)
def test_every_spec_field_is_offered_by_a_signature(transform: Any) -> None:
    offered = {p.name for sig in _copies(transform.function) for p in sig.parameters.values()}
    missing = sorted(set(transform.spec.model_fields) - offered)
    assert missing == [], f"{transform.name}: {missing} of {transform.spec.__name__} not offered"
