"""What schemathesis must know to make requests kiln's `/openapi.json`
calls valid: the formats it names for rules a JSON schema cannot hold
(`kiln-feature-spec`, `kiln-feature-list`, `kiln-time`,
`kiln-column-map`; see `src/api/schema.rs`), and bar bodies in each
format `POST /v1/bars` takes (valid OHLCV rows as the README states the
rules). Loaded by schemathesis through SCHEMATHESIS_HOOKS=kiln_hooks."""

from __future__ import annotations

import datetime as dt
import gzip
import io

import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet
import schemathesis
from hypothesis import strategies as st

PERIOD_MAX = 10_000
ONE_PERIOD = ["sma", "ema", "wma", "rsi", "atr", "natr", "roc", "mom", "stddev", "vwap"]
period = st.integers(1, PERIOD_MAX)


@st.composite
def macd(draw) -> str:
    fast = draw(st.integers(1, PERIOD_MAX - 1))
    slow = draw(st.integers(fast + 1, PERIOD_MAX))
    return f"macd({fast},{slow},{draw(period)})"


spec = st.one_of(
    st.builds("{}({})".format, st.sampled_from(ONE_PERIOD), period),
    st.builds("volatility({})".format, st.integers(2, PERIOD_MAX)),
    st.sampled_from(["trange", "logret", "obv"]),
    macd(),
    st.builds(
        "bbands({},{})".format,
        period,
        st.floats(min_value=0.01, max_value=100, allow_nan=False, allow_infinity=False),
    ),
)
# At most 21 specs: each has at most 3 outputs, a request at most 64.
spec_list = st.lists(spec, min_size=1, max_size=21).map(",".join)

# Epoch nanoseconds in an i64 reach from 1677-09-21 to 2262-04-11.
moment = st.datetimes(min_value=dt.datetime(1678, 1, 1), max_value=dt.datetime(2262, 1, 1))
time_text = st.one_of(
    moment.map(lambda t: t.strftime("%Y-%m-%d")),
    moment.map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")),
)

schemathesis.openapi.format("kiln-feature-spec", spec)
schemathesis.openapi.format("kiln-feature-list", spec_list)
schemathesis.openapi.format("kiln-time", time_text)
# The bodies below use kiln's own column names, so a map renames nothing
# they hold.
schemathesis.openapi.format("kiln-column-map", st.sampled_from(["", "Ticker=symbol", "Date=ts,Ticker=symbol"]))


@st.composite
def bars(draw) -> dict[str, list]:
    """Valid bars: a few symbols, distinct days, positive prices with high
    at or above open and close, low at or below them, volume >= 0."""
    cols = {k: [] for k in ["symbol", "ts", "open", "high", "low", "close", "volume"]}
    for symbol in draw(st.lists(st.sampled_from(["ZZA", "ZZB", "ZZ.C"]), min_size=1, max_size=3, unique=True)):
        days = draw(st.lists(st.integers(0, 20_000), min_size=1, max_size=20, unique=True))
        for day in days:
            o = draw(st.floats(1, 1000))
            c = draw(st.floats(1, 1000))
            cols["symbol"].append(symbol)
            cols["ts"].append((dt.date(1990, 1, 1) + dt.timedelta(days=day)).isoformat())
            cols["open"].append(o)
            cols["high"].append(max(o, c) * draw(st.floats(1, 1.5)))
            cols["low"].append(min(o, c) * draw(st.floats(0.5, 1)))
            cols["close"].append(c)
            cols["volume"].append(draw(st.integers(0, 10**9)))
    return cols


def csv(cols: dict[str, list]) -> bytes:
    lines = [",".join(cols)]
    lines += [",".join(str(v) for v in row) for row in zip(*cols.values())]
    return ("\n".join(lines) + "\n").encode()


def table(cols: dict[str, list]) -> pa.Table:
    return pa.table({**cols, "ts": pa.array([dt.date.fromisoformat(d) for d in cols["ts"]], pa.date32())})


def arrow(cols: dict[str, list], stream: bool) -> bytes:
    t = table(cols)
    out = io.BytesIO()
    writer = pa.ipc.new_stream if stream else pa.ipc.new_file
    with writer(out, t.schema) as w:
        w.write_table(t)
    return out.getvalue()


def parquet(cols: dict[str, list]) -> bytes:
    out = io.BytesIO()
    pa.parquet.write_table(table(cols), out)
    return out.getvalue()


schemathesis.openapi.media_type("text/csv", bars().map(csv))
schemathesis.openapi.media_type("application/gzip", bars().map(lambda c: gzip.compress(csv(c))))
schemathesis.openapi.media_type("application/vnd.apache.arrow.stream", bars().map(lambda c: arrow(c, True)))
schemathesis.openapi.media_type("application/vnd.apache.arrow.file", bars().map(lambda c: arrow(c, False)))
schemathesis.openapi.media_type("application/vnd.apache.parquet", bars().map(parquet))
