"""What the params registries share: a strict pydantic base and a registry keyed by a name, which validates a raw
object by that name (errors keep pydantic's field paths, prefixed by the name) and builds its JSON schema from
whatever is registered when the schema is asked for (plugins registered after import included).

A registered params class is the one registration of its method or attack: its `impl` ClassVar names the
implementation by import path (`"editaudit.worker.ml.edits.finetune:Finetune"`), which only the worker imports,
lazily (editaudit.worker.ml.impl). The contracts never import it: the API stays torch-free."""

from __future__ import annotations

import re
from collections.abc import ItemsView, Iterator
from typing import Annotated, Any, Generic, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, ValidationError
from pydantic_core import InitErrorDetails


class Strict(BaseModel):
    """Unknown fields are errors: a typo in a hyperparameter must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid")


SEED_MAX = 2**31 - 1
# every seed a request carries (an edit's, an audit's, an attack's): what every generator the job hands it to takes
# (numpy's default_rng refuses negatives, its legacy seed stops at 2**32, an int32 column at 2**31), so an
# out-of-range seed is a 422 naming its field, never a job that fails later
Seed = Annotated[int, Field(ge=0, le=SEED_MAX, description=f"0 to {SEED_MAX}")]


P = TypeVar("P", bound=BaseModel)

IMPL_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def check_impl(cls: type, kind: str, name: str) -> None:
    """A params class names its own implementation (`impl = "package.module:Class"`) in its class body: one
    inherited from a parent would silently run the parent's code for a new name."""
    impl = cls.__dict__.get("impl")
    if impl is None:
        raise ValueError(f"{kind} {name!r} ({cls.__qualname__}) names no implementation: set "
                         f'`impl = "package.module:Class"` in its class body')
    if not isinstance(impl, str) or not IMPL_PATH.match(impl):
        raise ValueError(f"{kind} {name!r} ({cls.__qualname__}): impl must be 'package.module:Class', got {impl!r}")


def prefixed(e: ValidationError, *prefix: str | int) -> ValidationError:
    """The same errors, located under `prefix` (for a part validated on its own inside a larger model)."""
    return ValidationError.from_exception_data(e.title, [
        InitErrorDetails(type=x["type"], loc=(*prefix, *x["loc"]), input=x["input"], ctx=x.get("ctx", {}))
        for x in e.errors()])


class Registry(Generic[P]):
    """name -> params class. `kind` names the things in messages ("edit method", "attack")."""

    def __init__(self, kind: str, key: str):
        self.kind, self.key = kind, key
        self.classes: dict[str, type[P]] = {}

    def register(self, name: str, cls: type[P]) -> type[P]:
        if name in self.classes and self.classes[name] is not cls:
            raise ValueError(f"{self.kind} {name!r} is already registered ({self.classes[name].__qualname__})")
        self.classes[name] = cls
        return cls

    def unregister(self, name: str) -> None:
        """Forget a registration (tests that register plugins clean up after themselves)."""
        self.classes.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self.classes

    def __getitem__(self, name: str) -> type[P]:
        try:
            return self.classes[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; valid names: {sorted(self.classes)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.classes)

    def names(self) -> list[str]:
        return sorted(self.classes)

    def items(self) -> ItemsView[str, type[P]]:
        return self.classes.items()

    def parse_tagged(self, raw: Any) -> P:
        """Validate `{key: name, ...}` with the class registered under that name; pydantic errors come back with
        their location prefixed by the name (`pgd.eps`), as a discriminated union would report them."""
        if isinstance(raw, BaseModel):
            return cast(P, raw)  # already validated: taken as it is
        if not isinstance(raw, dict):
            raise ValueError(f"an {self.kind} is an object with a {self.key!r} field")
        name = raw.get(self.key)
        if not isinstance(name, str) or name not in self.classes:
            raise ValueError(f"unknown {self.kind} {name!r}; valid names: {self.names()}")
        try:
            return self.classes[name].model_validate(raw)
        except ValidationError as e:
            raise prefixed(e, name) from None

    def json_schema(self, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        """oneOf the registered classes, discriminated by `key`; computed when the schema is generated."""
        refs = {name: handler(cls.__pydantic_core_schema__) for name, cls in sorted(self.classes.items())}
        return {"oneOf": list(refs.values()), "discriminator": {"propertyName": self.key}}
