"""`availability rules backtest --days 7 --changes draft.json [--json]`: the last N days of
the journal replayed under the current rules and under the draft, per channel (the same
numbers as `POST /v1/backtests`; docs/backtest.md has the model).

The changes file is what `POST /v1/rules/preview` takes: a JSON array of changes
(`{"op": "create", "rule": {...}}`, `{"op": "update", "id": 3, "rule": {...}}`,
`{"op": "delete", "id": 4}`), or an object with that array under `changes`.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import msgspec

from availability.api.preview import candidate_book, copy_book
from availability.api.schemas import ProposedChange
from availability.config import Settings
from availability.domain.errors import AvailabilityError
from availability.planning.backtest import BacktestReport
from availability.planning.service import WORKERS, WORKERS_FROM, run_backtest
from availability.progress import Progress

COLUMNS = (
    ("orders_refused", "orders refused"),
    ("units_refused", "units refused"),
    ("stockouts_avoided", "stockouts avoided"),
    ("oversells_avoided", "oversells avoided"),
    ("units_unexposed", "units unexposed"),
)


def register_backtest(rules_actions) -> None:
    p = rules_actions.add_parser(
        "backtest", help="replay the last N days of the journal under draft rule changes, per channel"
    )
    p.add_argument("--days", type=int, required=True, help="1 to 31")
    p.add_argument("--changes", required=True, help="JSON file of rule changes (as the preview takes)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=lambda args, settings: asyncio.run(backtest(args, settings)))


def load_changes(path: str) -> list[ProposedChange]:
    """The draft from a file; raises ValueError naming what is wrong."""
    try:
        raw = msgspec.json.decode(Path(path).read_bytes())
    except (OSError, msgspec.DecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    if isinstance(raw, dict) and set(raw) <= {"changes"}:
        raw = raw.get("changes", [])
    try:
        return msgspec.convert(raw, list[ProposedChange])
    except msgspec.ValidationError as exc:
        raise ValueError(f"{path}: {exc}") from None


def table(report: BacktestReport, changes: int) -> str:
    head = f"Backtest of the last {report.days} days: {report.entries:,} journal entries, a draft of {changes} change(s)"
    header = ["channel", *(title for _, title in COLUMNS)]
    rows = [[row.channel, *(f"{getattr(row, name):,}" for name, _ in COLUMNS)] for row in report.channels]
    widths = [max(len(line[i]) for line in (header, *rows)) for i in range(len(header))]

    def fmt(line: list[str]) -> str:
        return "  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(line))

    notes = ("refused: by the draft minus by the current rules; avoided: current minus draft "
             "(negative: caused); unexposed: units the current rules show and the draft hides, summed over entries")
    return "\n".join([head, "", fmt(header), *(fmt(r) for r in rows), "", notes])


async def backtest(args, settings: Settings) -> int:
    if not 1 <= args.days <= 31:
        print("--days must be between 1 and 31", file=sys.stderr)
        return 2
    try:
        changes = load_changes(args.changes)
    except ValueError as exc:
        print(f"availability: {exc}", file=sys.stderr)
        return 2
    async with args.root.open_runtime(settings) as runtime:
        book = runtime.rules.book
        try:
            draft, _proposed, _deleted = candidate_book(book, changes)
        except AvailabilityError as exc:
            print(f"availability: the draft cannot be applied: {exc.detail}", file=sys.stderr)
            return 2
        with Progress("backtest", None, unit="entries") as progress:
            report = await run_backtest(
                runtime.ledger, copy_book(book), draft, days=args.days, until_ms=int(time.time() * 1000),
                on_progress=progress.update, workers=WORKERS, workers_from=WORKERS_FROM,
                redis_url=runtime.redis_url,
            )
    if args.json:
        print(msgspec.json.encode(report).decode())
    else:
        print(table(report, len(changes)))
    return 0
