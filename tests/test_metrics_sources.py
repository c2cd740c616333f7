"""The metrics sources: the parser, DirectScrape and PrometheusSource, on real parts.

Cases:

- the parser on a real vLLM 0.32 ``/metrics`` page (``tests/fixtures``), on pages with
  the pre-V1 KV name, two engines, a missing metric and garbage, and on the real gateway's
  pending prefill tokens and pending requests families (the gateway on loopback, its
  accounts set as requests in flight set them; a gateway with no replica exports the
  tokens family empty);
- Prometheus range results read purely: stale, failed last scrape, missing metric, and a
  restarted pod whose old series is ignored;
- the parser reads only the policy's lines: a malformed line elsewhere costs nothing, one
  among them costs the sample;
- DirectScrape against real ``llmfleet engine-sim`` processes under load (running > 0,
  waiting > 0, KV > 0) plus a dead target reported unreachable, no socket left open
  between calls, and the real gateways'
  pending requests summed, each gateway read once per round of periods (a dead one tried
  once; a page counting its GETs passes the gateway's own page through);
- PrometheusSource against a real Prometheus (Debian's package) scraping those processes:
  the same numbers as DirectScrape, the dead target unreachable through ``up``, then
  Prometheus stopped: every replica missing with the reason, nothing raised.

Pure cases never sleep; the integration cases poll with deadlines.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmfleet_contract.exposition import ExpositionError, parse
from llmfleet_gateway.pool import Model
from llmfleet_gateway.server import GatewaySettings
from llmfleet_operator.autoscale.inputs import Sample
from llmfleet_operator.metrics import (
    DirectScrape,
    MetricsSource,
    Miss,
    MissReason,
    PrometheusSource,
    Readings,
    Target,
    parse_engine,
    pending_prefill_tokens,
    pending_requests,
)
from llmfleet_operator.metrics.prometheus import sample_from_series
from tests.gateway.conftest import running
from tests.pages import serve_page
from tests.runtime.conftest import FIXTURES, free_port, stop, wait_healthy

NAMESPACE = "llmfleet-test"
MAX_NUM_SEQS = 2
LOAD_PER_ENGINE = 3  # two running, one waiting


def vllm_page() -> str:
    """A real vLLM 0.32 ``/metrics`` page (a committed fixture)."""
    return (FIXTURES / "vllm-0.32.0-cpu-metrics.txt").read_text()


# --- the parser ------------------------------------------------------------------------


def test_parser_reads_a_real_vllm_page() -> None:
    sample = parse_engine(vllm_page(), "r0", 12.5)
    assert sample == Sample(
        time=12.5,
        replica="r0",
        waiting=0,
        pending_prefill_tokens=None,
        kv_cache_usage=0.0,
        running=0,
        started=20.0,  # vllm:time_to_first_token_seconds_count
    )


def test_parser_falls_back_to_the_pre_v1_kv_name() -> None:
    page = vllm_page().replace("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
    page = page.replace('vllm:gpu_cache_usage_perc{engine="0",model_name="tiny"} 0.0', "")
    page += 'vllm:gpu_cache_usage_perc{engine="0",model_name="tiny"} 0.25\n'
    sample = parse_engine(page, "r0", 0.0, pending_prefill_tokens=7)
    assert isinstance(sample, Sample)
    assert (sample.kv_cache_usage, sample.pending_prefill_tokens) == (0.25, 7)


def test_parser_sums_counts_and_averages_kv_over_engines() -> None:
    page = "\n".join(
        f'vllm:{name}{{engine="{engine}",model_name="m"}} {value}'
        for engine, values in (("0", (3, 2, 0.5, 10)), ("1", (1, 4, 0.7, 5)))
        for name, value in zip(
            (
                "num_requests_waiting",
                "num_requests_running",
                "kv_cache_usage_perc",
                "time_to_first_token_seconds_count",
            ),
            values,
            strict=True,
        )
    )
    sample = parse_engine(page + "\n", "r0", 0.0)
    assert isinstance(sample, Sample)
    assert (sample.waiting, sample.running, sample.started) == (4, 6, 15)
    assert sample.kv_cache_usage == pytest.approx(0.6)


def test_parser_names_what_is_missing() -> None:
    page = "\n".join(
        line for line in vllm_page().splitlines() if "num_requests_running" not in line
    )
    miss = parse_engine(page + "\n", "r0", 0.0)
    assert miss == Miss("r0", MissReason.MISSING_METRIC, "no vllm:num_requests_running")
    garbage = parse_engine("<html>502 Bad Gateway</html>", "r0", 0.0)
    assert garbage == Miss(
        "r0",
        MissReason.MISSING_METRIC,
        "no vllm:num_requests_waiting, vllm:num_requests_running, vllm:kv_cache_usage_perc",
    )


def test_parser_reads_only_the_policys_lines() -> None:
    """A malformed line elsewhere on the page costs nothing; one among the policy's series
    costs the sample, with the line named."""
    elsewhere = vllm_page().replace('{engine="0",model_name="tiny",reason=', "{engine=0,reason=")
    with pytest.raises(ExpositionError, match="malformed labels"):
        parse(elsewhere)
    assert isinstance(parse_engine(elsewhere, "r0", 0.0), Sample)
    assert parse_engine(elsewhere, "r0", 0.0) == parse_engine(vllm_page(), "r0", 0.0)
    among = vllm_page().replace(
        'vllm:num_requests_running{engine="0"', "vllm:num_requests_running{engine=0"
    )
    miss = parse_engine(among, "r0", 0.0)
    assert isinstance(miss, Miss)
    assert miss.reason is MissReason.MISSING_METRIC
    assert "unparseable" in miss.detail
    assert "vllm:num_requests_running{engine=0" in miss.detail
    indented = vllm_page().replace("\nvllm:num_requests_running{", "\n  vllm:num_requests_running{")
    assert parse_engine(indented, "r0", 0.0) == parse_engine(vllm_page(), "r0", 0.0)


@pytest.mark.parametrize("value", ["NaN", "+Inf"])
def test_a_gauge_that_is_not_a_number_is_a_miss_not_an_exception(value: str) -> None:
    page = "\n".join(
        line.split(" ")[0] + " " + value if line.startswith("vllm:num_requests_waiting{") else line
        for line in vllm_page().splitlines()
    )
    miss = parse_engine(page + "\n", "r0", 0.0)
    assert miss == Miss("r0", MissReason.MISSING_METRIC, "not a number: vllm:num_requests_waiting")


@contextmanager
def real_gateway(
    waiting: dict[tuple[str, str], int] | None = None,
    tokens: dict[tuple[str, str], int] | None = None,
) -> Iterator[str]:
    """The gateway itself on loopback, its accounts set as requests in flight would set them:
    ``waiting`` requests per LLMDeployment (namespace, name), pending prefill ``tokens`` per
    (namespace, replica pod). Yields its host:port."""
    waiting, tokens = waiting or {}, tokens or {}
    keys = sorted({*waiting, *((ns, "sim") for ns, _ in tokens)})
    models = tuple(Model(f"{name}-in-{ns}", name, ns) for ns, name in keys)
    with running(GatewaySettings(models=models, scrape_seconds=0), engines=0) as stack:
        gateway = stack.gateway
        assert gateway is not None

        async def account() -> None:
            for (ns, name), count in waiting.items():
                for _ in range(count):
                    gateway.room.enter(f"{name}-in-{ns}")
            for ns in {ns for ns, _ in tokens}:
                pods = [(pod, "http://127.0.0.1:9") for pod_ns, pod in tokens if pod_ns == ns]
                gateway.pool.set_replicas((ns, "sim"), pods)
            for (ns, pod), count in tokens.items():
                gateway.pool.groups[(ns, "sim")][pod].pending_prefill_tokens = count

        stack.run(account)
        yield f"127.0.0.1:{stack.port}"


def metrics_of(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as page:
        return str(page.read().decode())


def test_gateway_pending_prefill_tokens_per_replica() -> None:
    with real_gateway(tokens={("n", "a"): 1200, ("n", "b"): 0, ("m", "a"): 5}) as address:
        page = metrics_of(address)
    assert pending_prefill_tokens(page) == {("n", "a"): 1200, ("n", "b"): 0, ("m", "a"): 5}
    assert pending_prefill_tokens(vllm_page()) is None  # not exported: unknown, not zero
    with real_gateway(waiting={("n", "m"): 1}) as address:  # no replica: exported, none pending
        assert pending_prefill_tokens(metrics_of(address)) == {}


WAITING = {("a", "m"): 3, ("b", "m"): 7}


def test_gateway_pending_requests_per_llmdeployment() -> None:
    with real_gateway(WAITING) as address:
        page = metrics_of(address)
    assert pending_requests(page, "a", "m") == 3
    assert pending_requests(page, "b", "m") == 7
    assert pending_requests(page, "a", "other") is None
    assert pending_requests(vllm_page(), "a", "m") is None


# --- Prometheus results, read purely ---------------------------------------------------

TARGET = Target(replica="r0", url="http://10.0.0.5:8000", pod="p0", namespace=NAMESPACE)


def series(name: str, time: float, value: float, instance: str = "10.0.0.5:8000") -> Any:
    labels = {"__name__": name, "instance": instance, "pod": "p0", "namespace": NAMESPACE}
    return {"metric": labels, "values": [[time - 1, "9"], [time, str(value)]]}


def healthy(time: float, instance: str = "10.0.0.5:8000") -> list[Any]:
    return [
        series("up", time, 1, instance),
        series("vllm:num_requests_waiting", time, 2, instance),
        series("vllm:num_requests_running", time, 5, instance),
        series("vllm:kv_cache_usage_perc", time, 0.5, instance),
    ]


def test_prometheus_series_become_a_sample_stamped_with_the_scrape() -> None:
    sample = sample_from_series(healthy(100.0), TARGET, now=103.0, staleness_seconds=60)
    assert sample == Sample(100.0, "r0", 2, None, 0.5, 5)


def test_prometheus_series_stale_failed_or_incomplete_are_misses() -> None:
    stale = sample_from_series(healthy(100.0), TARGET, now=200.0, staleness_seconds=60)
    assert isinstance(stale, Miss)
    assert stale.reason is MissReason.STALE
    empty = sample_from_series([], TARGET, now=200.0, staleness_seconds=60)
    assert isinstance(empty, Miss)
    assert empty.reason is MissReason.STALE
    assert f"{NAMESPACE}/p0" in empty.detail
    down = [series("up", 100.0, 0), *healthy(90.0)[1:]]
    failed = sample_from_series(down, TARGET, now=101.0, staleness_seconds=60)
    assert isinstance(failed, Miss)
    assert failed.reason is MissReason.UNREACHABLE
    partial = sample_from_series(healthy(100.0)[:3], TARGET, now=101.0, staleness_seconds=60)
    assert partial == Miss("r0", MissReason.MISSING_METRIC, "no vllm:kv_cache_usage_perc")
    vanished = [*healthy(100.0)[:3], series("vllm:kv_cache_usage_perc", 95.0, 0.5)]
    gone = sample_from_series(vanished, TARGET, now=101.0, staleness_seconds=60)
    assert gone == Miss("r0", MissReason.MISSING_METRIC, "no vllm:kv_cache_usage_perc")


def test_prometheus_series_of_a_restarted_pod_read_the_newest_address() -> None:
    old = [series("vllm:num_requests_running", 80.0, 99, "10.0.0.4:8000")]
    sample = sample_from_series([*old, *healthy(100.0)], TARGET, now=101.0, staleness_seconds=60)
    assert isinstance(sample, Sample)
    assert sample.running == 5


# --- real simulator processes ----------------------------------------------------------


@dataclass(frozen=True)
class Fleet:
    targets: tuple[Target, ...]
    """Live simulators first, then a dead port."""
    dead: Target


def _load(port: int) -> http.client.HTTPConnection:
    """A long streaming completion, sent and left open (the engine works on it meanwhile)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = {"model": "sim", "prompt": "hello " * 200, "max_tokens": 1500, "stream": True}
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    return conn


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Two engine simulators, slowed down (0.01 engine s per wall s) and loaded."""
    tmp = tmp_path_factory.mktemp("sims")
    procs: list[subprocess.Popen[bytes]] = []
    conns: list[http.client.HTTPConnection] = []
    targets: list[Target] = []
    try:
        for index in range(2):
            port = free_port()
            log = tmp / f"sim-{index}.log"
            cmd = [sys.executable, "-m", "llmfleet_runtime.simulator", "--host", "127.0.0.1"]
            cmd += ["--port", str(port), "--profile", "fast", "--time-scale", "0.01"]
            cmd += ["--max-num-seqs", str(MAX_NUM_SEQS), "--served-model-name", "sim"]
            with log.open("wb") as out:
                procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT))
            wait_healthy(port, 30, procs[-1], log)
            conns += [_load(port) for _ in range(LOAD_PER_ENGINE)]
            url = f"http://127.0.0.1:{port}"
            targets.append(Target(f"sim-{index}", url, f"sim-{index}-pod", NAMESPACE))
        dead_port = free_port()
        dead = Target("dead", f"http://127.0.0.1:{dead_port}", "dead-pod", NAMESPACE)
        yield Fleet((*targets, dead), dead)
    finally:
        for conn in conns:
            conn.close()
        for proc in procs:
            proc.terminate()  # all at once; then reap each
        for proc in procs:
            stop(proc, timeout=10)


def loaded_readings(source: MetricsSource, fleet: Fleet, deadline: float) -> Readings:
    """Poll until every live engine shows its whole load (requests arrive asynchronously)."""
    end = time.monotonic() + deadline
    while True:
        readings = source.samples(fleet.targets, time.time())
        full = [s for s in readings.samples if s.running == MAX_NUM_SEQS and s.waiting >= 1]
        if len(full) == len(fleet.targets) - 1 or time.monotonic() > end:
            return readings
        time.sleep(0.2)


def test_direct_scrape_reads_loaded_engines_and_reports_the_dead_one(fleet: Fleet) -> None:
    readings = loaded_readings(DirectScrape(timeout_seconds=2), fleet, 20)
    assert [s.replica for s in readings.samples] == ["sim-0", "sim-1"]
    for sample in readings.samples:
        assert sample.running == MAX_NUM_SEQS
        assert sample.waiting == LOAD_PER_ENGINE - MAX_NUM_SEQS
        assert 0 < sample.kv_cache_usage < 1
        assert sample.pending_prefill_tokens is None
    [miss] = readings.missing
    assert (miss.replica, miss.reason) == ("dead", MissReason.UNREACHABLE)
    assert fleet.dead.url in miss.detail
    assert "refused" in miss.detail.lower()


def test_direct_scrape_holds_no_socket_between_calls(fleet: Fleet) -> None:
    """A connection per GET, closed with its answer: a fleet's pods, and pods that went away
    (the dead port), leave no socket open in the operator between periods."""
    scrape = DirectScrape(timeout_seconds=2)
    scrape.samples(fleet.targets, time.time())  # the first call's imports and threads
    before = open_fds()
    for _ in range(5):
        readings = scrape.samples(fleet.targets, time.time())
        assert len(readings.samples) == len(fleet.targets) - 1
    assert open_fds() == before


def open_fds() -> list[str]:
    """This process's open file descriptors, what each one is."""
    fds = Path("/proc/self/fd")
    found = []
    for fd in fds.iterdir():
        try:
            found.append(os.readlink(fd))
        except FileNotFoundError:  # the listing's own, closed since
            continue
    return sorted(found)


