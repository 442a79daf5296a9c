"""The WMS drop-folder watcher: X12 files landing in a folder (an SFTP landing directory)
are parsed, published to the stream and filed away, by `adapters.wms.dropfolder`.

The adapter moves a file to `processed/` only after our publish callback returned, so a
crash mid-file leaves it in place for the next scan (its events have deterministic ids:
publishing them twice is deduplicated by the ledger). A file the parser refuses goes to
`rejected/` with a `.error.txt` beside it, and a dead letter (reason `invalid`, stream
`intake:x12`) so that it shows up with every other dead letter and can be replayed.

The adapter's scan is synchronous (filesystem work), so it runs in a worker thread and
its publish callback hands the events to the event loop and waits for the publish.

A file holding 945 shipping advices is also handed to the fulfilment flow
(availability/flows/fulfilment/wms.py) before it is filed away: a store failure leaves
the file for the next scan, a resent file is a duplicate there too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from availability.domain.events import StockEvent
from availability.flows.fulfilment.wms import WmsHandoff
from availability.ingest.deadletters import DeadLetter, DeadLetters
from availability.ingest.publisher import EventPublisher
from availability.ingest.sources import INTAKE_PREFIX
from availability.ingest.streams import StreamNames

if TYPE_CHECKING:
    from availability.bootstrap import Runtime

log = logging.getLogger(__name__)

#: a rejected file larger than this is dead-lettered without its content (it stays in rejected/)
MAX_DEAD_LETTER_PAYLOAD = 1024 * 1024


class DropFolderWatcher:
    name = "dropfolder"

    def __init__(
        self,
        runtime: Runtime,
        folder: str | Path,
        *,
        interval: float | None = None,
        min_age_seconds: float = 1.0,
        location_map: dict[str, str] | None = None,
        fulfilment: object | None = None,
    ) -> None:
        """`fulfilment`: the fulfilment flow's intake, when not the runtime's own."""
        self.folder = Path(folder)
        self.interval = interval if interval is not None else runtime.settings.dropfolder_interval_seconds
        self.min_age_seconds = min_age_seconds
        self.location_map = location_map
        self.publisher = EventPublisher(runtime)
        self.dead_letters = DeadLetters(runtime.redis, StreamNames.from_settings(runtime.settings))
        self.shipments = WmsHandoff.of_runtime(runtime, fulfilment)
        self._task: asyncio.Task | None = None
        self.files_processed = 0
        self.files_rejected = 0
        self.events_published = 0

    async def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._task = asyncio.create_task(self._run(), name="wms-dropfolder")
        log.info("watching %s for X12 files every %.1fs", self.folder, self.interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.scan_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep watching: the next scan retries
                log.exception("drop-folder scan of %s failed", self.folder)
            await asyncio.sleep(self.interval)

    async def scan_once(self) -> list:
        """Process every pending file once; returns the adapter's `DropResult`s."""
        from adapters.wms.dropfolder import process_drop_folder

        loop = asyncio.get_running_loop()
        await self.publisher.start()

        async def publish_and_hand_off(path: Path, events: list[StockEvent]) -> None:
            await self.publisher.publish(events)
            answer = await self.shipments.take(await asyncio.to_thread(path.read_bytes), where=f"dropfolder:{path.name}")
            if answer is not None:
                log.info("%s: fulfilment %s", path.name, answer["outcome"])

        def publish(path: Path, events: list[StockEvent]) -> None:
            # Runs in the worker thread: publish on the loop and wait, so the adapter only
            # files the document away once its events are on the stream (and its 945s in
            # the fulfilment flow).
            asyncio.run_coroutine_threadsafe(publish_and_hand_off(path, events), loop).result()

        def scan() -> list:
            return list(
                process_drop_folder(
                    self.folder, publish, location_map=self.location_map, min_age_seconds=self.min_age_seconds
                )
            )

        results = await asyncio.to_thread(scan)
        letters = []
        for result in results:
            if result.ok:
                self.files_processed += 1
                self.events_published += len(result.events)
                log.info("%s: %d events published", result.path.name, len(result.events))
            elif result.moved_to is not None:  # refused by the parser
                self.files_rejected += 1
                log.warning("%s rejected: %s", result.path.name, result.error)
                letters.append(self._letter(result))
            else:
                log.warning("%s kept for a retry: %s", result.path.name, result.error)
        if letters:
            await self.dead_letters.add(letters)
        return results

    def _letter(self, result) -> DeadLetter:
        moved: Path = result.moved_to
        try:
            payload = moved.read_bytes()
        except OSError:
            payload = b""
        if len(payload) > MAX_DEAD_LETTER_PAYLOAD:
            payload = b""
        detail = getattr(result.error, "detail", None) or str(result.error)
        return DeadLetter(
            reason="invalid",
            detail=f"{detail} (file kept as {moved})",
            payload=payload,
            stream=f"{INTAKE_PREFIX}x12",
            entry_id=f"dropfolder:{moved.name}",
            source="wms",
        )
