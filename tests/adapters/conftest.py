"""Fixtures for the adapter parsers: the sample files shipped in adapters/samples."""

from __future__ import annotations

from pathlib import Path

import pytest

import adapters

SAMPLES = Path(adapters.__file__).parent / "samples"


@pytest.fixture
def samples() -> Path:
    return SAMPLES
