"""`import kiln`: exactness against TA-Lib, Arrow types and zero copy, the
directory lock and the server, the GIL, errors."""

from __future__ import annotations

import _thread
import os
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pytest

import kiln
from conftest import GOLDEN, synthetic_bars

# Cases of the golden fixtures that are valid bars (the others hold NaN
# prices or a zero close on purpose, which ingest rightly refuses).
GOLDEN_CASES = [
    "real_aapl",
    "real_fb",
    "real_goog",
    "real_ibm",
    "real_msft",
    "const",
    "huge_1e6",
    "tiny_1e-4",
    "outlier",
    "len_20",
    "len_34",
]

DAY_NS = 86_400 * 10**9


def load_golden(name: str) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """A fixture as bars for ingest (symbol = the case) and TA-Lib's outputs."""
    lines = (GOLDEN / f"{name}.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    cols = np.array([[float(x) for x in line.split("\t")] for line in lines[1:]]).T
    n = cols.shape[1]
    symbol = name.upper().replace("-", "_").replace(".", "_")
    bars = pa.table(
        {
            "symbol": [symbol] * n,
            "ts": pa.array(np.arange(n, dtype=np.int64) * DAY_NS + 10**18, pa.timestamp("ns", tz="UTC")),
            **{h: cols[i] for i, h in enumerate(header[:5])},
        }
    )
    return bars, {h: cols[i] for i, h in enumerate(header) if i >= 5}


def spec_of(label: str) -> str:
    i = label.rfind(").")
    return label if i < 0 else label[: i + 1]


def test_features_equal_the_talib_golden_fixtures(tmp_path: Path) -> None:
    checked = 0
    with kiln.open(tmp_path / "data") as eng:
        cases = {name: load_golden(name) for name in GOLDEN_CASES}
        for bars, _ in cases.values():
            eng.ingest(bars)
        for name, (bars, expected) in cases.items():
            specs = list(dict.fromkeys(spec_of(label) for label in expected))
            eng.submit(bars["symbol"][0].as_py(), specs)
        report = eng.run_until_idle()
        assert report["dead"] == 0, eng.jobs(state="dead")
        for name, (bars, expected) in cases.items():
            symbol = bars["symbol"][0].as_py()
            specs = list(dict.fromkeys(spec_of(label) for label in expected))
            t = eng.features(symbol, specs)
            assert t.num_rows == bars.num_rows
            for label, want in expected.items():
                got = t.column(label).to_numpy()
                assert np.array_equal(np.isnan(got), np.isnan(want)), f"{name} {label}: NaN mask"
                ok = ~np.isnan(want)
                err = np.abs(got[ok] - want[ok]) / np.maximum(1.0, np.abs(want[ok]))
                assert err.size == 0 or err.max() <= 1e-9, f"{name} {label}: {err.max():e}"
                checked += 1
    assert checked > 300, checked


def test_types_nan_warm_up_and_pandas(tmp_path: Path) -> None:
    with kiln.open(tmp_path / "data") as eng:
        eng.ingest(synthetic_bars(2, 60))
        eng.submit(["S0000", "S0001"], ["sma(20)", "macd(12,26,9)"])
        eng.run_until_idle()
        t = eng.features(["S0000", "S0001"], "sma(20),macd(12,26,9)")
    assert t.column_names == [
        "symbol",
        "ts",
        "sma(20)",
        "macd(12,26,9).macd",
        "macd(12,26,9).signal",
        "macd(12,26,9).hist",
    ]
    assert t.schema.field("ts").type == pa.timestamp("ns", tz="UTC")
    assert t.schema.field("symbol").type == pa.string_view()
    for label in t.column_names[2:]:
        assert t.schema.field(label).type == pa.float64()
        assert t.column(label).null_count == 0, "warm-up is NaN, not null"
    sma = t.column("sma(20)").to_numpy()
    # sma(20) warms up over 19 bars of each symbol, then has values.
    assert np.isnan(sma[:19]).all() and not np.isnan(sma[19:60]).any()
    assert np.isnan(sma[60:79]).all() and not np.isnan(sma[79:]).any()
    assert t.column("symbol").to_pylist() == ["S0000"] * 60 + ["S0001"] * 60
    df = t.to_pandas()
    assert str(df["ts"].dtype) == "datetime64[ns, UTC]"
    assert df["sma(20)"].dtype == np.float64
    assert df["ts"].iloc[0] == pd.Timestamp("2000-01-01", tz="UTC")
    # The same window by time, both ends included.
    with kiln.open(tmp_path / "data") as eng:
        w = eng.features("S0001", "sma(20)", start="2000-01-10", end=pd.Timestamp("2000-01-12", tz="UTC"))
    assert w.num_rows == 3
    assert w.column("ts")[0].as_py() == pd.Timestamp("2000-01-10", tz="UTC")


def test_polars_takes_the_value_buffers_without_a_copy(tmp_path: Path) -> None:
    with kiln.open(tmp_path / "data") as eng:
        eng.ingest(pl.from_arrow(synthetic_bars(3, 300)))  # a polars table in, too
        eng.submit(["S0000", "S0001", "S0002"], "rsi(14),ema(12)")
        eng.run_until_idle()
        t = eng.features(["S0000", "S0001", "S0002"], "rsi(14),ema(12)")
    for label in ["rsi(14)", "ema(12)"]:
        chunks = t.column(label).chunks
        assert len(chunks) == 1, "one buffer per column"
        address = chunks[0].buffers()[1].address
        for df in (pl.from_arrow(t.arrow), t.to_polars()):
            back = df[label].to_arrow()
            assert back.buffers()[1].address == address, label
            assert np.array_equal(back.to_numpy(), chunks[0].to_numpy(), equal_nan=True)


def test_the_server_holds_the_directory_and_answers_the_same_table(tmp_path: Path, server_factory) -> None:
    data = tmp_path / "data"
    with kiln.open(data) as eng:
        eng.ingest(synthetic_bars(5, 400))
        symbols = [f"S{i:04d}" for i in range(5)]
        eng.submit(symbols, kiln._native.STANDARD_SET)
        eng.run_until_idle()
        before = eng.features(symbols, kiln._native.STANDARD_SET)
        window = eng.features(symbols[1:3], "bbands(20,2)", start="2000-03-01", end="2000-06-30")
        stats = eng.stats()
    server = server_factory(data)
    with pytest.raises(kiln.DirectoryInUse) as held:
        kiln.open(data)
    assert held.value.address == server.url
    assert held.value.pid == server.pid
    assert server.url in str(held.value) and "kiln serve" in str(held.value)
    remote = kiln.connect(server.url)
    got = remote.features(symbols, kiln._native.STANDARD_SET)
    assert got.schema == before.schema
    assert got.equals(before)
    assert remote.features(symbols[1:3], "bbands(20,2)", start="2000-03-01", end="2000-06-30").equals(window)
    assert remote.stats()["jobs"] == stats["jobs"]
    assert remote.jobs(state="succeeded")[0]["state"] == "succeeded"
    assert remote.events(after=0, limit=1)[0]["seq"] == 1
    with pytest.raises(ValueError, match="rsi"):
        remote.submit(symbols, "rsi(x)")
    with pytest.raises(kiln.NotReady, match="S0000 has no stored wma\\(7\\)"):
        remote.features(symbols, "wma(7)")
    # Submitted over HTTP, run by the server, read back.
    remote.submit(symbols, "wma(7)")
    remote.run_until_idle()
    assert remote.features(symbols, "wma(7)").num_rows == 5 * 400
    # Bars in over HTTP too (a pandas table, renamed columns), validated alike.
    more = synthetic_bars(6, 50).filter(pa.compute.equal(synthetic_bars(6, 50)["symbol"], "S0005"))
    renamed = more.rename_columns(["Ticker", "ts", "open", "high", "low", "close", "volume"]).to_pandas()
    assert remote.ingest(renamed, map={"Ticker": "symbol"})["rows"] == 50
    bad = renamed.copy()
    bad.loc[3, "volume"] = -1.0
    with pytest.raises(ValueError, match="row 3 .*column volume"):
        remote.ingest(bad, map={"Ticker": "symbol"})
    remote.submit("S0005", "sma(10)")
    remote.run_until_idle()
    sma = remote.features("S0005", "sma(10)").column("sma(10)").to_numpy()
    close = more["close"].to_numpy()
    assert sma[-1] == pytest.approx(close[-10:].mean(), rel=1e-12)


def test_a_server_with_a_token_refuses_a_client_without_it(tmp_path: Path, server_factory) -> None:
    data = tmp_path / "data"
    kiln.open(data).close()
    server = server_factory(data, token="s3cret")
    with pytest.raises(kiln.KilnError, match="401"):
        kiln.connect(server.url).stats()
    assert kiln.connect(server.url, token="s3cret").stats()["symbols"] == 0


def test_python_threads_run_while_the_engine_computes(tmp_path: Path) -> None:
    with kiln.open(tmp_path / "data") as eng:
        eng.ingest(synthetic_bars(300, 2000))
        eng.submit([f"S{i:04d}" for i in range(300)], kiln._native.STANDARD_SET)
        ticks = 0
        stop = threading.Event()

        def count() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1  # pure Python: needs the GIL

        t = threading.Thread(target=count)
        t.start()
        time.sleep(0.05)
        at_start = ticks
        started = time.monotonic()
        report = eng.run_until_idle()
        during = ticks - at_start
        seconds = time.monotonic() - started
        stop.set()
        t.join()
    assert report["succeeded"] >= 1 and report["dead"] == 0
    assert seconds > 0.05, "the run should take a while for this to mean anything"
    # Holding the GIL for the run would leave the thread ~no ticks.
    assert during > 10_000, (during, seconds)


def test_ctrl_c_interrupts_a_run_and_loses_nothing(tmp_path: Path) -> None:
    with kiln.open(tmp_path / "data") as eng:
        eng.ingest(synthetic_bars(400, 2000))
        eng.submit([f"S{i:04d}" for i in range(400)], kiln._native.STANDARD_SET, priority="low")
        threading.Timer(0.05, _thread.interrupt_main).start()
        with pytest.raises(KeyboardInterrupt):
            eng.run_until_idle()
            time.sleep(5)  # the interrupt lands here if the run ended first
        # It stopped the run: work is left (and what was done is committed).
        jobs = eng.stats()["jobs"]
        assert jobs["queued"] > 0 and jobs["running"] == 0, jobs
        # The engine still works and finishes the rest.
        eng.run_until_idle()
        assert eng.stats()["jobs"]["succeeded"] >= 1
        assert sum(eng.stats()["jobs"][s] for s in ("queued", "running", "failed", "dead")) == 0


def test_ctrl_c_interrupts_a_read_from_a_server_that_does_not_answer() -> None:
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    try:
        client = kiln.connect(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=30)
        threading.Timer(0.2, _thread.interrupt_main).start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            client.features("S0000", "sma(3)")
            time.sleep(5)  # the interrupt lands here if the read ended first
        assert time.monotonic() - started < 2, "not after the 30 s timeout"
    finally:
        silent.close()


def _answer_once(body_chunks: list[bytes], last_chunk: bool) -> tuple[str, threading.Thread]:
    """A one-request HTTP server: answers 200 with `body_chunks` as chunked
    transfer encoding, with or without the last (empty) chunk."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            head, _, rest = request.partition(b"\r\n\r\n")
            length = int(next(l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")))
            while len(rest) < length:
                rest += conn.recv(65536)
            out = b"HTTP/1.1 200 OK\r\ncontent-type: application/vnd.apache.arrow.stream\r\ntransfer-encoding: chunked\r\n\r\n"
            for chunk in body_chunks:
                out += b"%x\r\n" % len(chunk) + chunk + b"\r\n"
            if last_chunk:
                out += b"0\r\n\r\n"
            conn.sendall(out)
        listener.close()

    t = threading.Thread(target=serve)
    t.start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}", t


def test_an_answer_cut_off_is_an_error_not_a_short_table() -> None:
    table = pa.table({"symbol": pa.array(["A"] * 3, pa.string_view()), "sma(3)": [1.0, 2.0, 3.0]})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
        w.write_table(table)
    whole = sink.getvalue().to_pybytes()
    assert whole.endswith(b"\xff\xff\xff\xff\x00\x00\x00\x00")
    without_end = whole[:-8]  # whole messages, no end-of-stream marker
    url, t = _answer_once([whole], last_chunk=True)
    assert kiln.connect(url).features("A", "sma(3)").num_rows == 6, "the whole answer reads"
    t.join()
    for last_chunk in (True, False):
        url, t = _answer_once([without_end], last_chunk=last_chunk)
        with pytest.raises(kiln.KilnError, match="cut off"):
            kiln.connect(url).features("A", "sma(3)")
        t.join()


def test_bad_input_raises_clear_errors_and_changes_nothing(tmp_path: Path) -> None:
    with kiln.open(tmp_path / "data") as eng:
        bars = synthetic_bars(1, 10).to_pandas()
        bars.loc[4, "high"] = bars.loc[4, "low"] / 2
        with pytest.raises(ValueError, match=r"table: row 4 \(batch 0, row 4\), column high"):
            eng.ingest(bars)
        with pytest.raises(ValueError, match="no column close"):
            eng.ingest(pl.from_arrow(synthetic_bars(1, 10)).drop("close"))
        assert eng.stats()["bars"] == 0, "nothing was ingested"
        eng.ingest(bars.drop(index=4))
        with pytest.raises(ValueError, match="`rsi` parameter `n`"):
            eng.submit("S0000", "rsi(x)")
        with pytest.raises(ValueError, match="priority"):
            eng.submit("S0000", "rsi(3)", priority="urgent")
        with pytest.raises(kiln.NotReady, match="S0000 has no stored rsi\\(3\\)"):
            eng.features("S0000", "rsi(3)")
        with pytest.raises(ValueError, match="2000-13-01"):
            eng.features("S0000", "rsi(3)", start="2000-13-01")
        with pytest.raises(TypeError, match="ingest takes"):
            eng.ingest([1, 2, 3])
        assert eng.jobs() == []


def test_a_refusal_carries_its_retry_after(tmp_path: Path) -> None:
    config = {"submit_symbols_per_s": 1.0, "submit_burst_symbols": 2.0}
    with kiln.open(tmp_path / "data", config=config) as eng:
        eng.ingest(synthetic_bars(5, 30))
        symbols = [f"S{i:04d}" for i in range(5)]
        # A full bucket lets one large request through and is then in debt.
        first = eng.submit(symbols, "sma(3)")
        with pytest.raises(kiln.Refused) as refused:
            eng.submit(symbols, "sma(4)")
        assert refused.value.retry_after > 1.0, "5 symbols of debt at 1 symbol/s"
        assert "retry in" in str(refused.value)
        assert [j["id"] for j in eng.jobs()] == sorted(first, reverse=True)


def test_a_closed_engine_releases_the_directory(tmp_path: Path) -> None:
    eng = kiln.open(tmp_path / "data")
    with pytest.raises(kiln.DirectoryInUse) as held:
        kiln.open(tmp_path / "data")
    assert held.value.address is None
    assert held.value.pid == os.getpid()
    eng.close()
    with pytest.raises(kiln.KilnError, match="closed"):
        eng.stats()
    kiln.open(tmp_path / "data").close()
