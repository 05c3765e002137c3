"""Name -> item registries: how attacks, protocols, purifiers and models are added (one entry each).

A registry maps a name to an item (a factory, a spec entry, a protocol). Entries are added where the item is
defined (``REGISTRY.register("name", item)``, or as a decorator), never by editing lists in several files; a
lookup of an unknown name raises ``ValueError`` naming the known ones, so command-line errors say what to choose.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """An ordered ``name -> item`` table (registration order is the order of :meth:`names`).

    Args:
        what: What the items are, for messages (``"attack"``, ``"protocol"``, ...).
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T | None = None) -> Callable[[T], T] | T:
        """Adds ``item`` under ``name`` (or, without ``item``, returns a decorator that adds what it decorates).

        Raises:
            ValueError: ``name`` is empty, not a string, or already registered.
        """
        if not isinstance(name, str) or not name or name in self._items:
            raise ValueError(f"{self.what} name must be a new non-empty string, got {name!r}")

        def add(value: T) -> T:
            self._items[name] = value
            return value

        return add if item is None else add(item)

    def __getitem__(self, name: str) -> T:
        if name not in self._items:
            raise ValueError(f"unknown {self.what} {name!r}; choose from {', '.join(self._items) or 'none'}")
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._items)

    def check(self, names: object, *, what: str | None = None) -> tuple[str, ...]:
        """``names`` as a tuple after checking it is a non-empty sequence of registered names.

        Raises:
            ValueError: Empty, not a sequence of strings, or holding an unknown name (all of them named).
        """
        label = what or f"{self.what}s"
        if isinstance(names, str) or not isinstance(names, (list, tuple)) or not names:
            raise ValueError(
                f"{label} must be a non-empty list of names among {', '.join(self._items)}, got {names!r}"
            )
        unknown = [n for n in names if n not in self._items]
        if unknown:
            raise ValueError(f"unknown {label} {unknown}; choose from {', '.join(self._items)}")
        return tuple(names)
