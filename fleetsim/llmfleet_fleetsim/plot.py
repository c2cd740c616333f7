"""The replay as a picture: load, replicas and TTFT over time (``llmfleet simulate --plot``).

Called by :mod:`.cli` only when ``--plot`` is given, and by the bench if it wants one
per run. matplotlib is imported here, lazily, with the Agg backend (no display): install
the ``plot`` extra.
"""

from __future__ import annotations

from pathlib import Path

from llmfleet_fleetsim.report import Report
from llmfleet_fleetsim.slo import percentile

MINUTE = 60.0


def per_minute(report: Report) -> tuple[list[float], list[float], list[float], list[float]]:
    """Minute starts, arrivals per second, and TTFT p50 and p99 of requests arriving then."""
    by_minute: dict[int, list[float]] = {}
    for arrival, ttft in report.ttfts:
        by_minute.setdefault(int(arrival // MINUTE), []).append(ttft)
    minutes = sorted(by_minute)
    starts = [m * MINUTE / 60 for m in minutes]
    rates = [len(by_minute[m]) / MINUTE for m in minutes]
    p50 = [percentile(by_minute[m], 0.5) or 0.0 for m in minutes]
    p99 = [percentile(by_minute[m], 0.99) or 0.0 for m in minutes]
    return starts, rates, p50, p99


def plot(report: Report, path: Path) -> None:
    """Write a PNG with three panels sharing the time axis (minutes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = report.settings
    figure, (load, replicas, latency) = plt.subplots(3, 1, sharex=True, figsize=(10, 8))
    times = [p.time / 60 for p in report.timeline]
    load.plot(times, [p.in_flight for p in report.timeline], label="requests in flight")
    load.plot(times, [p.gateway_pending for p in report.timeline], label="queued at the gateway")
    starts, rates, p50, p99 = per_minute(report)
    rate_axis = load.twinx()
    rate_axis.step(starts, rates, where="post", color="grey", alpha=0.6, label="arrivals/s")
    rate_axis.set_ylabel("arrivals per second")
    load.set_ylabel("requests")
    load.legend(loc="upper left")
    replicas.step(times, [p.total for p in report.timeline], where="post", label="total")
    replicas.step(times, [p.ready for p in report.timeline], where="post", label="ready")
    replicas.set_ylabel("replicas")
    replicas.legend(loc="upper left")
    latency.plot(starts, p50, label="TTFT p50")
    latency.plot(starts, p99, label="TTFT p99")
    latency.axhline(s.slo_ttft_s, color="red", linestyle="--", label="SLO")
    latency.set_yscale("log")
    latency.set_ylabel("seconds")
    latency.set_xlabel("minutes")
    latency.legend(loc="upper left")
    figure.suptitle(
        f"{s.policy} on {s.trace} x{s.speed:g}: attainment {report.attainment:.1%},"
        f" {report.gpu_hours:.1f} GPU-hours"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
