"""`/openapi.json` against the server it describes: schemathesis (every
check it has) sends requests made from the document to a real `kiln serve
--token` on 127.0.0.1 and checks each answer against the document: status
codes, bodies, headers, content types; schema-valid requests accepted,
invalid ones refused; no 5xx. A missing binary or schemathesis fails the
test; nothing is skipped.

KILN_SCHEMATHESIS_EXAMPLES (20 by default) and KILN_SCHEMATHESIS_SEED (a
fixed one by default, so CI is repeatable) make longer or other runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "python" / "tests"))

from serving import Server, kiln_bin  # noqa: E402  (shared with the package's tests)

SAMPLE = REPO / "examples" / "data" / "stocks-5-daily.csv.gz"
TOKEN = "c0ntract-t0ken"


def kiln(*args: str, data: Path) -> None:
    done = subprocess.run(
        [str(kiln_bin()), "--data", str(data), *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"kiln {' '.join(args)}: {done.stderr}"


def test_the_server_does_what_its_openapi_document_says(tmp_path: Path) -> None:
    data = tmp_path / "data"
    kiln("ingest", "--map", "Ticker=symbol,Date=ts", str(SAMPLE), data=data)
    kiln("submit", "--symbols", "AAPL,MSFT", "--features", "sma(20),rsi(14)", "--wait", data=data)
    server = Server(data, token=TOKEN)
    try:
        request = urllib.request.Request(
            server.url + "/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            doc = json.load(r)
        # schemathesis leaves out the path the document itself came from.
        operations = sum(len(m) for path, m in doc["paths"].items() if path != "/openapi.json")
        assert operations >= 19, doc["paths"].keys()
        schemathesis = Path(sys.executable).with_name("schemathesis")
        assert schemathesis.exists(), f"{schemathesis} is missing: pip install -r {HERE}/requirements.txt"
        run = subprocess.run(
            [
                str(schemathesis),
                "--config-file",
                str(HERE / "schemathesis.toml"),
                "run",
                server.url + "/openapi.json",
                "-H",
                f"Authorization: Bearer {TOKEN}",
                "--checks",
                "all",
                "--max-examples",
                os.environ.get("KILN_SCHEMATHESIS_EXAMPLES", "20"),
                "--seed",
                os.environ.get("KILN_SCHEMATHESIS_SEED", "20261205"),
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=1200,
            # schemathesis keeps its cache in the working directory.
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(HERE), "SCHEMATHESIS_HOOKS": "kiln_hooks"},
        )
    finally:
        server.stop()
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-20000:]
    # Every operation of the document was tested, none skipped or errored.
    selected = re.search(r"Operations:\s+(\d+) selected / (\d+) total", out)
    assert selected and int(selected[1]) == int(selected[2]) == operations, out[-5000:]
    tested = re.search(r"Tested:\s+(\d+)", out)
    assert tested and int(tested[1]) == operations, out[-5000:]
