"""The feature table both faces return, and the conversions they share."""

from __future__ import annotations

import datetime as _dt
from typing import Any, Iterable, Sequence, Union

import pyarrow as pa

from kiln import _native

TimeLike = Union[str, int, _dt.date, _dt.datetime, None]


class FeatureTable:
    """A long-format feature table: ``symbol`` (string), ``ts``
    (``timestamp[ns, UTC]``), then one float64 column per output label
    (``rsi(14)``, ``macd(12,26,9).signal``), NaN where the indicator is
    still warming up.

    It is a pyarrow table (:attr:`arrow`) with conversions: polars takes
    the value buffers as they are, with no copy; pandas converts them (as
    ``pyarrow.Table.to_pandas`` does).
    """

    __slots__ = ("arrow",)

    def __init__(self, table: pa.Table) -> None:
        #: The pyarrow table.
        self.arrow: pa.Table = table

    def to_polars(self) -> Any:
        """A polars DataFrame over the same buffers (in as many chunks as
        the table has: one from :func:`kiln.open`, one per 64 symbols from
        :func:`kiln.connect`; ``.rechunk()`` joins them)."""
        import polars as pl

        return pl.from_arrow(self.arrow, rechunk=False)

    def to_pandas(self, **kwargs: Any) -> Any:
        """A pandas DataFrame (``ts`` as ``datetime64[ns, UTC]``, values
        float64); keyword arguments go to ``pyarrow.Table.to_pandas``."""
        return self.arrow.to_pandas(**kwargs)

    def __arrow_c_stream__(self, requested_schema: Any = None) -> Any:
        """The Arrow PyCapsule stream interface: any Arrow consumer
        (``pl.from_arrow``, ``pd.DataFrame.from_arrow``, DuckDB) reads it."""
        return self.arrow.__arrow_c_stream__(requested_schema)

    @property
    def num_rows(self) -> int:
        """Rows (symbols × bars in the window)."""
        return self.arrow.num_rows

    @property
    def column_names(self) -> list[str]:
        """``symbol``, ``ts``, then the output labels."""
        return self.arrow.column_names

    @property
    def schema(self) -> pa.Schema:
        """The Arrow schema."""
        return self.arrow.schema

    def column(self, name: str) -> pa.ChunkedArray:
        """One column by name."""
        return self.arrow.column(name)

    def equals(self, other: "FeatureTable | pa.Table") -> bool:
        """Whether both have the same schema and bit for bit the same values
        (so NaN equals NaN, which pyarrow's own ``equals`` does not say)."""
        theirs = other.arrow if isinstance(other, FeatureTable) else other
        if self.arrow.schema != theirs.schema or self.arrow.num_rows != theirs.num_rows:
            return False
        for mine, its in zip(self.arrow.columns, theirs.columns):
            a, b = mine.combine_chunks(), its.combine_chunks()
            if pa.types.is_floating(a.type):
                a, b = a.view(pa.int64()), b.view(pa.int64())
            if not a.equals(b):
                return False
        return True

    def __len__(self) -> int:
        return self.arrow.num_rows

    def __repr__(self) -> str:
        labels = self.arrow.column_names[2:]
        return f"FeatureTable({self.arrow.num_rows} rows; {', '.join(labels)})"


def feature_list(features: Union[str, Iterable[str]]) -> str:
    """``"rsi(14),sma(20)"`` or ``["rsi(14)", "sma(20)"]`` as kiln's list text."""
    if isinstance(features, str):
        return features
    return ",".join(features)


def symbol_list(symbols: Union[str, Sequence[str]]) -> list[str]:
    """One symbol or several."""
    if isinstance(symbols, str):
        return [symbols]
    return list(symbols)


def to_ns(value: TimeLike, name: str) -> int | None:
    """A time as epoch nanoseconds (UTC): ISO-8601 text as kiln reads it, an
    int (nanoseconds), a date or a datetime (naive means UTC)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"{name}: a time, not {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return _native.parse_time(value)
    if isinstance(value, _dt.datetime):
        return _native.parse_time(value.isoformat())
    if isinstance(value, _dt.date):
        return _native.parse_time(value.isoformat())
    raise TypeError(f"{name}: a str, int, date or datetime, not {type(value).__name__}")


def arrow_table(table: Any) -> Any:
    """What ``ingest`` takes, as an Arrow stream producer: pyarrow tables and
    record batch readers, polars DataFrames and anything with
    ``__arrow_c_stream__`` go as they are; a pandas DataFrame is converted
    (its index dropped)."""
    if hasattr(table, "__arrow_c_stream__"):
        return table
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is optional
        pd = None
    if pd is not None and isinstance(table, pd.DataFrame):
        return pa.Table.from_pandas(table, preserve_index=False)
    raise TypeError(
        f"ingest takes a pyarrow, polars or pandas table (anything with __arrow_c_stream__), "
        f"not {type(table).__name__}"
    )
