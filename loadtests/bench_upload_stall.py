"""Benchmark: lookup latency beside a 10 MB upload, against the same server without one. Prints JSON.

    python -m loadtests.bench_upload_stall [--quick] [--rate 200] [--seconds 10] [--mb 10]
                                           [--compare-tree /path/to/other/checkout] [--out FILE]

Issue 10 measured an 11 MB `/v1/ingest/pos` array of junk taking 5.7 s to refuse while
lookups on the same process stalled 5.6 s (3.5 ms normally): the upload was parsed on the
event loop that serves lookups. This measures what a lookup costs beside an upload now.

One run, one server (`python -m availability.cli serve`, as operators start it, with its
background services), an embedded Redis, 2000 seeded SKUs; then, each for --seconds:

1. `baseline`: open-loop `GET /v1/availability/{sku}` at --rate per second, nothing else.
2. `junk_upload`: the same lookups while another process POSTs a --mb MB JSON array of junk
   documents to `/v1/ingest/pos` back to back (every document is refused: 422).
3. `valid_upload`: the same while it POSTs a --mb MB array of valid till transactions
   (202; the events go to the stream and the consumer in the same server applies them).

Open loop: latency counts from each request's scheduled start, so a stall is charged to
every lookup it delays. The uploads run in a separate process so the load generator's own
timing is not disturbed by the upload client. With --compare-tree the same phases run
against a second server started from another checkout's code (PYTHONPATH), in the same
run, for a before/after on the same machine at the same moment.

Figures are for this machine (shared CPUs: see `load_average`); the ratio of the upload
phases' p99 to the baseline's is what carries.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from availability.embedded_redis import EmbeddedRedis, free_port
from loadtests.api_loadgen import open_loop
from loadtests.bench_api import HOST, KEY, lookup_factory, seed, start_server, stop_server, wait_ready

SKUS = 2000

UPLOADER = r"""
import json, sys, time, httpx
url, path, seconds, key = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
body = open(path, "rb").read()
headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
out = []
deadline = time.monotonic() + seconds
with httpx.Client(timeout=120) as client:
    while not out or time.monotonic() < deadline:
        started = time.perf_counter()
        status = client.post(url, content=body, headers=headers).status_code
        out.append([status, round(time.perf_counter() - started, 3)])
