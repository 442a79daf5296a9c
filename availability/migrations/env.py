"""Alembic environment: migrations run over the connection `availability.migrations`
hands in (config.attributes["connection"]), inside the caller's transaction; with none
(offline SQL generation) the URL from the config is used."""

from __future__ import annotations

from alembic import context

from availability.migrations import target_metadata


def _configure(**kwargs) -> None:
    context.configure(
        target_metadata=target_metadata(),
        # SQLite cannot ALTER most things: batch mode copies the table instead
        render_as_batch=True,
        compare_type=True,
        **kwargs,
    )


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        _configure(url=context.config.get_main_option("sqlalchemy.url"), literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


# Alembic executes this file inside its migration context; a plain import (tools that
# walk every module of the package) has no context and must not try to migrate
if hasattr(context, "config"):
    run()
