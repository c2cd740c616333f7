"""``llmfleet usage``: tenants' use and cost from Prometheus (:mod:`llmfleet_operator.usage`).

Cases: each LLMDeployment's GPU-seconds are split between its tenants and models by their
busy seconds, and add up to the fleet's; one nobody used is idle; ``--since`` takes a
duration or a time with its offset and refuses a naive or future one; against a real
Prometheus scraping counters that grow at known rates (two tenants, 3:1 busy time), the
table and the JSON carry requests, tokens, GPU-hours and cost in those proportions (cost at
the flag's price, else at the LLMDeployment's price the operator exports), a series born in
the window with its first count counts it, and a
Prometheus that does not answer is an error message, not a traceback, and shows no
credential of its URL.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from llmfleet_operator.usage import IDLE, Share, attribute, main, window_seconds
from tests.runtime.conftest import free_port, stop
from tests.test_metrics_sources import prometheus_binary, query

LLAMA, QWEN = ("team", "llama"), ("team", "qwen")


def test_gpu_seconds_split_by_busy_time_and_add_up() -> None:
    busy = {(LLAMA, "llama", "t/a"): 30.0, (LLAMA, "llama-lora", "t/b"): 10.0}
    found = attribute({LLAMA: 400.0, QWEN: 100.0}, busy, {LLAMA: 36.0})
    assert found == {
        ("t/a", "llama"): Share(30.0, 300.0, 3.0),
        ("t/b", "llama-lora"): Share(10.0, 100.0, 1.0),
        (IDLE, "team/qwen"): Share(0.0, 100.0, None),  # qwen has no price
    }
    assert sum(share.gpu_seconds for share in found.values()) == 500.0


def test_since_is_a_duration_or_a_time_with_its_offset() -> None:
    now = 1_800_000_000.0
    assert window_seconds("90m", now) == 5400
    assert window_seconds("7d", now) == 7 * 86400
    assert window_seconds("2027-01-15T07:00:00+00:00", now) == 3600  # now is 08:00 UTC
    for wrong in ("2027-01-15T08:00:00", "yesterday", "2030-01-01T00:00:00+00:00"):
        with pytest.raises(ValueError, match="--since"):
            window_seconds(wrong, now)


RATES = {
    # series (name, labels) -> growth per second
    ("llmfleet_gateway_requests_total", 'model="llama",tenant="t/a"'): 3.0,
    ("llmfleet_gateway_requests_total", 'model="llama",tenant="t/b"'): 1.0,
    ("llmfleet_gateway_tokens_total", 'model="llama",kind="prompt",tenant="t/a"'): 300.0,
    ("llmfleet_gateway_tokens_total", 'model="llama",kind="completion",tenant="t/a"'): 90.0,
    ("llmfleet_gateway_tokens_total", 'model="llama",kind="prompt",tenant="t/b"'): 100.0,
    ("llmfleet_gateway_tokens_total", 'model="llama",kind="completion",tenant="t/b"'): 30.0,
    (
        "llmfleet_gateway_busy_seconds_total",
        'llmdeployment="llama",llmdeployment_namespace="team",model="llama",tenant="t/a"',
    ): 1.5,
    (
        "llmfleet_gateway_busy_seconds_total",
        'llmdeployment="llama",llmdeployment_namespace="team",model="llama",tenant="t/b"',
    ): 0.5,
    ("llmfleet_operator_gpu_seconds_total", 'llmdeployment="llama",namespace="team"'): 8.0,
    # A quarter of them on spot nodes.
    ("llmfleet_operator_spot_gpu_seconds_total", 'llmdeployment="llama",namespace="team"'): 2.0,
}
BORN = (
    ("llmfleet_gateway_requests_total", 'model="llama",tenant="t/c"', 1),
    ("llmfleet_gateway_tokens_total", 'model="llama",kind="prompt",tenant="t/c"', 50),
)
"""Series that appear during the window with their first count in them."""
PRICE = (
    'llmfleet_operator_gpu_hour_price{llmdeployment="llama",namespace="team"} 7.2\n'
    'llmfleet_operator_spot_gpu_hour_price{llmdeployment="llama",namespace="team"} 3.6'
)
"""The operator's export of the LLMDeployment's spec.placement.gpuHourPrice and
spec.placement.spot.gpuHourPrice."""


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[str]:
    """A real Prometheus scraping, every second, counters that grow at RATES."""
    started = time.monotonic()

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            elapsed = time.monotonic() - started
            lines = [
                f"{name}{{{labels}}} {rate * elapsed}" for (name, labels), rate in RATES.items()
            ]
            if elapsed > 2:  # t/c's one request: its series born with its count
                lines += [f"{name}{{{labels}}} {value}" for name, labels, value in BORN]
            body = ("\n".join([*lines, PRICE]) + "\n").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    pages = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=pages.serve_forever, daemon=True).start()
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "fleet",
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "honor_labels": True,
                "static_configs": [{"targets": [f"127.0.0.1:{pages.server_port}"]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            prometheus_binary(),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if len(query(url, "llmfleet_operator_gpu_seconds_total[10s]")[0]["values"]) >= 4:
                    break
            except (OSError, IndexError, KeyError):
                pass
            time.sleep(0.3)
        else:
            pytest.fail("prometheus did not scrape four times in 30 s")
        yield url
    finally:
        stop(proc)
        pages.shutdown()
        pages.server_close()
        log.close()


def test_usage_from_a_real_prometheus(prometheus: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["--prometheus", prometheus, "--since", "1h", "--json", "--gpu-hour-price", "3600"])
        == 0
    )
    document = json.loads(capsys.readouterr().out)
    rows = {row["tenant"]: row for row in document["rows"]}
    assert set(rows) == {"t/a", "t/b", "t/c"}
    assert (rows["t/c"]["requests"], rows["t/c"]["prompt_tokens"]) == (1, 50)
    a, b = rows["t/a"], rows["t/b"]
    assert a["requests"] == pytest.approx(3 * b["requests"], rel=0.05)
    assert a["prompt_tokens"] == pytest.approx(3 * b["prompt_tokens"], rel=0.05)
    assert a["completion_tokens"] == pytest.approx(0.3 * a["prompt_tokens"], rel=0.05)
    assert a["gpu_seconds"] == pytest.approx(3 * b["gpu_seconds"], rel=0.05)
    assert a["gpu_seconds"] + b["gpu_seconds"] == pytest.approx(
        8 * (a["busy_seconds"] + b["busy_seconds"]) / 2, rel=0.05
    )
    assert a["cost"] == pytest.approx(a["gpu_seconds"])  # 3600 a GPU-hour: 1 a GPU-second
    assert document["currency"] == "USD"

    assert main(["--prometheus", prometheus, "--since", "1h", "--tenant", "t/b"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["tenant", "model"]
    assert lines[0].endswith("cost (USD)")  # the LLMDeployment's own prices
    [line] = lines[1:]
    cells = line.split()
    assert cells[0] == "t/b"
    # 7.2 a GPU-hour on demand, 3.6 for the quarter of the GPU-seconds held on spot.
    blended = (7.2 * 6 + 3.6 * 2) / 8
    assert float(cells[-1]) == pytest.approx(float(cells[-2]) * blended, rel=0.02, abs=0.01)


def test_a_prometheus_that_does_not_answer_is_a_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_port()
    assert main(["--prometheus", f"http://viewer:s3cret@127.0.0.1:{port}"]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"llmfleet usage: Prometheus at http://127.0.0.1:{port} did not answer")
    assert "Traceback" not in error
    assert "s3cret" not in error