print(json.dumps(out))
"""


def junk_body(size: int) -> bytes:
    """A JSON array of documents that are not till transactions at all (the issue's 11 MB)."""
    doc = '{"junk": "%s", "n": %d, "lines": [{"sku": 42, "quantity": "many"}]}'
    parts, total, n = [], 2, 0
    while total < size:
        piece = doc % ("x" * 80, n)
        parts.append(piece)
        total += len(piece) + 1
        n += 1
    return ("[" + ",".join(parts) + "]").encode()


def valid_body(size: int) -> bytes:
    """A JSON array of real till sales (an offline till replaying its journal)."""
    run = uuid.uuid4().hex[:6]
    parts, total, n = [], 2, 0
    while total < size:
        txn = {
            "till_id": "T01",
            "store": "STORE-1",
            "transaction_id": f"{run}-{n:08d}",
            "kind": "sale",
            "recorded_at": "2026-11-20T10:15:02Z",
            "lines": [{"sku": f"SKU-{n % SKUS:06d}", "quantity": 1}],
        }
        piece = json.dumps(txn, separators=(",", ":"))
        parts.append(piece)
        total += len(piece) + 1
        n += 1
    return ("[" + ",".join(parts) + "]").encode()


async def phase(port: int, rate: float, seconds: float, upload: Path | None, base: str) -> dict:
    make = lookup_factory(SKUS)
    uploader = None
    if upload is not None:
        uploader = subprocess.Popen(
            [sys.executable, "-c", UPLOADER, f"{base}/v1/ingest/pos", str(upload), str(seconds), KEY],
            stdout=subprocess.PIPE,
        )
        await asyncio.sleep(0.3)  # let the first upload start arriving
    stats = await open_loop(HOST, port, make, rate=rate, seconds=seconds)
    summary = stats.summary()
    out = {k: summary[k] for k in ("requests", "requests_per_sec", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "statuses") if k in summary}
    if uploader is not None:
        stdout, _ = await asyncio.to_thread(uploader.communicate)
        uploads = json.loads(stdout or b"[]")
        out["uploads"] = {
            "count": len(uploads),
            "statuses": sorted({status for status, _ in uploads}),
            "seconds_each": [secs for _, secs in uploads],
        }
    return out


async def measure(
    tree: str | None, args: argparse.Namespace, bodies: dict[str, Path], work: str, redis_url: str, consumer: bool
) -> dict:
    prefix = f"bu{uuid.uuid4().hex[:6]}"
    port = free_port()
    base = f"http://{HOST}:{port}"
    data_dir = Path(work) / (prefix)
    data_dir.mkdir()
    saved = {name: os.environ.get(name) for name in ("PYTHONPATH", "AVAILABILITY_SERVICES")}
    if tree:
        os.environ["PYTHONPATH"] = tree + (os.pathsep + saved["PYTHONPATH"] if saved["PYTHONPATH"] else "")
    if not consumer:  # an API node: the stream consumer runs elsewhere
        os.environ["AVAILABILITY_SERVICES"] = '["expiry", "rules-dirty"]'
    cwd = os.getcwd()
    try:
        if tree:  # `python -m` puts the working directory first on sys.path
            os.chdir(tree)
        proc = start_server(redis_url, port, prefix, str(data_dir), 1)
    finally:
        os.chdir(cwd)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    try:
        await wait_ready(base, proc)
        await seed(base, redis_url, prefix, SKUS)
        await open_loop(HOST, port, lookup_factory(SKUS), rate=args.rate, seconds=1.0)  # warm-up
        # One upload before measuring: the server's upload worker process is long-lived, so
        # its start (spawn, imports) is not what a lookup beside an upload meets.
        await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", UPLOADER, f"{base}/v1/ingest/pos", str(bodies["junk"]), "0", KEY],
            stdout=subprocess.DEVNULL,
        )
        result = {"code": tree or "this checkout", "consumer_in_server": consumer}
        result["baseline"] = await phase(port, args.rate, args.seconds, None, base)
        result["junk_upload"] = await phase(port, args.rate, args.seconds, bodies["junk"], base)
        result["valid_upload"] = await phase(port, args.rate, args.seconds, bodies["valid"], base)
        base_p99 = result["baseline"]["p99_ms"] or 0.001
        result["p99_ratio_to_baseline"] = {
            name: round(result[name]["p99_ms"] / base_p99, 2) for name in ("junk_upload", "valid_upload")
        }
        return result
    finally:
        stop_server(proc)


async def run(args: argparse.Namespace) -> dict:
    if args.quick:
        args.seconds = min(args.seconds, 5.0)
    work = tempfile.mkdtemp(prefix="bench-upload-")
    embedded = EmbeddedRedis(Path(work) / "redis", appendonly=False).start()
    started = time.perf_counter()
    size = int(args.mb * 1024 * 1024)
    bodies = {"junk": Path(work) / "junk.json", "valid": Path(work) / "valid.json"}
    bodies["junk"].write_bytes(junk_body(size))
    bodies["valid"].write_bytes(valid_body(size))
    try:
        result: dict = {
            "benchmark": "upload_stall",
            "quick": args.quick,
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            },
            "lookup_rate_per_sec": args.rate,
            "seconds_per_phase": args.seconds,
            "upload_bytes": {name: path.stat().st_size for name, path in bodies.items()},
            "runs": [],
        }
        for tree in (None, args.compare_tree) if args.compare_tree else (None,):
            for consumer in (False, True):
                result["runs"].append(await measure(tree, args, bodies, work, embedded.url, consumer))
        result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        result["seconds"] = round(time.perf_counter() - started, 1)
        return result
    finally:
        embedded.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 s phases")
    parser.add_argument("--rate", type=float, default=200.0, help="lookups per second (open loop)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--mb", type=float, default=10.0, help="size of each upload in MiB")
    parser.add_argument("--compare-tree", help="also measure a server run from this checkout's code (e.g. main)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
