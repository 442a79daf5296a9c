"""Rule routes: list, get, create, update (compare-and-set on version), delete, history,
rollback, and the what-if preview.

Every write records who (the API key's name) and why (`reason` in the body or the
`X-Change-Reason` header), then swaps this process's RuleBook at once; the rules-dirty
service marks the affected (SKU, location) pairs for the publisher in the background.
"""

from __future__ import annotations

from typing import Annotated

from litestar import Request, Response, delete, get, post, route
from litestar.params import HeaderParameter, JSONBody, PathParameter, QueryParameter

from availability.api.context import ApiContext
from availability.api.preview import preview
from availability.api.problems import InvalidInput, problem_responses
from availability.api.schemas import (
    IF_MATCH_PATTERN,
    PreviewReport,
    PreviewRequest,
    RollbackBody,
    RuleBody,
    RuleView,
)
from availability.api.security import principal_of
from availability.domain.errors import StaleRuleVersion
from availability.domain.rules import Rule, RuleKind
from availability.rules.store import RuleChange

RuleId = Annotated[int, PathParameter(description="rule id", ge=1, le=2**53)]
ExpectedVersion = Annotated[
    int | None, QueryParameter(description="compare-and-set: the version the change is based on", ge=1, le=2**53)
]
IfMatch = Annotated[
    str | None,
    HeaderParameter(
        name="If-Match",
        description='the rule version the change is based on, e.g. "3" (its ETag)',
        pattern=IF_MATCH_PATTERN,
    ),
]
Reason = Annotated[
    str | None, HeaderParameter(name="X-Change-Reason", description="why (recorded in history)", max_length=2000)
]
RULES = {"scope": "rules"}
READ = {"scope": "read"}
WRITE_PROBLEMS = problem_responses(400, 401, 403, 404, 409, 422, 429)


def etag(rule: Rule) -> dict[str, str]:
    return {"ETag": f'"{rule.version}"'}


def version_from_if_match(value: str | None) -> int | None:
    if value is None or value.strip() in ("", "*"):
        return None
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not text.isdigit() or len(text) > 15:
        raise InvalidInput(f'If-Match must be a rule version such as "3", not {value[:40]!r}')
    return int(text)


def expected(*candidates: int | None) -> int | None:
    """The one expected version named by body, query or If-Match.

    Two different ones cannot both be the rule's current version, so at least one is stale:
    409 like any other stale version (each is valid on its own, so it is not an input error)."""
    named = {c for c in candidates if c is not None}
    if len(named) > 1:
        raise StaleRuleVersion(
            f"expected versions disagree: {sorted(named)}; the rule can be at only one of them",
            expected_versions=sorted(named),
        )
    return named.pop() if named else None


