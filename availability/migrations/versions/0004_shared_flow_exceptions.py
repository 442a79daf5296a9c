"""One exception table for the order, returns and finance flows: `flow_exceptions`.

Before, each flow kept its own (`order_exceptions`, `return_exceptions`,
`finance_exceptions`, the same columns bar finance's `documents`), so the operations
view and `GET /v1/flows/exceptions` saw the order flow's only, and exception ids
overlapped between flows. This creates `flow_exceptions` (`flow`, `reference`, the
documents involved) and moves every row in: the order flow's keep their ids (people,
runbooks and the API refer to them); the returns' and finance's get new ids after them,
in their old order. The fulfilment flow keeps its table (keyed by shipment).

A database made by `create_all` may have `flow_exceptions` already (empty): it is kept.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

#: the columns every flow's exception table had
COMMON = "reference, reason, owner, detail, status, created_ms, resolved_ms, resolved_by, note"
OLD_TABLES = ("order_exceptions", "return_exceptions", "finance_exceptions")


def _columns(with_documents: bool) -> list:
    cols = [
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('flow', sa.String(length=32), nullable=False),
        sa.Column('reference', sa.String(length=200), nullable=False),
        sa.Column('reason', sa.String(length=64), nullable=False),
        sa.Column('owner', sa.String(length=32), nullable=False),
        sa.Column('detail', sa.Text(), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('created_ms', sa.BigInteger(), nullable=False),
        sa.Column('resolved_ms', sa.BigInteger(), nullable=True),
        sa.Column('resolved_by', sa.String(length=100), nullable=True),
        sa.Column('note', sa.Text(), nullable=True),
    ]
    if with_documents:
        cols.insert(3, sa.Column('documents', sa.JSON(), nullable=True))
    return cols + [sa.PrimaryKeyConstraint('id')]


def _create(name: str, *, with_documents: bool, flow_index: bool) -> None:
    op.create_table(name, *_columns(with_documents))
    with op.batch_alter_table(name, schema=None) as batch_op:
        batch_op.create_index(batch_op.f(f'ix_{name}_reference'), ['reference'], unique=False)
        if flow_index:
            batch_op.create_index(batch_op.f(f'ix_{name}_flow'), ['flow'], unique=False)


def _drop(name: str) -> None:
    with op.batch_alter_table(name, schema=None) as batch_op:
        batch_op.drop_index(batch_op.f(f'ix_{name}_reference'))
    op.drop_table(name)


def _advance_sequence(table: str) -> None:
    """PostgreSQL: rows inserted with their ids do not move the serial's sequence."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                   f"COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)")


def upgrade() -> None:
    if not sa.inspect(op.get_bind()).has_table('flow_exceptions'):
        _create('flow_exceptions', with_documents=True, flow_index=True)
    op.execute(f"INSERT INTO flow_exceptions (id, flow, {COMMON}) "
               f"SELECT id, flow, {COMMON} FROM order_exceptions ORDER BY id")
    _advance_sequence('flow_exceptions')
    op.execute(f"INSERT INTO flow_exceptions (flow, {COMMON}) "
               f"SELECT 'returns', {COMMON} FROM return_exceptions ORDER BY id")
    op.execute(f"INSERT INTO flow_exceptions (flow, documents, {COMMON}) "
               f"SELECT 'finance', documents, {COMMON} FROM finance_exceptions ORDER BY id")
    for name in OLD_TABLES:
        _drop(name)


def downgrade() -> None:
    _create('order_exceptions', with_documents=False, flow_index=False)
    _create('return_exceptions', with_documents=False, flow_index=False)
    _create('finance_exceptions', with_documents=True, flow_index=False)
    op.execute(f"INSERT INTO order_exceptions (id, flow, {COMMON}) "
               f"SELECT id, flow, {COMMON} FROM flow_exceptions WHERE flow NOT IN ('returns', 'finance') ORDER BY id")
    _advance_sequence('order_exceptions')
    op.execute(f"INSERT INTO return_exceptions (flow, {COMMON}) "
               f"SELECT flow, {COMMON} FROM flow_exceptions WHERE flow = 'returns' ORDER BY id")
    op.execute(f"INSERT INTO finance_exceptions (flow, documents, {COMMON}) "
               f"SELECT flow, documents, {COMMON} FROM flow_exceptions WHERE flow = 'finance' ORDER BY id")
    with op.batch_alter_table('flow_exceptions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_flow_exceptions_flow'))
    _drop('flow_exceptions')
