"""What a transform plugin provides: the `StateTransform` protocol and option specs."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import pydantic
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from statejax._errors import SpecError

__all__ = ["StateTransform", "Transform", "TransformSpec", "parse_spec", "spec_schema"]

SpecT = TypeVar("SpecT", bound="TransformSpec")


class TransformSpec(pydantic.BaseModel):
    """Base class of a transform's options: frozen, no unknown fields, hashable.

    Subclass it with one field per option. Give a field a `description`; it
    appears in `statejax list`, in the JSON schema and in error messages.

    Examples:
        >>> from statejax.extend import TransformSpec
        >>> class EmaSpec(TransformSpec):
        ...     decay: float = 0.99
        >>> EmaSpec(decay=0.9).decay
        0.9
    """

    model_config = pydantic.ConfigDict(
        frozen=True, extra="forbid", arbitrary_types_allowed=True, validate_default=True
    )

    #: Set by `parse_spec` callers for error messages; not a field.
    transform_name: ClassVar[str] = ""


@runtime_checkable
class StateTransform(Protocol):
    """The contract of a registered transform.

    `name` is how users reach it (`statejax.transform.<name>`), `function`
    is what they call, and `spec` is the pydantic model of its options.
    """

    @property
    def name(self) -> str: ...

    @property
    def function(self) -> Callable[..., Any]: ...

    @property
    def spec(self) -> type[TransformSpec]: ...


@dataclass(frozen=True)
class Transform:
    """A ready-made `StateTransform`: pass it to `registry.register`.

    Examples:
        >>> from statejax.extend import Transform, TransformSpec
        >>> class NoOptions(TransformSpec):
        ...     pass
        >>> t = Transform("identity", lambda fn: fn, NoOptions, "returns fn unchanged")
        >>> t.name
        'identity'
    """

    name: str
    function: Callable[..., Any]
    spec: type[TransformSpec]
    summary: str = ""


def _suggest(bad: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(bad, choices, n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def parse_spec(spec: type[SpecT], transform: str, /, **options: Any) -> SpecT:
    """Validate `options` into `spec`, turning pydantic's errors into a `SpecError`.

    Call it once, when the user decorates, never on the call path. The message
    names the transform, the option and the fix (a did-you-mean for misspellings).

    Examples:
        >>> from statejax.extend import TransformSpec, parse_spec
        >>> class EmaSpec(TransformSpec):
        ...     decay: float = 0.99
        >>> parse_spec(EmaSpec, "ema", decya=0.5)
        Traceback (most recent call last):
        statejax._errors.SpecError: statejax.ema: unknown option 'decya'. Did you mean 'decay'? Valid options: decay.
    """
    try:
        return spec(**options)
    except pydantic.ValidationError as exc:
        fields = list(spec.model_fields)
        lines = []
        for err in exc.errors():
            loc = err["loc"]
            msg = str(err["msg"]).removeprefix("Value error, ")
            if not loc:  # a model validator: the options together, no single field
                lines.append(msg)
                continue
            name = str(loc[0])
            if err["type"] == "extra_forbidden":
                lines.append(
                    f"unknown option {name!r}.{_suggest(name, fields)} "
                    f"Valid options: {', '.join(fields) or 'none'}."
                )
                continue
            where = "".join(f"[{p!r}]" for p in loc[1:])
            field = spec.model_fields.get(name)
            hint = (
                f"; it takes {field.description}" if field is not None and field.description else ""
            )
            lines.append(f"option {name}{where}: {msg}{hint}")
        raise SpecError(f"statejax.{transform}: " + "; ".join(lines)) from None


class _LenientSchema(GenerateJsonSchema):
    # Options that hold live objects (states, callables) have no JSON form; describe them.
    def handle_invalid_for_json_schema(
        self, schema: core_schema.CoreSchema, error_info: str
    ) -> JsonSchemaValue:
        return {"description": f"a Python object ({schema['type']}); not representable in JSON"}


def spec_schema(spec: type[TransformSpec]) -> dict[str, Any]:
    """The JSON schema of a transform's options (`statejax schema NAME`).

    Examples:
        >>> from statejax.extend import get_registry
        >>> sorted(spec_schema(get_registry().get("jit").spec)["properties"])[:3]
        ['donate_argnames', 'donate_argnums', 'donate_states']
    """
    return spec.model_json_schema(schema_generator=_LenientSchema)
