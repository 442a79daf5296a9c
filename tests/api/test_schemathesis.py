"""Schemathesis runs every operation of the OpenAPI document against a real server, with
`--checks all` and every phase (examples, coverage, fuzzing, and the stateful phase that
follows the document's OpenAPI links: create a reservation / rule / location / channel,
then read, change, release, commit or delete it).

The server is the one `availability serve` runs (ServedApp under uvicorn, background
services included) on a free port, in a thread with its own event loop, over the session's
Redis (a unique key prefix) and a SQLite store in a temporary directory. Schemathesis runs
as its CLI (`st run`, the command of docs/api.md "Contract") with a fixed seed, so a failure
reproduces. tests/api/schemathesis.toml lists, with reasons, the two places JSON Schema
cannot state what the server checks.

Examples per operation and phase: FAST_EXAMPLES in the default suite (about 1,300 requests,
a minute or two under load), THOROUGH_EXAMPLES with `-m slow`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("schemathesis")

from tests.api.served import KEY, served  # noqa: E402, F401 - the module's server fixture

FAST_EXAMPLES = 10
THOROUGH_EXAMPLES = 100
SEED = 18
CONFIG = Path(__file__).with_name("schemathesis.toml")


def run_schemathesis(base: str, max_examples: int, workdir: Path) -> tuple[int, int, str]:
    """(test cases generated, failures, output) of `st run --checks all` against `base`."""
    st = shutil.which("st", path=os.path.dirname(sys.executable)) or shutil.which("st")
    if st is None:
        pytest.skip("the schemathesis CLI (st) is not installed")
    command = [
        st,
        "--config-file",
        str(CONFIG),
        "run",
        f"{base}/schema/openapi.json",
        "-H",
        f"Authorization: Bearer {KEY}",
        "--checks",
        "all",
        "--max-examples",
        str(max_examples),
        "--seed",
        str(SEED),
        "--generation-deterministic",
        "--no-color",
    ]
    # In a directory of its own: st keeps a cache (.schemathesis/) where it runs.
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False, cwd=workdir)
    output = done.stdout + done.stderr
    generated = re.search(r"(\d+) generated", output)
    failures = re.search(r"(\d+) failures?", output.rsplit("SUMMARY", 1)[-1])
    assert generated, output[-4000:]
    return int(generated.group(1)), int(failures.group(1)) if failures else 0, output if done.returncode else ""


def _check(base: str, max_examples: int, workdir: Path) -> None:
    generated, failures, output = run_schemathesis(base, max_examples, workdir)
    print(f"schemathesis --checks all, {max_examples} examples per operation: {generated} test cases, {failures} failures")
    assert generated > 30 * max_examples
    assert failures == 0 and not output, output[-20000:]


def test_every_operation_answers_as_documented_under_all_checks(served, tmp_path):
    _check(served, FAST_EXAMPLES, tmp_path)


@pytest.mark.slow
def test_every_operation_answers_as_documented_under_all_checks_thoroughly(served, tmp_path):
    _check(served, THOROUGH_EXAMPLES, tmp_path)
