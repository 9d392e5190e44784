"""The dashboard's browser tests: a real `kiln serve` on 127.0.0.1 over a
data directory prepared with the `kiln` CLI (the bundled sample, AAPL's
features, one dead job), driven by Debian's Chromium through Playwright.
A missing binary or browser fails the tests; nothing is skipped."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "python" / "tests"))

from serving import Server, kiln_bin  # noqa: E402  (shared with the package's tests)

SAMPLE = REPO / "examples" / "data" / "stocks-5-daily.csv.gz"
CHROMIUM = os.environ.get("KILN_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FEATURES = "sma(20),bbands(20,2),rsi(14),macd(12,26,9),atr(14)"
TOKEN = "br0wser-t0ken"


def kiln(*args: str, data: Path, config: Path | None = None) -> str:
    cmd = [str(kiln_bin()), "--data", str(data)]
    if config:
        cmd += ["--config", str(config)]
    done = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"kiln {' '.join(args)}: {done.stderr}"
    return done.stdout


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> dict:
    """A data directory: the sample, AAPL's features, one dead MSFT job (a
    series over a tiny `series_bytes_max`, with one attempt), and what the
    CLI says AAPL's last RSI is (read before the server holds the
    directory)."""
    data = tmp_path_factory.mktemp("kiln") / "data"
    kiln("ingest", "--map", "Ticker=symbol,Date=ts", str(SAMPLE), data=data)
    tight = data.parent / "tight.toml"
    tight.write_text("attempts_max = 1\nseries_bytes_max = 1024\n")
    kiln("submit", "--symbols", "MSFT", "--features", "sma(5)", "--wait", data=data, config=tight)
    dead = json.loads(kiln("--json", "jobs", "list", "--state", "dead", data=data))
    assert len(dead) == 1, dead
    kiln("submit", "--symbols", "AAPL", "--features", FEATURES, "--wait", data=data)
    # `kiln features AAPL "rsi(14)" --tail 1`: a header, then the date and the value.
    rsi = kiln("features", "AAPL", "rsi(14)", "--tail", "1", data=data).strip().splitlines()[-1].split()[-1]
    return {"data": data, "dead": dead[0], "rsi": float(rsi)}


@pytest.fixture(scope="session")
def server(prepared):
    s = Server(prepared["data"])
    yield s
    s.stop()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    assert shutil.which(CHROMIUM) or Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


class Watched:
    """A page whose console errors, failed requests and requests that left
    127.0.0.1 are collected."""

    def __init__(self, context) -> None:
        self.page = context.new_page()
        self.problems: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", self._failed)
        self.page.on("response", self._response)
        self.page.on("request", self._request)

    def _failed(self, r) -> None:
        # A request the browser dropped because the test navigated on (an
        # icon still loading, the event stream) is not a failure; every
        # other failed request is. Error statuses are caught by `_response`.
        if r.failure != "net::ERR_ABORTED":
            self.problems.append(f"request failed: {r.url} {r.failure}")

    def _response(self, r) -> None:
        if r.status >= 400:
            self.problems.append(f"{r.status}: {r.url}")

    def _request(self, r) -> None:
        if not r.url.startswith("http://127.0.0.1:") and not r.url.startswith("data:"):
            self.problems.append(f"left 127.0.0.1: {r.url}")


@pytest.fixture
def watched(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    w = Watched(context)
    yield w
    context.close()
