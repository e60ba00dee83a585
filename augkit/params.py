"""Typed, validated parameters for augmenters (and anything else configured from TOML or the CLI).

A component declares its parameters as a frozen dataclass; :func:`parse_params` builds it from a
plain mapping and turns every mistake into a ParamError that names the component, the key, what was
expected and, for a misspelt key, the closest known one. Range limits live in field metadata::

    @dataclass(frozen=True)
    class Params:
        rotate: float = field(default=180.0, metadata={"min": 0, "max": 180, "help": "max |angle|, degrees"})
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

from augkit.errors import ParamError

#: Field metadata marking a parameter whose value is the folder of a saved augmenter. In a recipe it
#: may name another step instead, which then runs first and hands over its folder. The value: the
#: augmenter names accepted (a tuple), an Augmenter base class whose subclasses are accepted (e.g.
#: augkit.generator.GenerativeAugmenter: any generator, a plugin's too), a function of the augmenter
#: class that says whether it is accepted (its ``described_as`` names them in messages; e.g.
#: augkit.generator.encodable_generator), or () for any. Example::
#:
#:     base: str | None = field(default=None, metadata={AUGMENTER_REF: ("vanilla",)})
AUGMENTER_REF = "augmenter_ref"

#: Field metadata marking a parameter that bounds how long one session trains (a wall-time budget),
#: not what is trained: a run made in several budget pieces is the run made in one, so such fields
#: are left out of cache keys and resume checks. Example::
#:
#:     minutes: float = field(default=0.0, metadata={BUDGET: True, "help": "wall-time budget"})
BUDGET = "augkit_budget"


def budget_fields(cls: type) -> set[str]:
    """The names of ``cls``'s parameter fields marked :data:`BUDGET`."""
    return {f.name for f in dataclasses.fields(cls) if f.metadata.get(BUDGET)} if dataclasses.is_dataclass(cls) else set()


def did_you_mean(word: str, choices) -> str:
    """' (did you mean 'x'?)' when a close match exists, else ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "a list of " + ", ".join(_describe(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "none"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any) -> Any:
    """``value`` as type ``tp``; raises TypeError when it is not one (no silent conversions)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise TypeError
    if origin in (Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option)
            except TypeError:
                continue
        raise TypeError
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise TypeError
        return tuple(_coerce(v, a) for v, a in zip(value, args))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise TypeError
        return [_coerce(v, typing.get_args(tp)[0]) for v in value]
    if tp is type(None):
        if value is None:
            return None
        raise TypeError
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise TypeError
    if tp is str:
        if isinstance(value, str):
            return value
        raise TypeError
    raise TypeError(f"unsupported parameter type {tp}")


def _check_range(name: str, value: Any, meta: Mapping, where: str) -> None:
    numbers = value if isinstance(value, tuple) else (value,)
    for v in numbers:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        if "min" in meta and v < meta["min"]:
            raise ParamError(f"{where}: parameter '{name}' must be >= {meta['min']}, got {value!r}")
        if "max" in meta and v > meta["max"]:
            raise ParamError(f"{where}: parameter '{name}' must be <= {meta['max']}, got {value!r}")


def parse_params(cls: type, values: Mapping[str, Any] | None, where: str) -> Any:
    """Build the parameter dataclass ``cls`` from ``values``, or raise a ParamError naming ``where``."""
    if values is None:
        values = {}
    if dataclasses.is_dataclass(values) and not isinstance(values, type):
        if not isinstance(values, cls):
            raise ParamError(f"{where}: expected parameters of type {cls.__name__}, got {type(values).__name__}")
        values = dataclasses.asdict(values)
    if not isinstance(values, Mapping):
        raise ParamError(f"{where}: parameters must be a table of key = value, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in values:
        if key not in fields:
            raise ParamError(
                f"{where}: unknown parameter '{key}'{did_you_mean(str(key), fields)} (known: {', '.join(fields)})"
            )
    kwargs = {}
    for name, value in values.items():
        try:
            kwargs[name] = _coerce(value, hints[name])
        except TypeError:
            raise ParamError(
                f"{where}: parameter '{name}' must be {_describe(hints[name])}, got {value!r} ({type(value).__name__})"
            ) from None
        _check_range(name, kwargs[name], fields[name].metadata, where)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ParamError(f"{where}: {exc}") from None


def field_defaults(cls: type) -> dict[str, Any]:
    """The default of each field of dataclass ``cls`` that has one (a default factory is called)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def describe_params(cls: type) -> list[dict[str, Any]]:
    """name, type, default and help of each parameter: for `augkit plugins --params` and docs."""
    hints = typing.get_type_hints(cls)
    defaults = field_defaults(cls)
    return [{"name": f.name, "type": _describe(hints[f.name]), "default": defaults.get(f.name),
             "help": f.metadata.get("help", "")} for f in dataclasses.fields(cls)]
