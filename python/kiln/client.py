"""The same methods against a running ``kiln serve``: :func:`kiln.connect`.

Plain HTTP (the standard library's, and the native module's for the large
reads); tables travel as Arrow IPC streams (``POST /v1/bars`` in,
``POST /v1/features/query`` out).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Iterable, Mapping, Sequence, Union

import pyarrow as pa
import pyarrow.ipc

from kiln import _native
from kiln._native import KilnError, NotReady, Refused
from kiln._table import (
    FeatureTable,
    TimeLike,
    arrow_table,
    feature_list,
    symbol_list,
    to_ns,
)

ARROW_STREAM = "application/vnd.apache.arrow.stream"

#: Symbols per request: ``kiln serve``'s default ``batch_symbols_max``.
SYMBOLS_PER_REQUEST = 1000


def _parts(symbols: list[str]) -> list[list[str]]:
    return [symbols[i : i + SYMBOLS_PER_REQUEST] for i in range(0, len(symbols), SYMBOLS_PER_REQUEST)] or [[]]


class Client:
    """A connection to ``kiln serve`` (see :func:`kiln.connect`)."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self._timeout = timeout

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> tuple[bytes, str]:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as r:
                return r.read(), r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            raise _error(e.code, e.read(), e.headers.get("Retry-After")) from None
        except urllib.error.URLError as e:
            raise KilnError(f"{self.url}: cannot reach kiln serve: {e.reason}") from None

    def _json(self, method: str, path: str, payload: Any = None) -> Any:
        body = None if payload is None else json.dumps(payload).encode()
        data, _ = self._request(method, path, body, "application/json" if body else None)
        return json.loads(data)

    def ingest(
        self,
        table: Any,
        *,
        map: Mapping[str, str] | None = None,  # noqa: A002
        ts_unit: str | None = None,
    ) -> dict:
        """As :meth:`kiln.Engine.ingest`, uploaded as one Arrow IPC stream."""
        if ts_unit is not None:
            raise ValueError("ts_unit: send timestamps as Arrow timestamps to a server")
        reader = pa.RecordBatchReader.from_stream(arrow_table(table))
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, reader.schema) as w:
            for batch in reader:
                w.write_batch(batch)
        query = ""
        if map:
            query = "?" + urllib.parse.urlencode({"map": ",".join(f"{k}={v}" for k, v in map.items())})
        data, _ = self._request("POST", "/v1/bars" + query, sink.getvalue().to_pybytes(), ARROW_STREAM)
        return json.loads(data)

    def submit(
        self,
        symbols: Union[str, Sequence[str]],
        features: Union[str, Iterable[str]],
        priority: str = "normal",
    ) -> list[int]:
        """As :meth:`kiln.Engine.submit` (in requests of at most
        :data:`SYMBOLS_PER_REQUEST` symbols, the server's default bound)."""
        ids: list[int] = []
        for part in _parts(symbol_list(symbols)):
            answer = self._json(
                "POST",
                "/v1/compute/batch",
                {"symbols": part, "features": feature_list(features), "priority": priority},
            )
            ids += answer["job_ids"]
        return ids

    def run_until_idle(self, poll: float = 0.05) -> dict:
        """Waits until the server's queue has nothing queued, running or
        waiting for a retry (the server runs the jobs, anyone's). Returns
        how many jobs succeeded and died during the wait (not before it),
        and the wait in seconds; Ctrl-C interrupts it."""
        started = time.monotonic()
        before = self.stats()["jobs"]
        while True:
            jobs = self.stats()["jobs"]
            if jobs["queued"] + jobs["running"] + jobs["failed"] == 0:
                break
            time.sleep(poll)
        return {
            "succeeded": jobs["succeeded"] - before["succeeded"],
            "dead": jobs["dead"] - before["dead"],
            "seconds": time.monotonic() - started,
        }

    def features(
        self,
        symbols: Union[str, Sequence[str]],
        features: Union[str, Iterable[str]],
        start: TimeLike = None,
        end: TimeLike = None,
    ) -> FeatureTable:
        """As :meth:`kiln.Engine.features`: one request per
        :data:`SYMBOLS_PER_REQUEST` symbols, each answered as one Arrow IPC
        stream; the table keeps the answers' record batches as its chunks."""
        tables = []
        for part in _parts(symbol_list(symbols)):
            payload: dict[str, Any] = {"symbols": part, "features": feature_list(features)}
            for name, value in (("from", to_ns(start, "start")), ("to", to_ns(end, "end"))):
                if value is not None:
                    payload[name] = value
            # Read and decoded natively: Python's socket reads would take
            # longer than everything else together.
            answer = _native.post_for_table(
                self.url + "/v1/features/query", json.dumps(payload).encode(), self._token, self._timeout
            )
            if isinstance(answer, tuple):
                status, retry_after, body = answer
                raise _error(status, body, retry_after)
            tables.append(answer)
        return FeatureTable(tables[0] if len(tables) == 1 else pa.concat_tables(tables))

    def jobs(self, state: str | None = None, limit: int = 100) -> list[dict]:
        """As :meth:`kiln.Engine.jobs` (the server answers at most 10,000)."""
        query: dict[str, Any] = {"limit": limit}
        if state is not None:
            query["state"] = state
        return self._json("GET", "/v1/jobs?" + urllib.parse.urlencode(query))

    def stats(self) -> dict:
        """As :meth:`kiln.Engine.stats`."""
        return self._json("GET", "/v1/stats")

    def events(self, after: int = 0, limit: int = 256) -> list[dict]:
        """As :meth:`kiln.Engine.events` (the server answers at most 10,000)."""
        return self._json("GET", "/v1/events?" + urllib.parse.urlencode({"after": after, "limit": limit}))

    def close(self) -> None:
        """Nothing to release (each call is one request); for symmetry."""

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"kiln.Client({self.url})"


def _error(status: int, body: bytes, retry_after: str | None) -> Exception:
    """The exception an error answer raises, as the engine would raise it."""
    try:
        answer = json.loads(body)
        detail, kind = answer.get("detail", ""), answer.get("error", "")
    except (ValueError, AttributeError):
        detail, kind = body[:200].decode("utf-8", "replace"), ""
    text = f"{detail} (HTTP {status})"
    if status == 429:
        err = Refused(text)
        err.retry_after = float(retry_after or 1)
        return err
    if status == 409 and kind == "not_ready":
        return NotReady(text)
    if status == 400:
        return ValueError(text)
    if status == 404:
        return KeyError(text)
    return KilnError(text)
