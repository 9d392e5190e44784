"""kiln: durable, embedded feature precompute for trading systems.

Two ways in, one set of methods:

- ``kiln.open(path)``: the engine in this process, over a data directory
  it holds (one process at a time). Compute runs on kiln's own threads with
  the GIL released.
- ``kiln.connect(url)``: the same methods against a running ``kiln serve``.

Feature tables are Arrow: ``features()`` returns a :class:`FeatureTable`
(``symbol``, ``ts`` as ``timestamp[ns, UTC]``, one float64 column per
output, NaN for warm-up) that polars takes without copying the values, and
pandas converts.

Example::

    import kiln, polars as pl
    eng = kiln.open("./kiln-data")
    eng.ingest(pl.read_parquet("bars.parquet"))
    eng.submit(["AAPL", "MSFT"], ["rsi(14)", "macd(12,26,9)"])
    eng.run_until_idle()
    df = eng.features(["AAPL", "MSFT"], ["rsi(14)", "macd(12,26,9)"]).to_polars()
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Union

from kiln._native import DirectoryInUse, KilnError, NotReady, Refused
from kiln._table import FeatureTable
from kiln.client import Client
from kiln.engine import Engine

__all__ = [
    "open",
    "connect",
    "Engine",
    "Client",
    "FeatureTable",
    "KilnError",
    "DirectoryInUse",
    "Refused",
    "NotReady",
]

Config = Union[str, "os.PathLike[str]", Mapping[str, Any], None]


def open(path: Union[str, "os.PathLike[str]"], config: Config = None) -> Engine:  # noqa: A001
    """Opens (or creates) the data directory at ``path`` in this process.

    ``config`` is the path of a kiln TOML file, or a mapping of its keys
    (``{"claim_jobs_max": 64}``; ``kiln config`` prints them all); None
    uses the defaults.

    Raises :class:`DirectoryInUse` when another process holds the directory;
    when that is ``kiln serve``, its ``address`` is the URL to pass to
    :func:`connect`.
    """
    return Engine(path, config)


def connect(url: str, token: str | None = None, timeout: float = 60.0) -> Client:
    """Connects to a running ``kiln serve`` at ``url`` (``http://127.0.0.1:7070``),
    with its bearer ``token`` if it requires one. The methods are those of
    :func:`open`'s engine."""
    return Client(url, token=token, timeout=timeout)