TOKENS = {(NAMESPACE, "sim-0-pod"): 1200}


def test_direct_scrape_adds_the_gateways_pending_prefill_tokens(fleet: Fleet) -> None:
    """Per replica from the gateway's page: none listed is none pending."""
    with real_gateway(tokens=TOKENS) as address:
        scrape = DirectScrape(timeout_seconds=2, gateway_urls=[f"http://{address}"])
        readings = scrape.samples(fleet.targets, time.time())
    assert [(s.replica, s.pending_prefill_tokens) for s in readings.samples] == [
        ("sim-0", 1200),
        ("sim-1", 0),
    ]


def test_direct_scrape_sums_the_gateways_pending_requests() -> None:
    with real_gateway(WAITING) as address:
        up = f"http://{address}"
        down = f"http://127.0.0.1:{free_port()}"
        scrape = DirectScrape(timeout_seconds=2, gateway_urls=[up, up, down])
        assert scrape.gateway_pending("b", "m", time.time()) == 14
        assert scrape.gateway_pending("b", "other", time.time()) is None
        assert DirectScrape(gateway_urls=[down]).gateway_pending("b", "m", 0.0) is None
        assert DirectScrape().gateway_pending("b", "m", 0.0) is None


def test_direct_scrape_reads_a_gateway_once_per_round_of_periods(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every LLMDeployment asks within a few seconds: one GET serves them all, and an
    unreachable gateway is tried (and reported) once, not once per LLMDeployment."""
    gets = []

    def page() -> str:
        gets.append(1)
        return metrics_of(gateway)

    with real_gateway(WAITING) as gateway, serve_page(page) as address:
        down = f"http://127.0.0.1:{free_port()}"
        scrape = DirectScrape(timeout_seconds=2, gateway_urls=[f"http://{address}", down])
        assert [scrape.gateway_pending("b", "m", t) for t in (100.0, 101.0, 104.9)] == [7] * 3
        assert scrape.gateway_pending("a", "m", 102.0) == 3
        assert len(gets) == 1
        assert len([r for r in caplog.records if down in r.getMessage()]) == 1
        assert scrape.gateway_pending("b", "m", 105.0) == 7  # the next round reads again
        assert len(gets) == 2
        assert len([r for r in caplog.records if down in r.getMessage()]) == 2


# --- a real Prometheus -----------------------------------------------------------------


def prometheus_binary() -> str:
    """Debian's prometheus, which ``make tools`` installs (never installed here)."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("no prometheus on PATH: run `make tools`")
    return binary


def scrape_config(fleet: Fleet, gateway: str) -> dict[str, Any]:
    """Static targets carrying the pod's name and namespace as the Kubernetes SD would,
    and the gateway at ``gateway`` (host:port)."""
    static = [
        {
            "targets": [urllib.parse.urlsplit(t.url).netloc],
            "labels": {"__meta_pod_name": t.pod, "__meta_namespace": t.namespace},
        }
        for t in fleet.targets
    ]
    relabel = [
        {"source_labels": ["__meta_pod_name"], "target_label": "pod"},
        {"source_labels": ["__meta_namespace"], "target_label": "namespace"},
    ]
    job = {
        "job_name": "engines",
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "static_configs": static,
        "relabel_configs": relabel,
    }
    gateways = {
        **job,
        "job_name": "gateway",
        "static_configs": [
            {"targets": [gateway], "labels": {"__meta_pod_name": "gw", "__meta_namespace": "gw"}}
        ],
    }
    return {"global": {"scrape_interval": "1s"}, "scrape_configs": [job, gateways]}


def query(url: str, promql: str) -> list[Any]:
    with urllib.request.urlopen(
        f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}), timeout=2
    ) as response:
        result: list[Any] = json.load(response)["data"]["result"]
        return result


