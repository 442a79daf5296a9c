"""The planner console at /console: server-rendered pages (Litestar templates, Jinja2) and
htmx, every asset vendored and served by the service. docs/console.md describes the pages.

`install(ctx)` gives the app what it needs, in one place: the routers (pages and static
assets), the template config, the session store and the vendored /schema UI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from availability.console.assets import schema_render_plugins, static_router
from availability.console.session import SESSION_STORE

if TYPE_CHECKING:
    from availability.api.context import ApiContext

__all__ = ["ConsoleParts", "install", "schema_render_plugins"]


class ConsoleParts:
    """What `create_app` passes to Litestar for the console."""

    def __init__(self, ctx: "ApiContext") -> None:
        from litestar.stores.redis import RedisStore  # noqa: PLC0415

        from availability.console.web import console_router, template_config  # noqa: PLC0415

        self.routers: list[Any] = [static_router(), console_router(ctx)]
        self.template_config = template_config()
        # Sessions live in Redis beside the ledger: any API replica serves the next page, and a
        # restart does not log planners out. The prefix keeps them apart from the ledger's keys.
        self.stores = {
            SESSION_STORE: RedisStore(ctx.runtime.redis, namespace=f"{ctx.settings.key_prefix}:console-session")
        }
        self._ctx = ctx

    async def close(self) -> None:
        orders = getattr(self._ctx, "console_orders", None)
        if orders is not None:
            await orders.close()


def install(ctx: "ApiContext") -> ConsoleParts:
    return ConsoleParts(ctx)
