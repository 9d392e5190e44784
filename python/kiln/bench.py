"""``python -m kiln.bench``: reading features into one polars DataFrame.

A universe of ``--symbols`` × ``--bars`` synthetic daily bars with the
20-output standard set fully computed, then the whole feature table read
into polars three ways, in ``--repeat`` rounds of one read each way (so a
change in the machine's load touches all three alike; the median of each
is reported):

- ``read_open_s``: ``kiln.open(dir).features(...).to_polars()`` in-process;
- ``read_connect_s``: the same through ``kiln.connect`` against a
  ``kiln serve`` on 127.0.0.1 (one ``POST /v1/features/query``);
- ``read_parquet_s``: ``polars.read_parquet`` of the file that
  ``kiln export --format parquet`` wrote of the same table (the peer: the
  usual way to hand a table to polars).

Targets: ``read_open_s`` ≤ ``read_parquet_s`` and ``read_connect_s`` ≤ 3 ×
``read_parquet_s``. Output: JSON lines with ``--json``
(``{"bench": "python", "name", "value", "unit"}``, as ``kiln bench``
prints), else a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

import kiln
from kiln import _native

DAY_NS = 86_400 * 10**9


def synthetic_bars(symbols: int, bars: int, seed: int = 7) -> pa.Table:
    """A valid random-walk universe in long format: symbols ``S0000``…,
    daily bars from 2000-01-01."""
    rng = np.random.default_rng(seed)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, size=(symbols, bars)), axis=1))
    open_ = close * np.exp(rng.normal(0.0, 0.003, size=close.shape))
    spread = np.abs(rng.normal(0.0, 0.005, size=close.shape))
    high = np.maximum(open_, close) * (1.0 + spread)
    low = np.minimum(open_, close) * (1.0 - spread)
    volume = rng.integers(1_000, 1_000_000, size=close.shape).astype(np.float64)
    ts = np.tile(946_684_800 * 10**9 + np.arange(bars, dtype=np.int64) * DAY_NS, symbols)
    names = np.repeat(np.array([f"S{i:04d}" for i in range(symbols)]), bars)
    return pa.table(
        {
            "symbol": pa.array(names, pa.string()),
            "ts": pa.array(ts, pa.timestamp("ns", tz="UTC")),
            "open": open_.ravel(),
            "high": high.ravel(),
            "low": low.ravel(),
            "close": close.ravel(),
            "volume": volume.ravel(),
        }
    )


def kiln_binary(given: str | None) -> Path:
    """The ``kiln`` binary: ``--kiln``, ``KILN_BIN``, the workspace's release
    build beside this source tree, or ``kiln`` on the PATH."""
    candidates = [given, os.environ.get("KILN_BIN")]
    candidates.append(str(Path(__file__).resolve().parents[2] / "target" / "release" / "kiln"))
    candidates.append(shutil.which("kiln"))
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    raise SystemExit("kiln.bench: no kiln binary; build it (cargo build --release) or pass --kiln")


def timed(f: Callable[[], object]) -> float:
    started = time.perf_counter()
    f()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kiln.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="JSON lines on stdout")
    p.add_argument("--symbols", type=int, default=1000, help="symbols (default 1000)")
    p.add_argument("--bars", type=int, default=2000, help="bars per symbol (default 2000)")
    p.add_argument("--repeat", type=int, default=11, help="rounds of one read each way (default 11; the medians)")
    p.add_argument("--kiln", help="the kiln binary (default: KILN_BIN, the workspace's release build, PATH)")
    p.add_argument("--dir", help="scratch directory (default: the system temp directory)")
    a = p.parse_args(argv)
    import polars as pl

    binary = kiln_binary(a.kiln)
    features = ",".join(_native.STANDARD_SET)
    symbols = [f"S{i:04d}" for i in range(a.symbols)]
    lines: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory(prefix="kiln-pybench-", dir=a.dir) as scratch:
        data = Path(scratch) / "data"
        with kiln.open(data) as eng:
            eng.ingest(synthetic_bars(a.symbols, a.bars))
            eng.submit(symbols, features)
            report = eng.run_until_idle()
            if report["dead"]:
                raise SystemExit(f"kiln.bench: {report['dead']} jobs died: {eng.jobs(state='dead')[:1]}")
            first = eng.features(symbols, features).to_polars()
        rows, columns = first.shape
        parquet = Path(scratch) / "features.parquet"
        subprocess.run(
            [str(binary), "--data", str(data), "export", "--format", "parquet", "--features", features,
             "--out", str(parquet)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert pl.read_parquet(parquet).shape == (rows, columns)
        # The server holds a copy of the directory, so the engine can stay
        # open beside it and the three reads take turns.
        served = Path(scratch) / "served"
        shutil.copytree(data, served, ignore=shutil.ignore_patterns("LOCK", "serve.json", "events.sock"))
        server = subprocess.Popen(
            [str(binary), "--json", "--data", str(served), "serve", "--addr", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            line = server.stdout.readline() if server.stdout else ""
            if not line:
                raise SystemExit("kiln.bench: kiln serve did not start")
            client = kiln.connect("http://" + json.loads(line)["listening"])
            with kiln.open(data) as eng:
                assert client.features(symbols, features).to_polars().equals(first)
                ways = {
                    "open": lambda: eng.features(symbols, features).to_polars(),
                    "connect": lambda: client.features(symbols, features).to_polars(),
                    "parquet": lambda: pl.read_parquet(parquet),
                }
                for f in ways.values():
                    f()  # warm: page cache, allocator, connections
                times: dict[str, list[float]] = {name: [] for name in ways}
                for _ in range(a.repeat):
                    for name, f in ways.items():
                        times[name].append(timed(f))
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)
    read_open, read_connect, read_parquet = (
        statistics.median(times[name]) for name in ("open", "connect", "parquet")
    )
    lines += [
        ("rows", float(rows), "rows"),
        ("values", float(rows * (columns - 2)), "values"),
        ("read_open_s", read_open, "s"),
        ("read_connect_s", read_connect, "s"),
        ("read_parquet_s", read_parquet, "s"),
        ("open_vs_parquet", read_open / read_parquet, "ratio"),
        ("connect_vs_parquet", read_connect / read_parquet, "ratio"),
    ]
    for name, value, unit in lines:
        if a.json:
            print(json.dumps({"bench": "python", "name": name, "value": value, "unit": unit}))
        else:
            print(f"{name:20} {value:14.4f} {unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
