"""What a ``with`` block closes: the one definition of the context-manager protocol for
the public objects that hold something open (a store, a subscription, an async face).

``with x:`` ends in ``x.close()`` and ``async with x:`` in ``await x.aclose()``, however
the block ends; an exception raised in the block is never swallowed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

__all__ = ["AsyncClosing", "Closing"]


class Closing(ABC):
    """A ``with`` block over it ends in :meth:`close`."""

    __slots__ = ()

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncClosing(ABC):
    """An ``async with`` block over it ends in :meth:`aclose`."""

    __slots__ = ()

    @abstractmethod
    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
