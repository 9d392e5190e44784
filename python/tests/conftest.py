"""Shared test helpers: the kiln binary, a real `kiln serve` subprocess on
127.0.0.1, the TA-Lib golden fixtures, synthetic bars (the bench's)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from kiln.bench import synthetic_bars  # noqa: F401  (the tests' bars)

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "fixtures" / "talib"

sys.path.insert(0, str(REPO / "python" / "tests"))

from serving import Server, kiln_bin  # noqa: E402,F401  (the tests' server)


@pytest.fixture
def server_factory():
    started: list[Server] = []

    def start(data: Path, token: str | None = None) -> Server:
        s = Server(data, token)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()
