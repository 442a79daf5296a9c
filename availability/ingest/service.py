"""`ConsumerService`: the stream consumer as a background service of `availability serve`
(registered as "consumer" in availability/services.py), plus the WMS drop-folder watcher
when `Settings.dropfolder_path` is set."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from availability.ingest.consumer import StreamConsumer

if TYPE_CHECKING:
    from availability.bootstrap import Runtime

log = logging.getLogger(__name__)


class ConsumerService:
    name = "consumer"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.consumer = StreamConsumer(runtime)
        self.dropfolder = None
        if runtime.settings.dropfolder_path:
            from availability.ingest.dropfolder import DropFolderWatcher

            self.dropfolder = DropFolderWatcher(runtime, runtime.settings.dropfolder_path)

    async def start(self) -> None:
        await self.consumer.start()
        if self.dropfolder is not None:
            await self.dropfolder.start()

    async def stop(self) -> None:
        if self.dropfolder is not None:
            await self.dropfolder.stop()
        await self.consumer.stop()
