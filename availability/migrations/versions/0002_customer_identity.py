"""Customer identity map (availability/flows/customers/store.py): `customers` (each
Shopify customer or guest order and the ERP party it maps to, with the rule and
confidence of the match) and `customer_keys` (normalized e-mail / phone / address ->
party; the primary key makes one party per e-mail address).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Create the identity map's two tables."""
    op.create_table('customer_keys',
    sa.Column('key', sa.String(length=400), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('party_id', sa.Integer(), nullable=True),
    sa.Column('source', sa.String(length=300), nullable=True),
    sa.Column('claimed_by', sa.String(length=100), nullable=True),
    sa.Column('claimed_ms', sa.BigInteger(), nullable=True),
    sa.Column('created_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    with op.batch_alter_table('customer_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_customer_keys_party_id'), ['party_id'], unique=False)

    op.create_table('customers',
    sa.Column('source', sa.String(length=300), nullable=False),
    sa.Column('shop', sa.String(length=200), nullable=False),
    sa.Column('customer_id', sa.String(length=64), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=True),
    sa.Column('payload_updated_at', sa.String(length=64), nullable=True),
    sa.Column('party_id', sa.Integer(), nullable=True),
    sa.Column('rule', sa.String(length=32), nullable=True),
    sa.Column('confidence', sa.Float(), nullable=True),
    sa.Column('matched_key', sa.String(length=400), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('merged_into', sa.String(length=300), nullable=True),
    sa.Column('received_ms', sa.BigInteger(), nullable=False),
    sa.Column('matched_ms', sa.BigInteger(), nullable=True),
    sa.Column('updated_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('source')
    )
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_customers_party_id'), ['party_id'], unique=False)



def downgrade() -> None:
    """Drop them (the ERP parties stay in the ERP)."""
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_customers_party_id'))

    op.drop_table('customers')
    with op.batch_alter_table('customer_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_customer_keys_party_id'))

    op.drop_table('customer_keys')
