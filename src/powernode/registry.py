"""Registries filled by declaration: a plugin registers itself where it is defined."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from powernode.errors import Invalid

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind (task kinds, instance kinds, providers, jobs...)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.what} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str, *, field: str = "kind") -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise Invalid(f"unknown {self.what} {name!r}; known: {known}", field=field) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __iter__(self) -> Iterator[tuple[str, T]]:
        return iter(sorted(self._entries.items()))
