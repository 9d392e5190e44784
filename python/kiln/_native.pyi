"""Type stubs of ``kiln._native``, the package's native half (see
``python/src/lib.rs``). Use the public API in :mod:`kiln` instead."""

import os
from typing import Any

import pyarrow as pa

STANDARD_SET: list[str]
"""The 20-output feature set of the benchmarks, as spec texts."""

class KilnError(Exception):
    """Base of kiln's errors."""

class DirectoryInUse(KilnError):
    """Another process has the data directory open."""

    pid: int | None
    """The holding process, as it wrote itself into the directory's lock."""
    address: str | None
    """The URL of the ``kiln serve`` holding it (for :func:`kiln.connect`)."""

class Refused(KilnError):
    """Refused for now (rate limit, queue depth, breaker, queue full)."""

    retry_after: float
    """Seconds to wait before trying again."""

class NotReady(KilnError):
    """A feature asked for is not stored, or was computed from other bars."""

class Engine:
    """An open data directory and its engine (see :class:`kiln.Engine`)."""

    def __init__(self, path: str | os.PathLike[str], config: str | None = None) -> None: ...
    @property
    def path(self) -> str: ...
    def ingest(
        self, table: Any, name: str = "table", map: list[tuple[str, str]] = ..., ts_unit: str | None = None
    ) -> str: ...
    def submit(self, symbols: list[str], features: str, priority: str = "normal") -> list[int]: ...
    def run_until_idle(self) -> str: ...
    def features(
        self, symbols: list[str], features: str, start: int | None = None, end: int | None = None
    ) -> pa.Table: ...
    def jobs(self, state: str | None = None, limit: int = 100) -> str: ...
    def stats(self) -> str: ...
    def events(self, after: int = 0, limit: int = 256) -> str: ...

def parse_time(text: str) -> int:
    """A time as kiln reads it (ISO-8601, offset optional: UTC) in epoch ns."""

def post_for_table(
    url: str, body: bytes, token: str | None = None, timeout: float = 60.0
) -> pa.Table | tuple[int, str | None, bytes]:
    """POSTs JSON ``body`` to ``url`` and reads the Arrow IPC answer into one
    table; an error answer as ``(status, retry_after, body)``."""
