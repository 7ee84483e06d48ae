"""From a params class to its implementation: the class body's `impl = "package.module:Class"` (the contracts' one
registration of a method or attack), imported on first use and cached per params class.

Only the worker resolves: the API validates params and never imports an implementation (which may import torch at
module top). What is resolved must be a subclass of the kind's base (`EditMethod`, `Attack`) and, when that base is
parameterised (`EditMethod[FinetuneParams]`), parameterised with this params class or a parent of it; anything else
is an `ImplementationError` naming the params class and the path. `editaudit.worker.ml.parity` resolves every
registered params class when a worker starts, so a gap shows then.
"""

from __future__ import annotations

import importlib
from typing import Any, TypeVar, get_args, get_origin

T = TypeVar("T", bound=type)

_CACHE: dict[tuple[type, type], type] = {}


class ImplementationError(LookupError):
    """A params class whose `impl` cannot be imported, or is not an implementation of its params."""


def params_type(impl: type, base: type) -> type | None:
    """The params class `impl` declares through `base[Params]` (the nearest one in its MRO); None if it has none."""
    for klass in impl.__mro__:
        for orig in getattr(klass, "__orig_bases__", ()):
            origin = get_origin(orig)
            if isinstance(origin, type) and issubclass(origin, base):
                args = get_args(orig)
                if args and isinstance(args[0], type):
                    return args[0]
    return None


def resolve(params_cls: type, base: T) -> T:
    """The implementation class `params_cls.impl` names, checked against `base` (cached per params class)."""
    key = (params_cls, base)
    if key in _CACHE:
        return _CACHE[key]  # type: ignore[return-value]
    path = getattr(params_cls, "impl", None)
    what = f"{params_cls.__module__}.{params_cls.__qualname__}"
    if not isinstance(path, str) or ":" not in path:
        raise ImplementationError(f"{what} names no implementation (impl = {path!r}); set "
                                  f'`impl = "package.module:Class"` in its class body')
    module_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ImplementationError(f"{what}.impl = {path!r}: cannot import {module_name!r} ({e})") from e
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImplementationError(f"{what}.impl = {path!r}: module {module_name!r} has no {attr!r}") from None
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise ImplementationError(f"{what}.impl = {path!r} is not a subclass of {base.__qualname__}")
    declared = params_type(obj, base)
    if declared is not None and not issubclass(params_cls, declared):
        raise ImplementationError(f"{what}.impl = {path!r} implements {base.__qualname__}[{declared.__qualname__}], "
                                  f"not {params_cls.__name__}")
    _CACHE[key] = obj
    return obj  # type: ignore[return-value]
