"""Browser assets the service serves itself: the console's CSS and the vendored htmx and
Swagger UI (static/vendor/README.md has versions, licences and checksums).

Nothing is fetched from a CDN, so the console and the OpenAPI docs (`/schema`) work on a
machine with no internet, and a page's assets are the ones its tests ran against.
"""

from __future__ import annotations

from pathlib import Path

from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router

STATIC_DIR = Path(__file__).parent / "static"
STATIC_PATH = "/console/static"
VENDOR = f"{STATIC_PATH}/vendor"


def schema_render_plugins() -> list:
    """The OpenAPI docs UI at /schema, from vendored Swagger UI (and its favicon, not Litestar's CDN one)."""
    return [
        SwaggerRenderPlugin(
            js_url=f"{VENDOR}/swagger-ui-bundle.js",
            css_url=f"{VENDOR}/swagger-ui.css",
            standalone_preset_js_url=f"{VENDOR}/swagger-ui-standalone-preset.js",
            favicon=f"<link rel='icon' type='image/png' href='{VENDOR}/favicon-32x32.png'>",
        )
    ]


def static_router():
    """/console/static/...: open (no key: the login page and /schema need them), cacheable for a day."""
    from litestar.datastructures import CacheControlHeader  # noqa: PLC0415

    return create_static_files_router(
        path=STATIC_PATH,
        directories=[STATIC_DIR],
        include_in_schema=False,
        cache_control=CacheControlHeader(max_age=86_400, public=True),
        name="console-static",
    )
