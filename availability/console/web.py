"""The console's routes: thin handlers that check the session, call the store, the preview
or the explainer, and render a Jinja2 template (htmx swaps the partials in place).

Pages (docs/console.md): login, SKU explorer, rules (table, edit with compare-and-set,
history with diff, rollback, CSV export/import with dry run), what-if (a draft kept in
the session, previewed against the live ledger, applied as one change), backtest (over
the backtest API's contract), operations. `read` views, `rules` changes rules, `admin`
acts on operations (replays, flow exceptions).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.exceptions import HTTPException
from litestar.response import Redirect, Template
from litestar.template.config import TemplateConfig

from availability.api.preview import candidate_book, preview
from availability.api.problems import problem_response
from availability.api.schemas import ProposedChange
from availability.console import operations
from availability.console.dispatch import call_api, has_route
from availability.console.explorer import SkuIndex, sku_views
from availability.console.session import (
    CSRF_FIELD,
    ConsoleForbidden,
    LoginRequired,
    Sessions,
    csrf_token,
    draft_of,
    save_draft,
    session_config,
)
from availability.console.whatif import change_from_form, exposure_chart, rule_fields_from_form
from availability.domain.errors import AvailabilityError, StaleRuleVersion, UnknownRule
from availability.domain.rules import RULE_KINDS, SELECTOR_WEIGHTS, Rule
from availability.rules.rules_csv import export_rules_csv, plan_import

if TYPE_CHECKING:
    from availability.api.context import ApiContext

log = logging.getLogger("availability.console")

TEMPLATES = Path(__file__).parent / "templates"
BACKTESTS = "/v1/backtests"
SCOPES = ("global", "channel", "location_group", "location", "category", "sku")
MAX_CSV_BYTES = 2 * 1024 * 1024
SKUS_LISTED = 50


def template_config() -> TemplateConfig:
    return TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine)


def rule_scope(rule: Rule) -> str:
    """The most specific selector a rule has ("global" for none): what the rules table filters on."""
    for selector in SELECTOR_WEIGHTS:  # heaviest first
        if getattr(rule, selector) is not None:
            return selector
    return "global"


def console_router(ctx: "ApiContext") -> Router:
    """/console/...: every page of the console, behind its own session middleware."""
    sessions = Sessions(ctx.keys)
    index = SkuIndex(ctx.runtime.ledger)
    orders = operations.OrderExceptions(ctx.runtime)
    shopify = operations.ShopifyPush(ctx.runtime)
    dead_letters = operations.DeadLetterSection(ctx.runtime)
    ctx.console_orders = orders  # type: ignore[attr-defined]  # closed with the app (app.py)

    def store():
        return ctx.runtime.store

    def page(request: Request, name: str, status: int = 200, *, who: Any = None, **context: Any) -> Template:
        """A page; `who`: the principal the handler already checked (else looked up again)."""
        if who is None and request.session:
            who = sessions.principal(request)
        return Template(
            template_name=name,
            context={"who": who, "csrf": csrf_token(request), "csrf_field": CSRF_FIELD, "draft_size": len(draft_of(request)),
                     "path": request.url.path, **context},
            status_code=status,
        )

    async def posted(request: Request, scope: str):
        """A form POST: the principal with `scope`, after the CSRF check; and the form."""
        who = sessions.require(request, scope)
        form = await request.form()
        await sessions.check_csrf(request, form)
        return who, form

    # --- login --------------------------------------------------------------------------------

    @get("/login", name="console-login")
    async def login_page(request: Request) -> Template:
        return Template(template_name="login.html", context={"error": None, "who": None, "path": request.url.path})

    @post("/login", status_code=200)
    async def login(request: Request) -> Response:
        client = request.client.host if request.client else "?"
        if sessions.attempts.take(client):
            return _login_failed(request, 429, "too many attempts: wait a few seconds")
        form = await request.form()
        key = form.get("api_key")
        principal = sessions.login(request, key.strip() if isinstance(key, str) else "")
        if principal is None:
            return _login_failed(request, 401, "unknown or revoked API key")
        return Redirect("/console/skus", status_code=303)

    @post("/logout", status_code=303)
    async def logout(request: Request) -> Redirect:
        form = await request.form()
        await sessions.check_csrf(request, form)
        request.clear_session()
        return Redirect("/console/login", status_code=303)

    @get("/")
    async def home() -> Redirect:
        return Redirect("/console/skus", status_code=303)

    # --- SKU explorer -------------------------------------------------------------------------

    @get("/skus")
    async def skus_page(request: Request, q: FromQuery[str] = "") -> Template:
        sessions.require(request, "read")
        found, matched = await index.search(q[:128], SKUS_LISTED)
        name = "skus_list.html" if request.headers.get("hx-request") else "skus.html"
        return page(request, name, q=q, skus=found, matched=matched)

    @get("/skus/{sku:str}")
    async def sku_page(request: Request, sku: FromPath[str], channel: FromQuery[str] = "") -> Template:
        sessions.require(request, "read")
        if not sku or len(sku) > 128:
            raise HTTPException(status_code=404, detail="no such SKU")
        book = ctx.runtime.rules.book
        stock = await ctx.runtime.ledger.stock(sku)
        channels = [channel] if channel in book.channels else list(book.channels)
        views = sku_views(book, sku, stock, channels)
        return page(request, "sku.html", sku=sku, views=views, known=bool(stock), rules_version=book.version,
                    categories=book.sku_categories.get(sku))

    # --- rules --------------------------------------------------------------------------------

    @get("/rules")
    async def rules_page(
        request: Request,
        selector: Annotated[str, QueryParameter(name="scope")] = "",  # `scope` itself is reserved by Litestar
        kind: FromQuery[str] = "",
        q: FromQuery[str] = "",
    ) -> Template:
        who = sessions.require(request, "read")
        rules, recent = await store().rules_and_recent_changes(10)
        if selector in SCOPES:
            rules = [r for r in rules if rule_scope(r) == selector]
        if kind in RULE_KINDS:
            rules = [r for r in rules if r.kind == kind]
        if q:
            needle = q.strip().lower()
            rules = [r for r in rules if needle in r.scope_label().lower() or needle in r.note.lower()]
        return page(request, "rules.html", who=who, rules=rules, scope=selector, kind=kind, q=q, scopes=SCOPES,
                    kinds=RULE_KINDS, rule_scope=rule_scope, recent=recent)

    @get("/rules/new")
    async def new_rule_page(request: Request) -> Template:
        sessions.require(request, "rules")
        return page(request, "rule_edit.html", rule=None, values={}, kinds=RULE_KINDS, error=None, stale=None)

    @post("/rules/new", status_code=303)
    async def create_rule(request: Request) -> Response:
        who, form = await posted(request, "rules")
        fields = rule_fields_from_form(form)
        try:
            rule = await store().create_rule(fields, actor=who.name, reason=str(form.get("reason") or ""))
        except AvailabilityError as exc:
            return page(request, "rule_edit.html", exc.status, rule=None, values=fields, kinds=RULE_KINDS,
                        error=exc.detail, stale=None)
        await ctx.runtime.rules.apply_local_change()
        return Redirect(f"/console/rules/{rule.id}", status_code=303)

    @get("/rules/{rule_id:int}")
    async def rule_page(request: Request, rule_id: FromPath[int]) -> Template:
        sessions.require(request, "read")
        history = await store().rule_history(rule_id)
        try:
            rule = await store().get_rule(rule_id)
        except UnknownRule:
            rule = None  # deleted: its history (and a restore) is still shown
        return page(request, "rule.html", rule=rule, rule_id=rule_id, history=list(reversed(history)),
                    kinds=RULE_KINDS, values=msgspec.structs.asdict(rule) if rule else {}, error=None, stale=None,
                    diff=_diff)

    @post("/rules/{rule_id:int}", status_code=303)
    async def update_rule(request: Request, rule_id: FromPath[int]) -> Response:
        who, form = await posted(request, "rules")
        fields = rule_fields_from_form(form)
        expected = _int(form.get("expected_version"))
        try:
            await store().update_rule(rule_id, fields, expected_version=expected, actor=who.name,
                                      reason=str(form.get("reason") or ""))
        except StaleRuleVersion:
            # Shown as stale, never overwritten: the planner sees both and decides.
            current = await store().get_rule(rule_id)
            history = await store().rule_history(rule_id)
            return page(request, "rule.html", 409, rule=current, rule_id=rule_id, history=list(reversed(history)),
                        kinds=RULE_KINDS, values=fields, error=None, diff=_diff,
                        stale={"yours": expected, "current": current.version, "by": history[-1].actor,
                               "at": history[-1].at, "reason": history[-1].reason})
        except AvailabilityError as exc:
            current = await store().get_rule(rule_id)
            history = await store().rule_history(rule_id)
            return page(request, "rule.html", exc.status, rule=current, rule_id=rule_id, history=list(reversed(history)),
                        kinds=RULE_KINDS, values=fields, error=exc.detail, stale=None, diff=_diff)
        await ctx.runtime.rules.apply_local_change()
        return Redirect(f"/console/rules/{rule_id}", status_code=303)

    @post("/rules/{rule_id:int}/delete", status_code=303)
    async def delete_rule(request: Request, rule_id: FromPath[int]) -> Response:
        who, form = await posted(request, "rules")
        await store().delete_rule(rule_id, expected_version=_int(form.get("expected_version")), actor=who.name,
                                  reason=str(form.get("reason") or ""))
        await ctx.runtime.rules.apply_local_change()
        return Redirect(f"/console/rules/{rule_id}", status_code=303)

    @post("/rules/{rule_id:int}/rollback", status_code=303)
    async def rollback_rule(request: Request, rule_id: FromPath[int]) -> Response:
        who, form = await posted(request, "rules")
        to_version = _int(form.get("to_version"))
        if to_version is None:
            raise HTTPException(status_code=400, detail="`to_version` is required")
        await store().rollback_rule(rule_id, to_version, expected_version=_int(form.get("expected_version")),
                                    actor=who.name, reason=str(form.get("reason") or f"rollback to v{to_version}"))
        await ctx.runtime.rules.apply_local_change()
        return Redirect(f"/console/rules/{rule_id}", status_code=303)

    @get("/rules.csv")
    async def export_csv(request: Request) -> Response:
        sessions.require(request, "read")
        body = export_rules_csv(await store().list_rules())
        return Response(body, media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="rules.csv"'})

    @post("/rules/import", status_code=200)
    async def import_csv(request: Request) -> Response:
        who, form = await posted(request, "rules")
        text = await _csv_text(form)
        live = await store().list_rules()
        try:
            planned = plan_import(text, live)
        except AvailabilityError as exc:
            return page(request, "import.html", exc.status, planned=[], error=exc.detail, applied=None, csv_text=text)
        if form.get("apply") != "yes" or not planned:
            return page(request, "import.html", planned=planned, error=None, applied=None, csv_text=text)
        try:
            written = await store().apply_changes([p.as_change() for p in planned], actor=who.name,
                                                  reason=str(form.get("reason") or "CSV import"))
        except StaleRuleVersion as exc:
            return page(request, "import.html", 409, planned=planned, applied=None, csv_text=text,
                        error=f"not applied: {exc.detail}. Run the dry run again to see the current rules.")
        await ctx.runtime.rules.apply_local_change()
        return page(request, "import.html", planned=planned, error=None, applied=written, csv_text="")

    # --- what-if ------------------------------------------------------------------------------

    @get("/whatif")
    async def whatif_page(request: Request) -> Template:
        sessions.require(request, "read")
        return page(request, "whatif.html", draft=draft_of(request), kinds=RULE_KINDS, report=None, chart=None,
                    error=None)

    @post("/whatif/add", status_code=303)
    async def whatif_add(request: Request) -> Response:
        _, form = await posted(request, "rules")
        draft = draft_of(request)
        try:
            change = change_from_form(form)
            # Validated now, against the live book, so the draft never holds a change that cannot apply.
            candidate_book(ctx.runtime.rules.book, msgspec.convert(draft + [change], list[ProposedChange]))
        except (AvailabilityError, msgspec.ValidationError) as exc:
            detail = exc.detail if isinstance(exc, AvailabilityError) else str(exc)
            status = exc.status if isinstance(exc, AvailabilityError) else 422
            return page(request, "whatif.html", status, draft=draft, kinds=RULE_KINDS, report=None, chart=None,
                        error=detail)
        save_draft(request, draft + [change])
        return Redirect("/console/whatif", status_code=303)

    @post("/whatif/remove", status_code=303)
    async def whatif_remove(request: Request) -> Redirect:
        _, form = await posted(request, "rules")
        draft = draft_of(request)
        index = _int(form.get("index"))
        if index is not None and 0 <= index < len(draft):
            del draft[index]
            save_draft(request, draft)
        return Redirect("/console/whatif", status_code=303)

    @post("/whatif/preview", status_code=200)
    async def whatif_preview(request: Request) -> Template:
        _, form = await posted(request, "read")
        draft = draft_of(request)
        if not draft:
            return page(request, "whatif_report.html", 422, report=None, chart=None, error="the draft is empty")
        changes = msgspec.convert(draft, list[ProposedChange])
        try:
            report = await preview(ctx.runtime.ledger, ctx.runtime.rules.book, changes,
                                   limit=ctx.settings.preview_default_limit, sample=50)
        except AvailabilityError as exc:
            return page(request, "whatif_report.html", exc.status, report=None, chart=None, error=exc.detail)
        return page(request, "whatif_report.html", report=report, chart=exposure_chart(report.channels), error=None)

    @post("/whatif/apply", status_code=303)
    async def whatif_apply(request: Request) -> Response:
        who, form = await posted(request, "rules")
        draft = draft_of(request)
        reason = str(form.get("reason") or "").strip()
        if not draft or not reason:
            return page(request, "whatif.html", 422, draft=draft, kinds=RULE_KINDS, report=None, chart=None,
                        error="a draft and a reason are needed to apply")
        try:
            written = await store().apply_changes(draft, actor=who.name, reason=reason)
        except AvailabilityError as exc:
            return page(request, "whatif.html", exc.status, draft=draft, kinds=RULE_KINDS, report=None, chart=None,
                        error=f"not applied: {exc.detail}")
        await ctx.runtime.rules.apply_local_change()
        save_draft(request, [])
        first = written[0].rule_id if written else None
        return Redirect(f"/console/rules/{first}" if first else "/console/rules", status_code=303)

    # --- backtest -----------------------------------------------------------------------------

    @get("/backtest")
    async def backtest_page(request: Request) -> Template:
        sessions.require(request, "read")
        return page(request, "backtest.html", draft=draft_of(request), present=has_route(request.app, BACKTESTS))

    @post("/backtest", status_code=200)
    async def backtest_start(request: Request) -> Template:
        who, form = await posted(request, "rules")
        if not has_route(request.app, BACKTESTS):
            return page(request, "backtest_status.html", 501, run=None, error="backtest API not present on this server")
        days = _int(form.get("days")) or 7
        answer = await call_api(request.app, who, "POST", BACKTESTS, {"days": days, "changes": draft_of(request)})
        if answer.status != 202 or not isinstance(answer.body, dict) or "id" not in answer.body:
            return page(request, "backtest_status.html", _client_status(answer.status), run=None,
                        error=_detail(answer.body, answer.status))
        return page(request, "backtest_status.html", run=answer.body, error=None)

    @get("/backtest/{run_id:str}")
    async def backtest_status(request: Request, run_id: FromPath[str]) -> Template:
        who = sessions.require(request, "read")
        if not run_id.replace("-", "").replace("_", "").isalnum() or len(run_id) > 100:
            raise HTTPException(status_code=404, detail="no such backtest")
        answer = await call_api(request.app, who, "GET", f"{BACKTESTS}/{run_id}")
        if answer.status != 200 or not isinstance(answer.body, dict):
            return page(request, "backtest_status.html", _client_status(answer.status), run=None,
                        error=_detail(answer.body, answer.status))
        return page(request, "backtest_status.html", run=answer.body, error=None)

    # --- operations ---------------------------------------------------------------------------

    @get("/ops")
    async def ops_page(request: Request, message: FromQuery[str] = "") -> Template:
        who = sessions.require(request, "read")
        runtime = ctx.runtime
        # The four sections read different stores: ask them at once.
        lag, dead, push, flows = await asyncio.gather(
            operations.consumer_lag(runtime), dead_letters.section(),
            shopify.section(await index.skus()), orders.section(),
        )
        return page(request, "ops.html", who=who, message=message[:500], lag=lag, dead=dead, shopify=push,
                    flows=flows)

    @post("/ops/dead-letters/replay", status_code=200)
    async def ops_replay(request: Request) -> Response:
        _, form = await posted(request, "admin")
        letter = str(form.get("id") or "")
        message = await operations.replay_dead_letter(ctx.runtime, letter) if letter else "no dead letter named"
        return Redirect(f"/console/ops?message={_q(message)}", status_code=303)

    @post("/ops/flow-exceptions/{exception_id:int}/{action:str}", status_code=200)
    async def ops_flow(request: Request, exception_id: FromPath[int], action: FromPath[str]) -> Response:
        who, form = await posted(request, "admin")
        if action == "retry":
            message = await orders.retry(exception_id, who.name)
        elif action == "resolve":
            message = await orders.resolve(exception_id, who.name, str(form.get("note") or ""))
        else:
            raise HTTPException(status_code=404, detail="the actions are retry and resolve")
        return Redirect(f"/console/ops?message={_q(message)}", status_code=303)

    def login_required(request: Request, exc: LoginRequired) -> Response:
        if request.headers.get("hx-request"):
            # htmx follows redirects inside the swap; HX-Redirect makes the whole page go to login.
            return Response(b"", status_code=401, headers={"HX-Redirect": "/console/login"})
        return Redirect("/console/login", status_code=303)

    def error_page(request: Request, exc: Exception) -> Response:
        if isinstance(exc, AvailabilityError):
            status, detail = exc.status, exc.detail
        elif isinstance(exc, HTTPException):
            status, detail = exc.status_code, str(exc.detail)
        else:
            log.exception("console error on %s", request.url.path, exc_info=exc)
            status, detail = 500, "the console failed to answer; the error has been logged"
        if not _wants_html(request):
            return problem_response(status, "console-error", detail, instance=request.url.path)
        return Template(template_name="error.html", status_code=status,
                        context={"status": status, "detail": detail, "who": None, "path": request.url.path})

    config = session_config()
    return Router(
        path="/console",
        route_handlers=[
            login_page, login, logout, home, skus_page, sku_page, rules_page, new_rule_page, create_rule, rule_page,
            update_rule, delete_rule, rollback_rule, export_csv, import_csv, whatif_page, whatif_add, whatif_remove,
            whatif_preview, whatif_apply, backtest_page, backtest_start, backtest_status, ops_page, ops_replay,
            ops_flow,
        ],
        middleware=[config.middleware],
        exception_handlers={
            LoginRequired: login_required,
            ConsoleForbidden: error_page,
            AvailabilityError: error_page,
            HTTPException: error_page,
            Exception: error_page,
        },
        include_in_schema=False,
    )


def _wants_html(request: Request) -> bool:
    """A browser (or htmx) asking: an HTML page. Anything else gets RFC 9457 problem+json, like the API."""
    return "text/html" in request.headers.get("accept", "") or bool(request.headers.get("hx-request"))


def _login_failed(request: Request, status: int, detail: str) -> Response:
    if not _wants_html(request):
        return problem_response(status, "login-failed", detail, instance=request.url.path)
    return Template(template_name="login.html", status_code=status,
                    context={"error": detail, "who": None, "path": "/console/login"})


def _diff(before: dict | None, after: dict | None) -> list[tuple[str, Any, Any]]:
    """The fields a history entry changed, as (field, before, after)."""
    before, after = before or {}, after or {}
    return [(f, before.get(f), after.get(f)) for f in Rule.__struct_fields__
            if f not in ("id", "version") and before.get(f) != after.get(f)]


def _int(value: Any) -> int | None:
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 15:
        return int(value.strip())
    return None


async def _csv_text(form: Any) -> str:
    upload = form.get("file")
    if upload is not None and hasattr(upload, "read"):
        raw = await upload.read()
        if len(raw) > MAX_CSV_BYTES:
            raise HTTPException(status_code=413, detail=f"a rules CSV is at most {MAX_CSV_BYTES // 1024} kB")
        if raw:
            try:
                return raw.decode("utf-8-sig")
            except UnicodeDecodeError:
                raise HTTPException(status_code=400, detail="the CSV is not UTF-8 text") from None
    text = form.get("csv_text")
    if isinstance(text, str) and len(text) <= MAX_CSV_BYTES:
        return text
    raise HTTPException(status_code=400, detail="attach a CSV file or paste its text")


def _client_status(status: int) -> int:
    # The backtest API's own 4xx is the planner's to read; its failures are a bad gateway, not ours to 500.
    return status if 400 <= status < 500 else 502


def _detail(body: Any, status: int) -> str:
    if isinstance(body, dict) and body.get("detail"):
        return str(body["detail"])
    return f"the backtest API answered {status}"


def _q(text: str) -> str:
    from urllib.parse import quote  # noqa: PLC0415

    return quote(text[:400])
