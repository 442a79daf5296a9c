"""Long CLI jobs report progress: off a terminal (here: a pipe), JSON log lines with
done/total, rate and ETA, each carrying the job's correlation id field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _cli(tmp_path, redis_url, key_prefix, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AVAILABILITY_")}
    env.update(
        PYTHONPATH=str(REPO),
        AVAILABILITY_REDIS_URL=redis_url,
        AVAILABILITY_KEY_PREFIX=key_prefix,
        AVAILABILITY_DATA_DIR=str(tmp_path / "var"),
        AVAILABILITY_LOG_FORMAT="json",
        AVAILABILITY_PROGRESS_EVERY_S="0",  # a line per update, so a small file shows several
    )
    return subprocess.run(
        [sys.executable, "-m", "availability.cli", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )


def _progress_lines(stderr: str) -> list[dict]:
    docs = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [d for d in docs if d["logger"] == "availability.progress"]


def _events(n: int) -> str:
    return "".join(
        json.dumps({"event_id": f"p{i}", "type": "receipt", "source": "wms", "occurred_at": "2026-11-20T10:00:00Z",
                    "sku": f"SKU{i % 7}", "location": "DC1", "quantity": 1}) + "\n"
        for i in range(n)
    )


def test_apply_logs_bytes_done_of_total_with_rate_and_eta(tmp_path, redis_url, key_prefix):
    events = tmp_path / "events.jsonl"
    events.write_text(_events(300))
    size = events.stat().st_size
    done = _cli(tmp_path, redis_url, key_prefix, "apply", "--batch", "100", str(events))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"applied": {"applied": 300}, "rejected": 0}
    lines = _progress_lines(done.stderr)
    messages = [d["message"] for d in lines]
    # one per batch of 100, one at the end of input, and the closing line
    assert len(messages) == 5, messages
    assert messages[0].startswith("apply: ") and f"/{size} bytes (" in messages[0] and "/s, ETA " in messages[0]
    assert messages[-1].startswith(f"apply: {size}/{size} bytes") and messages[-1].endswith("(done)")
    firsts = [int(m.split(": ")[1].split("/")[0]) for m in messages]
    assert firsts == sorted(firsts) and 0 < firsts[0] < size
    # the job's own correlation id, the same on every line of the run
    assert len({d["correlation_id"] for d in lines}) == 1 and lines[0]["correlation_id"]


def test_ingest_file_logs_progress_to_the_end_of_the_file(tmp_path, redis_url, key_prefix):
    events = tmp_path / "events.jsonl"
    events.write_text(_events(50))
    size = events.stat().st_size
    done = _cli(tmp_path, redis_url, key_prefix, "ingest", "file", "--format", "events", str(events))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["events"] == 50
    last = _progress_lines(done.stderr)[-1]["message"]
    assert last.startswith(f"ingest events.jsonl: {size}/{size} bytes") and last.endswith("(done)"), last
