"""Command-line options generated from a settings dataclass, one per field.

:func:`config_options` turns a command ``def cmd(<explicit options>, settings: dict)`` into
one that also takes ``--field-name`` for every field of a config class, with the field's help
text (:func:`~gtlkit.experiments.common.settings.setting_help`). Options default to "not
given"; the command receives the given ones in ``settings`` (lists parsed from repeated flags
or comma lists), to apply over the config's own defaults.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer

from gtlkit.config import config_fields
from gtlkit.experiments.common.settings import setting_flags, setting_help

__all__ = ["config_options", "float_list", "int_list", "str_list"]


def _typed_list(values: list[str] | None, what: str, kind: type, noun: str) -> list | None:
    if not values:
        return None
    out = []
    for part in str_list(values) or []:
        try:
            out.append(kind(part))
        except ValueError as e:
            raise typer.BadParameter(f"{what}: {part!r} is not {noun}") from e
    return out


def int_list(values: list[str] | None, what: str) -> list[int] | None:
    """``["1000,100", "20"]`` -> ``[1000, 100, 20]`` (repeated flags or comma lists)."""
    return _typed_list(values, what, int, "an integer")


def float_list(values: list[str] | None, what: str) -> list[float] | None:
    """``["0.05,0.01", "1e-3"]`` -> ``[0.05, 0.01, 0.001]``; ``[""]`` -> ``[]`` (an empty
    list, e.g. ``--sweep-gammas ""`` to switch a sweep off)."""
    return _typed_list(values, what, float, "a number")


def str_list(values: list[str] | None) -> list[str] | None:
    """``["gamma, top_k", "planner"]`` -> ``["gamma", "top_k", "planner"]``."""
    if not values:
        return None
    return [p.strip() for v in values for p in str(v).split(",") if p.strip()]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(tp: Any) -> tuple[Any, bool]:
    """``(type without None, is_list)`` of a field annotation."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        tp = args[0]
    if typing.get_origin(tp) is list:
        return typing.get_args(tp)[0], True
    return tp, False


def _option(f: dataclasses.Field, tp: Any) -> tuple[Any, Callable[[Any], Any]]:
    """The typer annotation of field ``f`` and the converter of its parsed value."""
    base, is_list = _base_type(tp)
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    help_text = setting_help(f) + ("" if default is None else f" (default: {default})")
    flags = setting_flags(f)
    if is_list:
        help_text += " Repeat the flag or give a comma list."
        opt = typer.Option(_flag(f.name), *flags, help=help_text)
        if base is int:
            return Annotated[list[str] | None, opt], lambda v: int_list(v, _flag(f.name))
        if base is float:
            return Annotated[list[str] | None, opt], lambda v: float_list(v, _flag(f.name))
        return Annotated[list[str] | None, opt], str_list
    if base is bool:
        opt = typer.Option(f"{_flag(f.name)}/--no-{f.name.replace('_', '-')}", help=help_text)
        return Annotated[bool | None, opt], lambda v: v
    if base in (int, float) and type(None) in typing.get_args(tp) and default is not None:
        # an optional number that is on by default: "none" turns it off
        opt = typer.Option(_flag(f.name), *flags, help=help_text + " 'none' turns it off.")
        return Annotated[str | None, opt], lambda v: optional_number(v, base, _flag(f.name))
    opt = typer.Option(_flag(f.name), *flags, help=help_text)
    return Annotated[base | None, opt], lambda v: v


def optional_number(value: str, kind: type, what: str) -> int | float | None:
    """``"none"`` -> None, else ``value`` as ``kind`` (int or float); a clear error otherwise."""
    if value.strip().lower() == "none":
        return None
    try:
        return kind(value)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise typer.BadParameter(
            f"{value!r} is neither {noun} nor 'none'", param_hint=what
        ) from None


def config_options(cls: type, exclude: tuple[str, ...] = ()) -> Callable:
    """Decorator: add one option per field of dataclass ``cls`` (except ``exclude``).

    The decorated function takes its own options plus ``settings``: the dict of the field
    options that were given on the command line, converted to the fields' types.
    """
    hints = typing.get_type_hints(cls)
    fields = [f for f in config_fields(cls) if f.name not in exclude]

    def decorate(func: Callable) -> Callable:
        sig = inspect.signature(func, eval_str=True)
        own = [p for p in sig.parameters.values() if p.name != "settings"]
        taken = {p.name for p in own}
        clash = taken & {f.name for f in fields}
        if clash:
            raise ValueError(f"options {sorted(clash)} are both explicit and config fields")
        converters = {}
        generated = []
        for f in fields:
            annotation, convert = _option(f, hints[f.name])
            converters[f.name] = convert
            generated.append(
                inspect.Parameter(
                    f.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation
                )
            )

        @functools.wraps(func)
        def wrapper(**kwargs: Any) -> Any:
            settings = {}
            for name, convert in converters.items():
                value = kwargs.pop(name, None)
                if value is not None:
                    settings[name] = convert(value)
            return func(**kwargs, settings=settings)

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + generated
        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return decorate
