"""The engine in this process: :func:`kiln.open`."""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Mapping, Sequence, Union

from kiln import _native
from kiln._table import (
    FeatureTable,
    TimeLike,
    arrow_table,
    feature_list,
    symbol_list,
    to_ns,
)


def _config_text(config: Any) -> str | None:
    """A kiln TOML file's text, from its path or a mapping of its keys."""
    if config is None:
        return None
    if isinstance(config, (str, os.PathLike)):
        with open(config, encoding="utf-8") as f:
            return f.read()
    if isinstance(config, Mapping):
        return "".join(f"{key} = {_toml_value(value)}\n" for key, value in config.items())
    raise TypeError(f"config: a path or a mapping, not {type(config).__name__}")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    raise ValueError(f"config: {v!r} is not a string, number or bool")


class Engine:
    """An open data directory and its engine, held by this process until
    :meth:`close` (or the end of a ``with`` block)."""

    def __init__(self, path: Union[str, "os.PathLike[str]"], config: Any = None) -> None:
        self._native: _native.Engine | None = _native.Engine(os.fspath(path), _config_text(config))

    @property
    def _engine(self) -> _native.Engine:
        if self._native is None:
            raise _native.KilnError("this engine is closed")
        return self._native

    @property
    def path(self) -> str:
        """The data directory."""
        return os.fspath(self._engine.path)

    def ingest(
        self,
        table: Any,
        *,
        map: Mapping[str, str] | None = None,  # noqa: A002
        ts_unit: str | None = None,
    ) -> dict:
        """Stores the bars of ``table`` (pyarrow, polars or pandas; columns
        ``symbol, ts, open, high, low, close, volume`` and optionally
        ``vwap``, matched case-insensitively, others ignored), validated like
        ``kiln ingest``: all or nothing, a bad row raises ``ValueError``
        naming its row and column. ``map`` renames columns
        (``{"Ticker": "symbol"}``); ``ts_unit`` (``s``, ``ms``, ``us``,
        ``ns``) says what integer timestamps count. Symbols with stored
        features get refresh jobs in the same commit.

        Returns ``{rows, symbols, changed, refresh_jobs, seconds}``."""
        pairs = list((map or {}).items())
        return json.loads(self._engine.ingest(arrow_table(table), "table", pairs, ts_unit))

    def submit(
        self,
        symbols: Union[str, Sequence[str]],
        features: Union[str, Iterable[str]],
        priority: str = "normal",
    ) -> list[int]:
        """Queues the computation of ``features`` (spec list: ``"rsi(14),sma(20)"``
        or a list of specs) for ``symbols``; returns the job ids. A bad spec
        raises ``ValueError`` with the CLI's text, a symbol without bars
        ``KeyError`` (as from a server, which answers 404); a refusal raises
        :class:`kiln.Refused` with its ``retry_after`` (seconds)."""
        return self._engine.submit(symbol_list(symbols), feature_list(features), priority)

    def run_until_idle(self) -> dict:
        """Runs jobs until none is queued, running or waiting for a retry.
        Other Python threads keep running meanwhile; Ctrl-C stops the run
        once the batch in hand is committed. Returns
        ``{succeeded, dead, symbols, series, seconds}``."""
        return json.loads(self._engine.run_until_idle())

    def features(
        self,
        symbols: Union[str, Sequence[str]],
        features: Union[str, Iterable[str]],
        start: TimeLike = None,
        end: TimeLike = None,
    ) -> FeatureTable:
        """The stored outputs of ``features`` for ``symbols``, between
        ``start`` and ``end`` (both included; ISO-8601 text, a date, a
        datetime or epoch ns; None is open), as one table. Raises
        :class:`kiln.NotReady` when an output is not stored or not computed
        from the stored bars."""
        table = self._engine.features(
            symbol_list(symbols),
            feature_list(features),
            to_ns(start, "start"),
            to_ns(end, "end"),
        )
        return FeatureTable(table)

    def jobs(self, state: str | None = None, limit: int = 100) -> list[dict]:
        """Up to ``limit`` jobs, newest first, optionally only those in
        ``state`` (queued, running, failed, succeeded, dead, cancelled)."""
        return json.loads(self._engine.jobs(state, limit))

    def stats(self) -> dict:
        """Jobs by state, waiting jobs by priority, symbols and bars stored,
        the breaker's state."""
        return json.loads(self._engine.stats())

    def events(self, after: int = 0, limit: int = 256) -> list[dict]:
        """Up to ``limit`` events of the durable event log after sequence
        number ``after``."""
        return json.loads(self._engine.events(after, limit))

    def close(self) -> None:
        """Closes the data directory (everything acknowledged is on disk);
        another process may open it then. A table read that Ctrl-C
        interrupted finishes on its own thread first, holding the directory
        until it ends."""
        self._native = None

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if getattr(self, "_native", None) is None else self.path
        return f"kiln.Engine({state})"
