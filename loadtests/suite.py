"""Run every benchmark, one after the other, and write what they measured:

    python -m loadtests.suite            # full sizes (about 21 minutes on 2 quiet cores)
    python -m loadtests.suite --quick    # small sizes (about 3-4 minutes)
    python -m loadtests.suite --only ledger,memory
    python -m loadtests.suite --only orders      # opt-in: the flash sale into Tryton (long)
    python -m loadtests.suite --only ledger,ingest,reservations --label apply   # -> results/<date>-apply.*

Writes `loadtests/results/<date>.json` (every benchmark's own JSON, plus the machine),
`loadtests/results/<date>.md` (the table README's performance section is copied from) and
PNG charts under `loadtests/results/<date>/` (with matplotlib installed:
`pip install -e '.[bench]'`). Each benchmark measures its peer in its own run, so every
ratio compares two numbers taken minutes apart on the same machine. The same-work apply
ceiling (`loadtests.ceilings`) is measured once, first, on one embedded Redis that the
ledger and ingest benchmarks then run against too, and both are handed that same ceiling
(`--ceiling-json`): one ceiling per run, not one per benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "loadtests" / "results"


@dataclass(frozen=True)
class Bench:
    name: str
    module: str
    full: tuple[str, ...] = ()
    quick: tuple[str, ...] = ("--quick",)
    timeout: int = 1800
    #: compares against the suite's one apply ceiling (and runs on the Redis it was measured on)
    uses_ceiling: bool = False
    #: long (a real ERP in the loop): runs only when named in --only
    opt_in: bool = False


CEILING = "ceiling"
BENCHES = (
    Bench(CEILING, "loadtests.ceilings"),
    Bench("ledger", "loadtests.bench_ledger", uses_ceiling=True),
    Bench("ingest", "loadtests.bench_ingest", uses_ceiling=True),
    Bench("api", "loadtests.bench_api"),
    Bench("reservations", "loadtests.bench_reservations"),
    Bench("shopify", "loadtests.bench_shopify"),
    Bench("rule_change", "loadtests.bench_rule_change"),
    Bench("backtest", "loadtests.bench_backtest"),
    Bench("resync", "loadtests.bench_resync"),
    Bench("memory", "loadtests.bench_memory"),
    Bench("scaling", "loadtests.bench_scaling"),
    # a flash sale into a real Tryton: an hour or more at full size on a shared machine
    Bench("orders", "loadtests.bench_orders", quick=("--quick",), timeout=7200, opt_in=True),
    # month-end posting of 100,000 balance transactions into Tryton: many minutes, opt-in
    Bench("finance", "loadtests.bench_finance", timeout=3600, opt_in=True),
)


def run_one(bench: Bench, quick: bool, *, extra: tuple[str, ...] = (), env: dict | None = None,
            shown_extra: str = "") -> dict:
    args = bench.quick if quick else bench.full
    command = [sys.executable, "-m", bench.module, *args, *extra]
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=bench.timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    elapsed = round(time.perf_counter() - started, 1)
    shown = f"python -m {bench.module} {' '.join(args)} {shown_extra}".strip()
    shown = " ".join(shown.split())
    if proc.returncode != 0:
        return {"command": shown, "error": f"exit {proc.returncode}", "stderr": proc.stderr[-2000:],
                "seconds": elapsed}
    try:
        result = _last_json(proc.stdout)
    except ValueError as exc:
        return {"command": shown, "error": str(exc), "stdout": proc.stdout[-2000:], "seconds": elapsed}
    return {"command": shown, "seconds": elapsed, "result": result}


def _last_json(text: str) -> dict:
    """The JSON object a benchmark printed (the last top-level one, pretty-printed or not)."""
    start = text.rfind("\n{")
    start = 0 if text.startswith("{") and start < 0 else start + 1
    if start < 0 or not text[start:].strip():
        raise ValueError("no JSON object in the benchmark's output")
    return json.loads(text[start:])


# --- the table -------------------------------------------------------------------------------


def _get(data: dict, *path, default=None):
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return default
        data = data[key]
    return data


def _fmt(value, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and value < 100:
        return f"{value:,.2f}{unit}"
    return f"{value:,.0f}{unit}"


def rows_for(name: str, result: dict) -> list[tuple[str, str, str, str]]:
    """(figure, value, ceiling or peer in the same run, ratio) rows of one benchmark."""
    r = result
    if name == CEILING:
        rates = r.get("events_per_sec", {})
        lua_us = rates.get("server_us_per_call_median")
        return [(f"same-work apply ceiling: apply_event.lua on the mixed workload ({_fmt(r.get('events'))} events, "
                 f"{r.get('repetitions')} repetitions), median", _fmt(rates.get("median"), "/s"),
                 f"Lua alone (server {_fmt(lua_us)} µs per call) {_fmt(1e6 / lua_us if lua_us else None, '/s')}",
                 _fmt(_ratio(rates.get("median"), 1e6 / lua_us if lua_us else None)))]
    if name == "ledger":
        best = max(_get(r, "ledger_sequential", "events_per_sec", default=0),
                   _get(r, "ledger_4_in_flight", "events_per_sec", default=0))
        side = max((r.get("ledger_sequential", {}), r.get("ledger_4_in_flight", {})),
                   key=lambda part: part.get("events_per_sec", 0))
        return [("ledger events applied/s, mixed workload (Python client, redis-py pipelines)",
                 f"{_fmt(best, '/s')} ({_fmt(side.get('client_cpu_us_per_event'), ' µs')} client CPU per event)",
                 _ceiling_text(r), _ratio_text(r))]
    if name == "ingest":
        rows = []
        for mode, label in (("batched", "batched apply: apply_batch.lua per partition group"),
                            ("per_event", "per-event apply: apply_event.lua per event")):
            run = _get(r, "runs", mode, default=None)
            if not run:
                continue
            cpu = _get(run, "consumer", "consumer_cpu_us_per_event")
            batched_ceiling = _get(r, "batched_ceiling", "events_per_sec", "median")
            rows.append((f"ingestion, {label}: events/s applied by one consumer process (streams, FastStream, ack)",
                         f"{_fmt(_get(run, 'consumer', 'events_per_sec'), '/s')} ({_fmt(cpu, ' µs')} consumer CPU per event)",
                         f"{_ceiling_text(r)}; batched ceiling {_fmt(batched_ceiling, '/s')}",
                         _fmt(_get(run, "vs_per_event_ceiling", "ratio_to_ceiling"))))
        if rows and r.get("batched_over_per_event"):
            rows.append(("ingestion: batched over per-event, same run", _fmt(r["batched_over_per_event"]), "aim 2", ""))
        if rows:
            return rows
        cpu = _get(r, "consumer", "consumer_cpu_us_per_event")
        return [("ingestion: events/s applied by one consumer process (streams, FastStream, ack)",
                 f"{_fmt(_get(r, 'consumer', 'events_per_sec'), '/s')} ({_fmt(cpu, ' µs')} consumer CPU per event)",
                 _ceiling_text(r), _ratio_text(r))]
    if name == "reservations":
        return reservation_rows(r)
    if name == "orders":
        flow, ceil = r.get("flow", {}), r.get("ceiling", {})
        lat = flow.get("latency_seconds", {})
        return [(f"flash sale into Tryton: {_fmt(flow.get('orders'))} orders at {_fmt(flow.get('offered_per_sec'), '/s')}, "
                 f"{flow.get('workers')} workers; p50 {_fmt(lat.get('p50'), ' s')}, p99 {_fmt(lat.get('p99'), ' s')}; "
                 f"duplicates {flow.get('duplicates')}, lost {flow.get('lost')}",
                 _fmt(flow.get("posted_per_sec"), " sales/s"),
                 (f"Tryton's own party + batched create + confirm, {ceil.get('workers')} at a time, "
                  f"{ceil.get('batch')} a batch: {_fmt(ceil.get('sales_per_sec'), '/s')}"),
                 _fmt(r.get("ratio_flow_to_ceiling")))]
    if name == "rule_change":
        return [(f"global rule change over {_fmt(r.get('pairs'))} pairs: recompute + diff + mark dirty",
                 _fmt(r.get("recompute_plus_mark_seconds"), " s"),
                 f"bare SCAN+HGETALL of the same keys {_fmt(r.get('bare_read_seconds'), ' s')}; target 60 s",
                 _fmt(r.get("ratio_recompute_to_bare_read")))]
    if name == "backtest":
        bt, ceiling = r.get("backtest", {}), r.get("ceiling_raw_xrange", {})
        return [(f"backtest of {_fmt(bt.get('entries'))} journal entries under a 2-change draft (aim: 1,000,000 in 60 s)",
                 f"{_fmt(bt.get('seconds'), ' s')} ({_fmt(bt.get('entries_per_s'), '/s')})",
                 f"raw XRANGE read of the same entries {_fmt(ceiling.get('entries_per_s'), '/s')}",
                 _fmt(bt.get("of_raw_read_ceiling")))]
    if name == "scaling":
        one, three = r.get("single", {}), r.get("cluster", {})
        return [("scaling: events/s applied on a 3-primary cluster (one client process, Ledger.apply_batch)",
                 f"{_fmt(three.get('ingest_events_per_sec'), '/s')} "
                 f"({_fmt(three.get('ingest_server_cpu_us_per_event_all_shards'), ' µs')} server CPU per event)",
                 f"the same work on 1 node {_fmt(one.get('ingest_events_per_sec'), '/s')}",
                 _fmt(r.get("cluster_to_single_ingest"))),
                ("scaling: lookups/s on a 3-primary cluster (20 SKUs per call)",
                 _fmt(three.get("lookups_per_sec"), "/s"),
                 f"the same work on 1 node {_fmt(one.get('lookups_per_sec'), '/s')}",
                 _fmt(r.get("cluster_to_single_lookups")))]
    if name == "memory":
        return [("Redis bytes per (SKU, location) at rest, realistic profile (aim 200 B; without settled holds/headers "
                 f"{_fmt(r.get('bytes_per_pair_at_rest_without_settled_holds_and_headers'), ' B')}, end of day "
                 f"{_fmt(r.get('bytes_per_pair_end_of_day_without_settled_holds_and_headers'), ' B')})",
                 _fmt(r.get("bytes_per_pair_at_rest"), " B"),
                 f"raw hash, one int per location {_fmt(r.get('raw_hash_bytes_per_pair'), ' B')}",
                 _fmt(_ratio(r.get("bytes_per_pair_at_rest"), r.get("raw_hash_bytes_per_pair")))),
                ("Redis bytes per retained idempotency record (aim 64 B)",
                 _fmt(r.get("bytes_per_retained_idempotency_record"), " B"),
                 f"the 8-byte digest itself; {_fmt(r.get('idempotency_records_retained'))} records",
                 _fmt(_ratio(r.get("bytes_per_retained_idempotency_record"), 8)))]
    if name == "api":
        return api_rows(r)
    if name == "shopify":
        return shopify_rows(r)
    if name == "finance":
        flow, erp = r.get("flow", {}), r.get("erp_ceiling", {})
        return [(f"month-end posting of {_fmt(r.get('transactions'))} balance transactions into Tryton "
                 f"({_fmt(flow.get('entries'))} payout entries, peak {_fmt(flow.get('peak_rss_mb'), ' MB')} RSS)",
                 f"{_fmt(flow.get('seconds'), ' s')} ({_fmt(flow.get('entries_per_s'), ' entries/s')})",
                 f"same work by the peers alone (read every page, Tryton's own create+post at "
                 f"{_fmt(erp.get('entries_per_s'), ' entries/s')}): {_fmt(r.get('same_work_ceiling_seconds'), ' s')}",
                 _fmt(r.get("flow_vs_same_work")))]
    if name == "resync":
        bulk, sample = r.get("bulk", {}), r.get("per_level_sample", {})
        return [(f"Shopify bulk resync of {_fmt(r.get('levels'))} levels ({r.get('plan')} plan, "
                 f"{_fmt(bulk.get('pushed'))} repaired)", _fmt(bulk.get("seconds"), " s"),
                 f"per-level resync, {_fmt(sample.get('levels'))}-level sample extrapolated: "
                 f"{_fmt(r.get('per_level_extrapolated_seconds_for_all_levels'), ' s')}",
                 _fmt(_ratio(bulk.get("seconds"), r.get("per_level_extrapolated_seconds_for_all_levels"))))]
    return []


def _ceiling_text(r: dict) -> str:
    rates = _get(r, "ceiling", "events_per_sec", default={})
    if not isinstance(rates, dict):
        return "n/a"
    return (f"same-work ceiling {_fmt(rates.get('median'), '/s')} (median; min {_fmt(rates.get('min'), '/s')}, "
            f"max {_fmt(rates.get('max'), '/s')}, spread {_fmt(100 * (rates.get('spread') or 0), ' %')})")


def _ratio_text(r: dict) -> str:
    low, high = r.get("ratio_range") or (None, None)
    return f"{_fmt(r.get('ratio_to_ceiling'))} ({_fmt(low)}-{_fmt(high)})"


SQL_LABELS = {"postgres_conditional_update": "PostgreSQL one-statement conditional UPDATE ... INSERT",
              "postgres_select_for_update": "PostgreSQL SELECT ... FOR UPDATE transaction"}


def reservation_rows(r: dict) -> list[tuple[str, str, str, str]]:
    ours = r.get("ledger", {})
    figure = f"contended reservations/s, one hot SKU (oversold {ours.get('oversold')})"
    best = r.get("best_sql_peer")
    if not best:
        skipped = _get(r, "postgres_select_for_update", "skipped")
        return [(figure, _fmt(ours.get("reservations_per_sec"), "/s"), f"skipped: {skipped}", "")]
    rows = []
    # The strongest SQL design first: the claim is against it; the weaker one is shown for reference.
    for key in sorted(SQL_LABELS, key=lambda k: k != best):
        peer = r.get(key, {})
        if "reservations_per_sec" not in peer:
            continue
        label = f"{SQL_LABELS[key]} {_fmt(peer['reservations_per_sec'], '/s')} (oversold {peer.get('oversold')})"
        rows.append((figure if key == best else "... beside the weaker SQL design",
                     _fmt(ours.get("reservations_per_sec"), "/s") if key == best else "",
                     label + (" (best SQL peer)" if key == best else ""), _fmt(r.get(f"ratio_vs_{key}"))))
    return rows


def api_rows(r: dict) -> list[tuple[str, str, str, str]]:
    lookup, constant = r.get("lookup", {}), r.get("constant", {})
    server = lookup.get("server", "uvicorn")
    uvicorn_constant = _find(r.get("uvicorn_constant", {}), "peak_rps")
    variants = r.get("lookup_variants", {})
    rows = []
    if lookup:
        peers = f"{server} constant endpoint (Litestar), same run {_fmt(_find(constant, 'peak_rps'), '/s')}"
        ratios = _fmt(_ratio(_find(lookup, "peak_rps"), _find(constant, "peak_rps")))
        if uvicorn_constant:
            peers += f"; uvicorn constant endpoint {_fmt(uvicorn_constant, '/s')}"
            ratios += f"; {_fmt(_ratio(_find(lookup, 'peak_rps'), uvicorn_constant))}"
        rows.append((f"GET /v1/availability/{{sku}} peak requests/s, {server}, 1 worker", _fmt(_find(lookup, "peak_rps"), "/s"),
                     peers, ratios))
        rows.append(("GET /v1/availability/{sku} p50 / p99 at half peak (aim p99 < 2 ms)",
                     f"{_fmt(_find(lookup, 'p50_ms'), ' ms')} / {_fmt(_find(lookup, 'p99_ms'), ' ms')}",
                     f"constant {_fmt(_find(constant, 'p50_ms'), ' ms')} / {_fmt(_find(constant, 'p99_ms'), ' ms')}",
                     ""))
    two = variants.get(f"{server}_fast_w2", {})
    if two:
        half = two.get("at_half_peak", {})
        rows.append((f"... 2 workers (p50 / p99 at half peak {_fmt(half.get('p50_ms'), ' ms')} / "
                     f"{_fmt(half.get('p99_ms'), ' ms')})", _fmt(two.get("peak_rps"), "/s"),
                     f"1 worker {_fmt(_find(lookup, 'peak_rps'), '/s')}", _fmt(two.get("scaling_vs_w1"))))
    before = variants.get("uvicorn_litestar_w1", {})
    if before and lookup:
        rows.append(("... the same lookup through uvicorn + Litestar (before the fast path)",
                     _fmt(before.get("peak_rps"), "/s"), f"{server} fast path {_fmt(_find(lookup, 'peak_rps'), '/s')}",
                     _fmt(_ratio(_find(lookup, "peak_rps"), before.get("peak_rps")))))
    batch = r.get("batch_100", {})
    if batch:
        rows.append(("POST /v1/availability/batch (100 SKUs) requests/s", _fmt(_find(batch, "peak_rps"), "/s"),
                     "", ""))
    contended = r.get("reservations", {})
    if contended:
        rows.append((f"contended reservations over HTTP, one hot SKU (oversold {_find(contended, 'oversold')})",
                     _fmt(_find(contended, "reservations_per_sec") or _find(contended, "rps"), "/s"), "", ""))
    return rows


def shopify_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """One set of three rows per cost model; the baseline batches 250 per call and paces
    from throttleStatus but has no coalescing window (loadtests/bench_shopify.py)."""

    def fresh(part: dict, q: str) -> str:
        ms = _get(part, "freshness_ms", q)
        return "n/a" if ms is None else f"{ms / 1000:.2f} s"

    rows = []
    for model, run in (r.get("cost_models") or {"documented": r}).items():
        ours, base = run.get("publisher", {}), run.get("baseline", {})
        cost = (f"{model} cost: {_fmt(run.get('mutation_cost'))} + {_fmt(run.get('mutation_entry_cost'))}/entry per call"
                f", bucket {_fmt(run.get('bucket_size'))}, {_fmt(run.get('restore_rate'))}/s"
                + (", assumed: Shopify does not publish a 250-entry mutation's price" if model == "documented"
                   else ", an assumption to test against"))
        rows += [
            (f"Shopify flash sale ({r.get('events')} events, {r.get('plan')} plan, {cost}): API calls",
             f"{_fmt(ours.get('calls'))} ({_fmt(ours.get('events_per_call'))} events per call)",
             f"batched paced client, no window {_fmt(base.get('calls'))}",
             _fmt(_ratio(ours.get("calls"), base.get("calls")))),
            (f"Shopify push freshness p50 / p99 (event to confirmed), {model} cost",
             f"{fresh(ours, 'p50')} / {fresh(ours, 'p99')}",
             f"baseline {fresh(base, 'p50')} / {fresh(base, 'p99')}", ""),
            (f"Shopify push throttled; converged to ATS after the sale, {model} cost",
             f"{_fmt(ours.get('throttled'))}; {ours.get('converged')} in {_fmt(ours.get('converged_after_sale_s'))} s",
             f"baseline {_fmt(base.get('throttled'))}; {base.get('converged')} in {_fmt(base.get('converged_after_sale_s'))} s",
             ""),
        ]
    return rows


def _find(data, key):
    """First value under `key` anywhere in nested dicts (benchmarks nest differently)."""
    if isinstance(data, dict):
        if key in data:
            return data[key]
        for value in data.values():
            found = _find(value, key)
            if found is not None:
                return found
    return None


def _ratio(a, b):
    return round(a / b, 2) if a and b else None


def _load_lines(report: dict) -> list[str]:
    loads = [f"{name} {o['load_average'][0]}-{o['load_average'][1]}"
             for name, o in report["benchmarks"].items() if "load_average" in o]
    return [f"Load average (1 min) before-after each benchmark: {', '.join(loads)}.", ""] if loads else []


def markdown(report: dict) -> str:
    machine = report["machine"]
    lines = [
        f"# Benchmarks {report['date']}",
        "",
        f"Machine: {machine['cpus']} CPUs, Python {machine['python']}, {machine['platform']}. "
        f"Mode: {'quick' if report['quick'] else 'full'}.",
        "",
        *_load_lines(report),
        "| figure | value | ceiling or peer, same run | ratio | command |",
        "|---|---|---|---|---|",
    ]
    for name, outcome in report["benchmarks"].items():
        if "result" not in outcome:
            lines.append(f"| {name} | failed: {outcome.get('error')} | | | `{outcome['command']}` |")
            continue
        for figure, value, peer, ratio in rows_for(name, outcome["result"]):
            lines.append(f"| {figure} | {value} | {peer} | {ratio} | `{outcome['command']}` |")
    return "\n".join(lines) + "\n"


# --- charts ----------------------------------------------------------------------------------


def charts(report: dict, folder: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no charts (pip install -e '.[bench]')", file=sys.stderr)
        return []
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    results = {name: o["result"] for name, o in report["benchmarks"].items() if "result" in o}

    pairs: list[tuple[str, float, float, str]] = []
    if "ledger" in results:
        r = results["ledger"]
        pairs.append(("ledger apply", max(_get(r, "ledger_sequential", "events_per_sec", default=0),
                                         _get(r, "ledger_4_in_flight", "events_per_sec", default=0)),
                      _get(r, "ceiling", "ops_per_sec", default=0), "same-work ceiling"))
    if "ingest" in results:
        r = results["ingest"]
        pairs.append(("ingestion (1 consumer)", _get(r, "consumer", "events_per_sec", default=0),
                      _get(r, "ceiling", "ops_per_sec", default=0), "same-work ceiling"))
    if "api" in results:
        r = results["api"]
        pairs.append(("GET availability", _find(r.get("lookup", {}), "peak_rps") or 0,
                      _find(r.get("constant", {}), "peak_rps") or 0, "constant endpoint"))
    if "reservations" in results:
        r = results["reservations"]
        best = r.get("best_sql_peer") or "postgres_select_for_update"
        peer = _get(r, best, "reservations_per_sec", default=0)
        pairs.append(("hot-SKU reservations", _get(r, "ledger", "reservations_per_sec", default=0), peer,
                      "best SQL (" + best.removeprefix("postgres_").replace("_", " ") + ")"))
    if pairs:
        fig, ax = plt.subplots(figsize=(8, 4))
        labels = [p[0] for p in pairs]
        xs = range(len(pairs))
        ax.bar([x - 0.2 for x in xs], [p[1] for p in pairs], width=0.4, label="availability")
        ax.bar([x + 0.2 for x in xs], [p[2] for p in pairs], width=0.4, label="ceiling / peer (same run)")
        for x, p in zip(xs, pairs):
            ax.annotate(p[3], (x + 0.2, p[2]), ha="center", va="bottom", fontsize=7)
        ax.set_xticks(list(xs), labels, fontsize=8)
        ax.set_ylabel("operations per second")
        ax.set_title("Throughput beside its ceiling or peer")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = folder / "throughput.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)

    latency = _latency_points(results.get("api", {}))
    if latency:
        fig, ax = plt.subplots(figsize=(7, 4))
        for label, points in latency.items():
            ax.plot([p for p, _ in points], [v for _, v in points], marker="o", label=label)
        ax.set_xlabel("percentile")
        ax.set_ylabel("latency (ms)")
        ax.set_yscale("log")
        ax.set_title("GET /v1/availability/{sku} latency at half peak, beside a constant endpoint")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = folder / "latency.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)

    fresh = results.get("shopify", {})
    if fresh:
        series = {}
        for label, key in (("coalesced publisher", "publisher"), ("batched paced client", "baseline")):
            part = fresh.get(key, {})
            values = [(q, (_get(part, "freshness_ms", q) or 0) / 1000) for q in ("p50", "p90", "p99")]
            if any(v for _, v in values):
                series[label] = values
        if series:
            fig, ax = plt.subplots(figsize=(6, 4))
            width = 0.8 / len(series)
            for i, (label, values) in enumerate(series.items()):
                ax.bar([j + i * width for j in range(len(values))], [v for _, v in values], width=width, label=label)
                ax.set_xticks([j + width / 2 for j in range(len(values))], [q for q, _ in values])
            ax.set_ylabel("event to confirmed in Shopify (s)")
            ax.set_title("Shopify freshness in a flash sale")
            ax.legend(fontsize=8)
            fig.tight_layout()
            path = folder / "freshness.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            made.append(path)
    return made


def _latency_points(api: dict) -> dict[str, list[tuple[str, float]]]:
    out = {}
    for label, key in (("availability lookup", "lookup"), ("constant endpoint", "constant")):
        part = api.get(key, {})
        points = [(q, _find(part, f"{q}_ms")) for q in ("p50", "p90", "p99", "p999")]
        points = [(q, v) for q, v in points if v is not None]
        if points:
            out[label] = points
    return out


def run_selected(selected: list[Bench], quick: bool, report: dict, tmp: Path) -> None:
    """Run the benchmarks in order; the ceiling and its users share one embedded Redis and one ceiling."""
    server = None
    ceiling_json = tmp / "ceiling.json"
    sharing = [b for b in selected if b.name == CEILING or b.uses_ceiling]
    try:
        for bench in selected:
            extra: tuple[str, ...] = ()
            env, shown_extra = None, ""
            if bench in sharing:
                if server is None and not os.environ.get("AVAILABILITY_REDIS_URL"):
                    from availability.embedded_redis import EmbeddedRedis

                    server = EmbeddedRedis(tmp / "redis", appendonly=False).start()
                env = {"AVAILABILITY_REDIS_URL": server.url} if server else None
            if bench.name == CEILING:
                extra = ("--json", str(ceiling_json))
            elif bench.uses_ceiling and ceiling_json.exists():
                extra, shown_extra = ("--ceiling-json", str(ceiling_json)), "--ceiling-json <this run's ceiling>"
            print(f"running {bench.name} ...", file=sys.stderr, flush=True)
            load_before = os.getloadavg()[0]
            report["benchmarks"][bench.name] = outcome = run_one(bench, quick, extra=extra, env=env,
                                                                 shown_extra=shown_extra)
            # how busy the shared machine was around this benchmark (1-minute load average)
            outcome["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
            print(f"  {bench.name}: {'ok' if 'result' in outcome else outcome.get('error')} in {outcome['seconds']} s",
                  file=sys.stderr, flush=True)
            if server is not None and bench is sharing[-1]:
                server.stop()
                server = None
    finally:
        if server is not None:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: minutes, not a quarter hour")
    parser.add_argument("--only", help="comma-separated benchmark names: " + ",".join(b.name for b in BENCHES))
    parser.add_argument("--render", metavar="RESULTS_JSON", help="only redo the table and charts of an earlier run")
    parser.add_argument("--label", help="added to the result files' names (<date>-<label>), so partial runs "
                                        "on one day do not overwrite each other")
    args = parser.parse_args()
    if args.render:
        path = Path(args.render)
        report = json.loads(path.read_text())
        path.with_suffix(".md").write_text(markdown(report))
        made = charts(report, path.with_suffix(""))
        print(markdown(report))
        for chart in made:
            print(f"chart: {chart}")
        return
    wanted = set(args.only.split(",")) if args.only else None
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    report = {
        "date": date,
        "quick": args.quick,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "benchmarks": {},
    }
    selected = [b for b in BENCHES if (not wanted and not b.opt_in) or (wanted and b.name in wanted) or (
        wanted and b.name == CEILING and any(x.uses_ceiling and x.name in wanted for x in BENCHES))]
    with tempfile.TemporaryDirectory(prefix="av-suite-") as tmp:
        run_selected(selected, args.quick, report, Path(tmp))
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = ("-quick" if args.quick else "") + (f"-{args.label}" if args.label else "")
    (RESULTS / f"{date}{suffix}.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (RESULTS / f"{date}{suffix}.md").write_text(table)
    made = charts(report, RESULTS / f"{date}{suffix}")
    print(table)
    for path in made:
        print(f"chart: {path.relative_to(REPO)}")
    failed = [name for name, o in report["benchmarks"].items() if "result" not in o]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
