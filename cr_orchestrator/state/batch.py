"""Reads of several stores in one Redis round trip.

A probe round reads a dozen keys of four stores (cluster state, observations, lease,
freshness). One command at a time cost a round trip and ~0.1 ms of client CPU each
(bench/profile_round.py). Each store queues its commands on a :class:`Batch` together
with the function that turns their replies into its value; :meth:`Batch.run` sends them
all in one pipeline (no MULTI: reads only) and hands each store its replies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import redis

T = TypeVar("T")


class Later(Generic[T]):
    """A value read by a :class:`Batch`: :attr:`value` once the batch ran."""

    __slots__ = ("_value", "_ready")

    def __init__(self) -> None:
        self._ready = False
        self._value: T | None = None

    @property
    def value(self) -> T:
        if not self._ready:
            raise RuntimeError("read before its batch ran")
        return self._value  # type: ignore[return-value]  # set by Batch.run

    def _set(self, value: T) -> None:
        self._value, self._ready = value, True


class Batch:
    """Commands of several readers on one pipeline, parsed per reader after one trip."""

    def __init__(self, client: redis.Redis) -> None:
        self.pipe = client.pipeline(transaction=False)
        self._reads: list[tuple[Later[Any], int, int, Callable[[list[Any]], Any]]] = []

    def add(self, queue: Callable[[Any], None], parse: Callable[[list[Any]], T]) -> Later[T]:
        """``queue(pipe)`` queues a reader's commands; ``parse(replies)`` gets their
        replies, in order, when :meth:`run` has sent them."""
        start = len(self.pipe)
        queue(self.pipe)
        later: Later[T] = Later()
        self._reads.append((later, start, len(self.pipe), parse))
        return later

    def run(self) -> None:
        """Send every queued command (one round trip) and parse each reader's replies.
        A command's error raises here, as the command alone would have."""
        replies = self.pipe.execute() if len(self.pipe) else []
        for later, start, end, parse in self._reads:
            later._set(parse(replies[start:end]))
        self._reads.clear()
