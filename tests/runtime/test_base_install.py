"""The base install (`pip install -e .`, no test extras) has everything the package
imports: a module that needs a package only the test extras bring (greenlet came in
through locust) fails here, not on a new user's first `availability serve`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

IMPORT_EVERYTHING = r"""
import importlib, pkgutil, sys
import availability, adapters
failed = []
count = 0
for pkg in (availability, adapters):
    for module in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        count += 1
        try:
            importlib.import_module(module.name)
        except Exception as exc:
            failed.append(f"{module.name}: {type(exc).__name__}: {exc}")
# The SQLAlchemy asyncio engine imports greenlet only when an engine starts: start one.
import asyncio
from sqlalchemy.ext.asyncio import create_async_engine
async def touch():
    engine = create_async_engine("sqlite+aiosqlite:///:memory:")
    async with engine.connect():
        pass
    await engine.dispose()
asyncio.run(touch())
from availability.embedded_redis import find_redis_server, server_version
print(count, "modules;", "embedded server", server_version(find_redis_server()))
if failed:
    sys.exit("\n".join(failed))
"""


@pytest.fixture(scope="session")
def base_venv(tmp_path_factory) -> Path:
    """A venv with `pip install -e .` alone (built once per session; the pip cache is warm)."""
    venv = tmp_path_factory.mktemp("base-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    proc = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "-e", str(REPO)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return venv


def test_every_module_imports_from_the_base_install(base_venv, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = str(tmp_path)  # nothing on PATH: no redis-server either
    proc = subprocess.run(
        [str(base_venv / "bin" / "python"), "-c", IMPORT_EVERYTHING],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "modules; embedded server 9." in proc.stdout, proc.stdout
    # the test extras really are absent, so the check above means something
    missing = subprocess.run([str(base_venv / "bin" / "python"), "-c", "import locust"], env=env, capture_output=True)
    assert missing.returncode != 0
