"""One way in for everything a user plugs in: critics, tasks, samplers, filters, backends,
storage kinds, training objectives, equivalence judges, scorers.

A `Registry` maps a name to a factory in a fixed lookup order: a `module:Class` path (the
config's `<kind>.path`), a class registered with the `register` decorator, a built-in listed as
a `"module:Class"` string (imported only when built, so listing names imports nothing heavy),
then the installed packages' entry points of the kind's group (`selftrain.<kind>s`). Every
failure is a `RegistryError` (or the kind's own subclass) that names the setting and lists
the known names, so a typo reads as one line, not a traceback.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class RegistryError(ValueError):
    """A plug-in could not be found, imported or built; the message lists the known names."""


@dataclass
class Registry(Generic[T]):
    """Name -> factory for one kind of plug-in.

    `kind` is the word used in messages and the config key (`critic` -> `critic.path`);
    `builtins` maps the names shipped with selftrain to `"module:attr"` strings; `error` is the
    exception raised (a subclass of `RegistryError` lets callers keep their own type).
    """

    kind: str
    builtins: dict[str, str] = field(default_factory=dict)
    entry_point_group: str = ""
    error: type[Exception] = RegistryError
    registered: dict[str, T] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.entry_point_group:
            self.entry_point_group = f"selftrain.{self.kind}s"

    def register(self, name: str) -> Callable[[Any], Any]:
        """Decorator: make a factory available as `<kind>: <name>` (it wins over a built-in of
        the same name; registering a different factory under a taken name is an error)."""

        def wrap(factory: Any) -> Any:
            taken = self.registered.get(name)
            if taken is not None and taken is not factory:
                raise self.error(f"{self.kind} name {name!r} is already registered by {taken!r}")
            self.registered[name] = factory
            return factory

        return wrap

    def names(self) -> list[str]:
        """Every name this kind accepts: built-ins, registered factories, entry points."""
        names = set(self.builtins) | set(self.registered)
        names.update(ep.name for ep in importlib.metadata.entry_points(group=self.entry_point_group))
        return sorted(names)

    def known(self) -> str:
        """The known names, for messages."""
        return ", ".join(self.names()) or "(none)"

    def resolve(self, name: str | None = None, path: str | None = None) -> T:
        """The factory named by `path` (`module:Class`) or by `name` (registered, built-in,
        entry point, in that order)."""
        if path:
            module_name, _, attr = path.partition(":")
            if not module_name or not attr:
                example = "My" + self.kind.title().replace(" ", "")
                raise self.error(f"{self.kind}.path {path!r} must look like 'my_pkg.my_module:{example}'")
            return self._import(module_name, attr, f"{self.kind}.path {path!r}")
        if name in self.registered:
            return self.registered[name]
        if name in self.builtins:
            module_name, _, attr = self.builtins[name].partition(":")
            return self._import(module_name, attr, f"{self.kind} {name!r}")
        for ep in importlib.metadata.entry_points(group=self.entry_point_group):
            if ep.name == name:
                try:
                    return ep.load()
                except Exception as err:  # any import failure is the user's to see
                    raise self.error(
                        f"{self.kind} entry point {name!r} ({ep.value}) failed to load: {err!r}"
                    ) from err
        raise self.error(f"unknown {self.kind} {name!r}; known {self.kind}s: {self.known()}")

    def _import(self, module_name: str, attr: str, label: str) -> T:
        try:
            module = importlib.import_module(module_name)
        except Exception as err:  # any import failure is the user's to see
            raise self.error(
                f"{label}: importing {module_name} failed: {err!r}. Known {self.kind}s: {self.known()}"
            ) from err
        if not hasattr(module, attr):
            raise self.error(f"{label}: module {module_name} has no {attr}")
        return getattr(module, attr)
