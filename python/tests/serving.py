"""`kiln serve` as the Python package's tests and the dashboard's browser
tests (tests/browser) start it: the release binary on 127.0.0.1, a port
the OS picks, stopped with SIGINT and expected to exit 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


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
