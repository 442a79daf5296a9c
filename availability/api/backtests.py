"""Backtest routes: replay the journal of the last N days under a draft of rule changes.

    POST /v1/backtests        {"days": 7, "changes": [ProposedChange, ...]}  -> 202 {"id", "status"}
    GET  /v1/backtests/{id}   status, progress (entries done / total), the report when done

The draft is checked when it is posted (the preview's `candidate_book`: an unknown rule,
location or channel is a 4xx then, not a failed job). A job over a large window replays in
worker processes (planning/service.py); a small one runs in this process as an asyncio
task that yields to the event loop every few hundred entries. Either way lookups served by
the same process keep answering; at most `MAX_RUNNING` run at once (429 beyond) and
the last `KEEP_FINISHED` finished jobs are kept. A job lives in the process that started
it: behind several API replicas, read it back from the same one (README, "not here yet").
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from typing import Annotated, Literal

from litestar import Response, get, post
from litestar.params import JSONBody, PathParameter
from msgspec import Meta, Struct

from availability.api.context import ApiContext
from availability.api.preview import candidate_book, copy_book
from availability.api.problems import ApiError, problem_responses
from availability.api.schemas import ProposedChange
from availability.domain.rules import RuleBook
from availability.planning.backtest import BacktestReport
from availability.planning.service import SERVED_SLICE, WORKERS, WORKERS_FROM, run_backtest

log = logging.getLogger("availability.api")

MAX_RUNNING = 2
KEEP_FINISHED = 20

BacktestId = Annotated[str, PathParameter(description="the id POST /v1/backtests answered", max_length=64)]


class BacktestRequest(Struct, forbid_unknown_fields=True, kw_only=True):
    """Replay the journal of the last `days` days under the current rules and under them with
    `changes` applied (the same changes `POST /v1/rules/preview` takes)."""

    days: Annotated[int, Meta(ge=1, le=31)]
    changes: Annotated[list[ProposedChange], Meta(max_length=100)]


class BacktestStarted(Struct, kw_only=True):
    id: str
    status: Literal["running"]


class BacktestProgress(Struct, kw_only=True):
    #: journal entries replayed so far
    done: int
    #: entries in the window (an estimate while running; exact when done)
    total: int


class BacktestJob(Struct, kw_only=True):
    id: str
    status: Literal["running", "done", "failed"]
    progress: BacktestProgress
    report: BacktestReport | None
    error: str | None


class UnknownBacktest(ApiError):
    status = 404
    slug = "unknown-backtest"


class BacktestsBusy(ApiError):
    status = 429
    slug = "backtests-busy"


class _Job:
    __slots__ = ("id", "status", "done", "total", "report", "error", "task")

    def __init__(self, job_id: str) -> None:
        self.id = job_id
        self.status: Literal["running", "done", "failed"] = "running"
        self.done = 0
        self.total = 0
        self.report: BacktestReport | None = None
        self.error: str | None = None
        self.task: asyncio.Task | None = None

    def view(self) -> BacktestJob:
        return BacktestJob(
            id=self.id, status=self.status, progress=BacktestProgress(done=self.done, total=self.total),
            report=self.report, error=self.error,
        )


class BacktestJobs:
    """This process's backtests: running ones, and the last few finished."""

    def __init__(self, *, max_running: int = MAX_RUNNING, keep_finished: int = KEEP_FINISHED) -> None:
        self.max_running = max_running
        self.keep_finished = keep_finished
        self.jobs: OrderedDict[str, _Job] = OrderedDict()

    def running(self) -> int:
        return sum(1 for job in self.jobs.values() if job.status == "running")

    def start(self, ctx: ApiContext, current: RuleBook, draft: RuleBook, days: int) -> _Job:
        if self.running() >= self.max_running:
            raise BacktestsBusy(
                f"{self.max_running} backtests are running already; retry when one has finished",
                headers={"Retry-After": "10"},
            )
        job = _Job("bt-" + secrets.token_hex(8))
        self.jobs[job.id] = job
        job.task = asyncio.create_task(self._run(ctx, job, current, draft, days), name=f"backtest-{job.id}")
        return job

    async def _run(self, ctx: ApiContext, job: _Job, current: RuleBook, draft: RuleBook, days: int) -> None:
        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total

        try:
            job.report = await run_backtest(
                ctx.runtime.ledger, current, draft, days=days, until_ms=int(time.time() * 1000),
                on_progress=progress, slice_size=SERVED_SLICE, workers=WORKERS, workers_from=WORKERS_FROM,
                redis_url=ctx.runtime.redis_url,
            )
            job.status = "done"
        except asyncio.CancelledError:
            job.status, job.error = "failed", "cancelled (the service stopped)"
            raise
        except Exception as exc:  # noqa: BLE001 - the job reports it; the service goes on
            log.exception("backtest %s failed", job.id)
            job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            job.task = None
            self._forget_old()

    def _forget_old(self) -> None:
        finished = [job_id for job_id, job in self.jobs.items() if job.status != "running"]
        for job_id in finished[: max(0, len(finished) - self.keep_finished)]:
            del self.jobs[job_id]

    def get(self, job_id: str) -> _Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise UnknownBacktest(f"no backtest {job_id!r} (finished ones are kept for the last {self.keep_finished})")
        return job


def routes(ctx: ApiContext) -> list:
    jobs = BacktestJobs()

    @post(
        "/v1/backtests",
        opt={"scope": "rules"},
        status_code=202,
        tags=["rules"],
        summary="Start a backtest: the last N days of the journal replayed under draft rule changes",
        description=(
            "Replays the journal of the last `days` days under the current rules and under the rules with "
            "`changes` applied, and reports per channel: orders and units the draft would have refused "
            "(minus those the current rules refuse), stockouts and oversell exceptions it would have avoided "
            "(negative: caused), and units it would have left unexposed. Answers at once with the job's id; "
            "`GET /v1/backtests/{id}` follows it. docs/backtest.md has the model and its limits."
        ),
        responses=problem_responses(400, 401, 403, 404, 422, 429),
    )
    async def start_backtest(data: JSONBody[BacktestRequest]) -> Response[BacktestStarted]:
        book = ctx.runtime.rules.book
        draft, _proposed, _deleted = candidate_book(book, data.changes)
        job = jobs.start(ctx, copy_book(book), draft, data.days)
        return Response(
            BacktestStarted(id=job.id, status="running"), status_code=202,
            headers={"Location": f"/v1/backtests/{job.id}"},
        )

    @get(
        "/v1/backtests/{backtest_id:str}",
        opt={"scope": "read"},
        tags=["rules"],
        summary="A backtest's status, progress and (when done) its report",
        responses=problem_responses(401, 403, 404, 429),
    )
    async def get_backtest(backtest_id: BacktestId) -> BacktestJob:
        return jobs.get(backtest_id).view()

    return [start_backtest, get_backtest]


REQUEST_BODIES = (BacktestRequest,)
