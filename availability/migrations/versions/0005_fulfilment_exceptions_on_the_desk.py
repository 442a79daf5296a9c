"""The fulfilment flow's exceptions move into the shared `flow_exceptions`.

Before, the fulfilment flow kept its own `fulfilment_exceptions` (keyed by shipment, with
the order's reference beside it), so `GET /v1/flows/exceptions` and the console's
operations view did not see them. Every row, open or resolved, moves in as flow
`fulfilment`, `reference` the shipment id (the document the flow opens and closes
exceptions on: one order can ship in several) and the order's reference under
`documents` ("order"); they get new ids after the other flows', in their old order. The
downgrade recreates the old table and moves them back (keeping their shared ids).

Rows move through Python, not `INSERT ... SELECT`: building the JSON is not the same SQL
on SQLite and PostgreSQL.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0005'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

#: the columns both tables have, as they are
COMMON = ("reason", "owner", "detail", "status", "created_ms", "resolved_ms", "resolved_by", "note")

_common = [sa.column(name) for name in COMMON]
shared = sa.table("flow_exceptions", sa.column("id"), sa.column("flow"), sa.column("reference"),
                  sa.column("documents", sa.JSON()), *_common)


def _old_table() -> sa.TableClause:
    return sa.table("fulfilment_exceptions", sa.column("id"), sa.column("shipment_id"), sa.column("reference"),
                    *[sa.column(name) for name in COMMON])


def upgrade() -> None:
    bind = op.get_bind()
    old = _old_table()
    rows = bind.execute(sa.select(old).order_by(old.c.id)).mappings().all()
    if rows:
        bind.execute(sa.insert(shared), [
            {"flow": "fulfilment", "reference": r["shipment_id"], "documents": {"order": r["reference"]},
             **{name: r[name] for name in COMMON}} for r in rows])
    with op.batch_alter_table('fulfilment_exceptions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_fulfilment_exceptions_shipment_id'))
    op.drop_table('fulfilment_exceptions')


def downgrade() -> None:
    op.create_table('fulfilment_exceptions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('shipment_id', sa.String(length=200), nullable=False),
    sa.Column('reference', sa.String(length=200), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=False),
    sa.Column('owner', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_ms', sa.BigInteger(), nullable=False),
    sa.Column('resolved_ms', sa.BigInteger(), nullable=True),
    sa.Column('resolved_by', sa.String(length=100), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('fulfilment_exceptions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_fulfilment_exceptions_shipment_id'), ['shipment_id'], unique=False)
    bind = op.get_bind()
    mine = shared.c.flow == "fulfilment"
    rows = bind.execute(sa.select(shared).where(mine).order_by(shared.c.id)).mappings().all()
    if rows:
        bind.execute(sa.insert(_old_table()), [
            {"id": r["id"], "shipment_id": r["reference"], "reference": (r["documents"] or {}).get("order") or "",
             **{name: r[name] for name in COMMON}} for r in rows])
        if bind.dialect.name == "postgresql":  # rows inserted with their ids do not move the serial
            op.execute("SELECT setval(pg_get_serial_sequence('fulfilment_exceptions', 'id'), "
                       "COALESCE((SELECT MAX(id) FROM fulfilment_exceptions), 0) + 1, false)")
    bind.execute(sa.delete(shared).where(mine))