def routes(ctx: ApiContext) -> list:
    def store():
        return ctx.runtime.store

    async def changed() -> None:
        await ctx.runtime.rules.apply_local_change()

    @get(
        "/v1/rules",
        opt=READ,
        tags=["rules"],
        summary="Live rules (optionally of one kind, or with deleted ones)",
        responses=problem_responses(401, 403, 422, 429),
    )
    async def list_rules(
        kind: Annotated[RuleKind | None, QueryParameter(description="only rules of this kind")] = None,
        include_deleted: Annotated[bool, QueryParameter(description="also deleted rules")] = False,
    ) -> list[RuleView]:
        return [RuleView.of(r) for r in await store().list_rules(kind=kind, include_deleted=include_deleted)]

    @get(
        "/v1/rules/{rule_id:int}",
        opt=READ,
        tags=["rules"],
        summary="One rule (ETag = its version)",
        responses=problem_responses(401, 403, 404, 429),
    )
    async def get_rule(rule_id: RuleId) -> Response[RuleView]:
        rule = await store().get_rule(rule_id)
        return Response(RuleView.of(rule), headers=etag(rule))

    @post(
        "/v1/rules",
        opt=RULES,
        status_code=201,
        tags=["rules"],
        summary="Create a rule (version 1)",
        responses=WRITE_PROBLEMS,
    )
    async def create_rule(
        data: JSONBody[RuleBody], request: Request, x_change_reason: Reason = None
    ) -> Response[RuleView]:
        rule = await store().create_rule(
            data.rule_fields(), actor=principal_of(request.scope).name, reason=_reason(data.reason, x_change_reason)
        )
        await changed()
        return Response(RuleView.of(rule), status_code=201, headers={**etag(rule), "Location": f"/v1/rules/{rule.id}"})

    @route(
        "/v1/rules/{rule_id:int}",
        http_method=["PUT", "PATCH"],
        opt=RULES,
        status_code=200,
        tags=["rules"],
        summary="Change fields of a rule (others are kept); 409 if it moved past the expected version",
        responses=WRITE_PROBLEMS,
    )
    async def update_rule(
        rule_id: RuleId,
        data: JSONBody[RuleBody],
        request: Request,
        if_match: IfMatch = None,
        x_change_reason: Reason = None,
    ) -> Response[RuleView]:
        version = expected(data.expected_version or None, data.version or None, version_from_if_match(if_match))
        rule = await store().update_rule(
            rule_id,
            data.rule_fields(),
            expected_version=version,
            actor=principal_of(request.scope).name,
            reason=_reason(data.reason, x_change_reason),
        )
        await changed()
        return Response(RuleView.of(rule), headers=etag(rule))

    @delete(
        "/v1/rules/{rule_id:int}",
        opt=RULES,
        tags=["rules"],
        summary="Delete a rule (kept in history)",
        responses=WRITE_PROBLEMS,
    )
    async def delete_rule(
        rule_id: RuleId,
        request: Request,
        expected_version: ExpectedVersion = None,
        if_match: IfMatch = None,
        x_change_reason: Reason = None,
    ) -> None:
        await store().delete_rule(
            rule_id,
            expected_version=expected(expected_version, version_from_if_match(if_match)),
            actor=principal_of(request.scope).name,
            reason=x_change_reason or "",
        )
        await changed()

    @get(
        "/v1/rules/{rule_id:int}/history",
        opt=READ,
        tags=["rules"],
        summary="Every version of a rule: who, when, why, before and after",
        responses=problem_responses(401, 403, 404, 429),
    )
    async def rule_history(rule_id: RuleId) -> list[RuleChange]:
        return await store().rule_history(rule_id)

    @post(
        "/v1/rules/{rule_id:int}/rollback",
        opt=RULES,
        status_code=200,
        tags=["rules"],
        summary="Make an earlier version current again (as a new version)",
        responses=WRITE_PROBLEMS,
    )
    async def rollback_rule(
        rule_id: RuleId,
        data: JSONBody[RollbackBody],
        request: Request,
        if_match: IfMatch = None,
        x_change_reason: Reason = None,
    ) -> Response[RuleView]:
        rule = await store().rollback_rule(
            rule_id,
            data.to_version,
            expected_version=expected(data.expected_version, version_from_if_match(if_match)),
            actor=principal_of(request.scope).name,
            reason=_reason(data.reason, x_change_reason),
        )
        await changed()
        return Response(RuleView.of(rule), headers=etag(rule))

    @post(
        "/v1/rules/preview",
        opt=RULES,
        status_code=200,
        tags=["rules"],
        summary="What a rule change would do, against the live ledger (nothing is written)",
        description=(
            "Compares every (SKU, location, channel) ATS in scope under the current rules and under the "
            "rules with `changes` applied: values that change, units exposed per channel before and after, "
            "SKUs whose channel total drops to zero, and a sample of changed rows. SKU- and category-scoped "
            "changes read only their SKUs; others scan the ledger up to `limit` SKUs (`complete` says whether "
            "every SKU was seen)."
        ),
        responses=problem_responses(400, 401, 403, 404, 422, 429),
    )
    async def preview_rules(data: JSONBody[PreviewRequest]) -> PreviewReport:
        runtime = ctx.runtime
        limit = data.limit or ctx.settings.preview_default_limit
        return await preview(runtime.ledger, runtime.rules.book, data.changes, limit=limit, sample=data.sample)

    return [list_rules, get_rule, create_rule, update_rule, delete_rule, rule_history, rollback_rule, preview_rules]


def _reason(body: object, header: str | None) -> str:
    if isinstance(body, str) and body:
        return body
    return header or ""