def wait_scraped(proc: subprocess.Popen[bytes], url: str, log: Path, fleet: Fleet) -> None:
    """Until every target has an ``up`` series, each engine's KV series is in and the
    gateway's pending prefill tokens are."""
    end = time.monotonic() + 30
    while time.monotonic() < end:
        if proc.poll() is not None:
            pytest.fail(f"prometheus exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            ups = query(url, 'up{job="engines"}')
            kv = query(url, "vllm:kv_cache_usage_perc")
            tokens = query(url, "llmfleet_gateway_pending_prefill_tokens")
        except OSError:
            ups, kv, tokens = [], [], []
        if len(ups) == len(fleet.targets) and len(kv) == len(fleet.targets) - 1 and tokens:
            return
        time.sleep(0.3)
    pytest.fail(f"prometheus did not scrape every target in 30s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def gateway() -> Iterator[str]:
    """The real gateway with 1200 prompt tokens pending on sim-0's pod: host:port."""
    with real_gateway(tokens=TOKENS) as address:
        yield address


def test_prometheus_source_matches_direct_scrape_then_reports_prometheus_gone(
    fleet: Fleet, gateway: str, tmp_path: Path
) -> None:
    binary = prometheus_binary()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(scrape_config(fleet, gateway)))
    log = tmp_path / "prometheus.log"
    cmd = [binary, f"--config.file={tmp_path / 'prometheus.yml'}"]
    cmd += [f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_scraped(proc, url, log, fleet)
        with PrometheusSource(url, staleness_seconds=10, timeout_seconds=2) as source:
            through_prometheus = loaded_readings(source, fleet, 20)
            direct = DirectScrape(gateway_urls=[f"http://{gateway}"])
            directly = direct.samples(fleet.targets, time.time())
            assert [s.replica for s in through_prometheus.samples] == ["sim-0", "sim-1"]
            assert [s.pending_prefill_tokens for s in through_prometheus.samples] == [1200, 0]
            for theirs, ours in zip(through_prometheus.samples, directly.samples, strict=True):
                assert (theirs.running, theirs.waiting) == (ours.running, ours.waiting)
                assert theirs.pending_prefill_tokens == ours.pending_prefill_tokens
                assert theirs.running == MAX_NUM_SEQS
                assert theirs.kv_cache_usage == pytest.approx(ours.kv_cache_usage, abs=0.02)
                assert time.time() - theirs.time < 10
            assert source.gateway_pending(NAMESPACE, "m", time.time()) is None  # no gateway
            [miss] = through_prometheus.missing
            assert (miss.replica, miss.reason) == ("dead", MissReason.UNREACHABLE)
            assert "last scrape" in miss.detail

            proc.terminate()
            proc.wait(timeout=30)
            started = time.monotonic()
            gone = source.samples(fleet.targets, time.time())
            assert time.monotonic() - started < 5
            assert gone.samples == ()
            assert [m.replica for m in gone.missing] == [t.replica for t in fleet.targets]
            assert {m.reason for m in gone.missing} == {MissReason.SOURCE_UNREACHABLE}
            assert source.gateway_pending(NAMESPACE, "m", time.time()) is None
            assert all(url in m.detail for m in gone.missing)
    finally:
        stop(proc)


def test_messages_never_show_credentials_in_the_prometheus_url() -> None:
    from llmfleet_operator.metrics import redacted

    assert redacted("https://user:s3cret@prom.example:9443/api?token=abc") == (
        "https://prom.example:9443/api"
    )
    assert redacted("http://127.0.0.1:19090") == "http://127.0.0.1:19090"
    assert redacted("http://u:p@prom:99999/") == "http://prom:99999/"  # bad port: no raise
    assert redacted("http://[::1/") == "an unparseable URL"
    with PrometheusSource(f"http://user:s3cret@127.0.0.1:{free_port()}/?token=abc") as source:
        [miss] = source.samples([TARGET], time.time()).missing
    assert miss.reason is MissReason.SOURCE_UNREACHABLE
    assert "s3cret" not in miss.detail
    assert "abc" not in miss.detail


def test_a_port_that_does_not_speak_http_is_a_miss_not_an_exception() -> None:
    import socketserver
    import threading

    class Garbage(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.recv(1024)
            self.request.sendall(b"SSH-2.0-not-http\r\n\r\n")

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Garbage) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            target = Target("odd", url, "odd", NAMESPACE)
            [miss] = DirectScrape(timeout_seconds=2).samples([target], time.time()).missing
            assert miss.reason is MissReason.UNREACHABLE
            assert DirectScrape(gateway_urls=[url]).gateway_pending("b", "m", 0.0) is None
        finally:
            server.shutdown()


def test_one_query_asks_for_every_pod_with_names_escaped() -> None:
    from llmfleet_operator.metrics.prometheus import pods_query

    targets = [
        Target("a", "http://10.0.0.1:8000", "llama.v2-0", NAMESPACE),
        Target("b", "http://10.0.0.2:8000", "llama.v2-1", NAMESPACE),
    ]
    query = pods_query(targets, 30)
    assert r'pod=~"llama\\.v2\\-0|llama\\.v2\\-1"' in query
    assert r'namespace=~"llmfleet\\-test"' in query
    assert query.endswith("[30s]")
