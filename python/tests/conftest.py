"""Shared test helpers: the kiln binary, a real `kiln serve` subprocess on
127.0.0.1, the TA-Lib golden fixtures, synthetic bars (the bench's)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kiln.bench import synthetic_bars  # noqa: F401  (the tests' bars)

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "fixtures" / "talib"

sys.path.insert(0, str(REPO / "python" / "tests"))


def kiln_bin() -> Path:
    """The release binary `cargo test --release` (the README's test command)
    built; KILN_BIN overrides. Missing is a failure, not a skip."""
    path = Path(os.environ.get("KILN_BIN", REPO / "target" / "release" / "kiln"))
    assert path.exists(), f"{path} is missing: run `cargo build --release` first"
    return path


class Server:
    """`kiln serve` on 127.0.0.1 (port chosen by the OS), stopped with SIGINT."""

    def __init__(self, data: Path, token: str | None = None) -> None:
        args = [str(kiln_bin()), "--json", "--data", str(data), "serve", "--addr", "127.0.0.1:0"]
        if token:
            args += ["--token", token]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read()
            raise AssertionError(f"kiln serve did not start: {err}")
        self.url = "http://" + json.loads(line)["listening"]
        self.pid = self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.returncode == 0, self.proc.stderr.read()


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
