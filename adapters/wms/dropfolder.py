"""A WMS / 3PL drop folder of X12 files (SFTP landing directory), processed file by file.

`process_drop_folder(folder, publish)` scans `folder` for ``*.edi`` / ``*.x12`` files
(case-insensitive, in name order; dot-files and files younger than
`min_age_seconds`, which may still be uploading, are left alone), parses each whole file
with `adapters.wms.x12.parse_x12`, and:

- parsed: calls ``publish(path, events)``; when it returns, moves the file to
  ``processed/``. If `publish` raises, the file stays where it is and is tried again on
  the next scan (the events carry deterministic ids, so a partial publish followed by a
  retry is deduplicated downstream).
- not parsed: moves the file to ``rejected/`` and writes ``rejected/<name>.error.txt``
  with the reason (segment, position, element), so an operator can fix and re-drop it.

A name already taken in ``processed/`` or ``rejected/`` (a partner re-sending a file
under the same name) gets a numeric suffix: ``receipt.1.edi``. Every file yields one
`DropResult(path, result, moved_to)`: `result` is the event list or the exception.
This module only touches the filesystem; publishing is the callback's job.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

from availability.domain.errors import InvalidEvent
from availability.domain.events import StockEvent

from adapters.wms.x12 import X12Options, parse_x12

EXTENSIONS = (".edi", ".x12")
PROCESSED = "processed"
REJECTED = "rejected"

Publish = Callable[[Path, list[StockEvent]], object]


class DropResult(NamedTuple):
    path: Path
    #: the file's events, or the exception that rejected it / kept it for a retry
    result: list[StockEvent] | Exception
    #: where the file went; None when it was left in place for a retry
    moved_to: Path | None

    @property
    def ok(self) -> bool:
        return not isinstance(self.result, Exception)

    @property
    def events(self) -> list[StockEvent]:
        return self.result if isinstance(self.result, list) else []

    @property
    def error(self) -> Exception | None:
        return self.result if isinstance(self.result, Exception) else None


def pending_files(folder: str | os.PathLike[str], *, min_age_seconds: float = 0.0) -> list[Path]:
    """The files a scan would pick up now, in processing order."""
    folder = Path(folder)
    now = time.time()
    files = []
    for path in folder.iterdir():
        if path.name.startswith(".") or path.suffix.lower() not in EXTENSIONS or not path.is_file():
            continue
        if min_age_seconds and now - path.stat().st_mtime < min_age_seconds:
            continue
        files.append(path)
    return sorted(files)


def process_drop_folder(
    folder: str | os.PathLike[str],
    publish: Publish | None = None,
    *,
    location_map: Mapping[str, str] | None = None,
    options: X12Options | None = None,
    min_age_seconds: float = 0.0,
) -> Iterator[DropResult]:
    """Parse, publish and file away every pending X12 file in `folder`. Lazy: nothing
    happens to a file until the iterator reaches it."""
    folder = Path(folder)
    options = options or X12Options(location_map=location_map)
    for path in pending_files(folder, min_age_seconds=min_age_seconds):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue  # another worker took it
        try:
            events = parse_x12(data, options=options)
        except InvalidEvent as exc:
            yield DropResult(path, exc, _reject(path, folder, str(exc)))
            continue
        except Exception as exc:  # noqa: BLE001 - one unreadable file must not block the folder
            yield DropResult(path, exc, _reject(path, folder, f"unexpected error while parsing: {exc!r}"))
            continue
        if publish is not None:
            try:
                publish(path, events)
            except Exception as exc:  # noqa: BLE001 - keep the file for the next scan
                yield DropResult(path, exc, None)
                continue
        yield DropResult(path, events, _move(path, folder / PROCESSED))


def _reject(path: Path, folder: Path, reason: str) -> Path:
    moved = _move(path, folder / REJECTED)
    moved.with_name(moved.name + ".error.txt").write_text(reason + "\n", encoding="utf-8")
    return moved


def _move(path: Path, into: Path) -> Path:
    into.mkdir(exist_ok=True)
    target = into / path.name
    n = 0
    while target.exists():
        n += 1
        target = into / f"{path.stem}.{n}{path.suffix}"
    os.replace(path, target)
    return target
