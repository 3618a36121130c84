"""Soak: steady ingest plus query load for a long while (``make soak``: ``--soak-minutes``,
default 10; a short smoke run in CI mode), then a report of lag and RSS over time (CSV, an
SVG plot and a summary under var/reliability/), the errors (none allowed) and the final
equality of the view with its log."""

from __future__ import annotations

import csv
import random
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import pytest
from load_support import LoadWriter, ReaderReport, run_readers, seeded_server
from reliability_support import compare_with_log
from run_mode import Figures, Mode

from tests.support.kafka import Topics, high_watermarks
from tests.support.processes import REPO

pytestmark = pytest.mark.integration

VIEW = "soak"
WRITE_RATE = 2000
READERS = 2


@dataclass(frozen=True, slots=True)
class Sample:
    seconds: float
    lag: int | None
    applied: int
    rss_mib: float | None
    state: str
    ready: int


def plot_svg(samples: list[Sample], title: str) -> str:
    """Lag and RSS over time as a self-contained SVG (two stacked charts)."""
    width, height, left, top, panel = 900, 520, 80, 40, 190

    def chart(values: list[float], y0: int, label: str, colour: str) -> str:
        xs = [s.seconds for s in samples]
        x_max = max(xs) or 1.0
        v_max = max(values) or 1.0
        points = " ".join(
            f"{left + (x / x_max) * (width - left - 20):.1f},{y0 + panel - (v / v_max) * panel:.1f}"
            for x, v in zip(xs, values, strict=True)
        )
        return (
            f'<text x="10" y="{y0 + 12}" font-size="12">{label}</text>'
            f'<text x="{left - 6}" y="{y0 + 4}" font-size="10" text-anchor="end">{v_max:,.0f}</text>'
            f'<text x="{left - 6}" y="{y0 + panel}" font-size="10" text-anchor="end">0</text>'
            f'<line x1="{left}" y1="{y0 + panel}" x2="{width - 20}" y2="{y0 + panel}" stroke="#999"/>'
            f'<line x1="{left}" y1="{y0}" x2="{left}" y2="{y0 + panel}" stroke="#999"/>'
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{points}"/>'
            f'<text x="{width - 20}" y="{y0 + panel + 14}" font-size="10" text-anchor="end">'
            f"{x_max:,.0f} s</text>"
        )

    lag = [float(s.lag or 0) for s in samples]
    rss = [float(s.rss_mib or 0) for s in samples]
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>'
        f'<text x="{width / 2}" y="22" font-size="14" text-anchor="middle">{title}</text>'
        + chart(lag, top, "lag (records)", "#c0392b")
        + chart(rss, top + panel + 50, "server RSS (MiB)", "#2c7fb8")
        + "</svg>\n"
    )


def write_report(
    directory: Path, samples: list[Sample], summary: dict[str, object], title: str
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "samples.csv").open("w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=list(asdict(samples[0])))
        out.writeheader()
        out.writerows(asdict(s) for s in samples)
    (directory / "soak.svg").write_text(plot_svg(samples, title), encoding="utf-8")
    lines = [f"# {title}", ""] + [f"- {k}: {v}" for k, v in summary.items()]
    (directory / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.timeout(900)
def test_steady_ingest_and_queries_for_minutes(
    topics: Topics, shared_bootstrap: str, tmp_path: Path, mode: Mode, figures: Figures
) -> None:
    """Steady ingest plus query load for the whole soak gives no error, no torn read and no readiness loss, and the view ends equal to the log."""
    topic, config, server = seeded_server(topics, shared_bootstrap, tmp_path, VIEW)
    seed = random.randrange(1 << 30)
    print(f"random seed: {seed}")  # shown with a failure, to replay it
    writer = LoadWriter(shared_bootstrap, topic, seed, WRITE_RATE)
    samples: list[Sample] = []
    sample_errors: list[str] = []
    reports: list[ReaderReport] = []
    stop = threading.Event()
    try:
        server.wait_ready()
        writer.on.set()
        readers = threading.Thread(
            target=lambda: reports.append(
                run_readers(server.url, VIEW, mode.soak_seconds, READERS, stop)
            ),
            daemon=True,
        )
        readers.start()
        interval = max(1.0, mode.soak_seconds / 300)
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < mode.soak_seconds:
            try:
                info = server.view_info(VIEW)
                ready = server.http.get("/readyz").status_code
            except (httpx.HTTPError, AssertionError) as exc:
                sample_errors.append(f"{elapsed:.0f}s: {exc}")
            else:
                rss = server.rss_bytes()
                samples.append(
                    Sample(
                        round(elapsed, 1),
                        info["lag"],
                        info["records_applied"],
                        None if rss is None else round(rss / 2**20, 1),
                        info["state"],
                        ready,
                    )
                )
            time.sleep(interval)
        stop.set()
        readers.join(180)
        writer.close()
        server.wait_caught_up(VIEW, high_watermarks(topic, shared_bootstrap), timeout=300)
        info = server.view_info(VIEW)
        rss = server.rss_bytes()
        samples.append(
            Sample(
                round(time.monotonic() - started, 1),
                info["lag"],
                info["records_applied"],
                None if rss is None else round(rss / 2**20, 1),
                info["state"],
                server.http.get("/readyz").status_code,
            )
        )
    finally:
        stop.set()
        writer.done.set()
        code = server.close()
    assert code in (0, -15), server.output()[-3000:]

    report = reports[0] if reports else ReaderReport(errors=["the readers did not finish"])
    misplaced = writer.misplaced(report.seen)
    not_ready = [s for s in samples if s.ready != 200 or s.state not in ("ready",)]
    log_records, _, diffs, status = compare_with_log(config, VIEW, topic, shared_bootstrap)
    rss_values = [s.rss_mib for s in samples if s.rss_mib is not None]
    lags = [s.lag for s in samples if s.lag is not None]
    summary: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "minutes": round(mode.soak_seconds / 60, 2),
        "write rate (records/s, target)": WRITE_RATE,
        "records written": writer.written,
        "records in the log": len(log_records),
        "read requests": report.requests,
        "entities checked": len(report.seen),
        "errors": len(report.errors) + len(sample_errors),
        "torn reads": len(report.torn) + len(misplaced),
        "index answers not matching": len(report.wrong_index),
        "samples not ready": len(not_ready),
        "lag max / median (records)": f"{max(lags, default=0)} / {sorted(lags)[len(lags) // 2] if lags else 0}",
        "RSS first / max / last (MiB)": (
            f"{rss_values[0]} / {max(rss_values)} / {rss_values[-1]}" if rss_values else "n/a"
        ),
        "mismatches": len(diffs),
    }
    directory = REPO / "var" / "reliability" / f"soak-{mode.name}"
    write_report(
        directory, samples, summary, f"statestore soak ({mode.name}, {summary['minutes']} min)"
    )
    figures.add("soak", report=str(directory), **{k.split(" (")[0]: v for k, v in summary.items()})
    assert report.errors == [] and sample_errors == [], (report.errors + sample_errors)[:10]
    assert report.torn == [] and misplaced == [], (report.torn + misplaced)[:10]
    assert report.wrong_index == [], report.wrong_index[:10]
    assert not_ready == [], not_ready[:5]
    assert diffs == [], "\n".join(diffs)
    assert status.records_applied == len(log_records)
    assert "Traceback" not in server.output()
