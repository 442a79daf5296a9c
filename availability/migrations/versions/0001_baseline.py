"""Baseline: every table the code defined before migrations existed.

Rule and master-data store (availability/rules/models.py: store_version, locations,
channels, rules, rule_changes, master_changes, sku_categories, api_keys, Shopify item and
location mappings) and the order-to-ERP flow (availability/flows/orders/store.py:
order_documents, order_document_history, order_webhooks, order_exceptions).

A database made by `metadata.create_all` before this revision already has some or all
of these tables: only the missing ones are created (with their indexes), the existing
ones are adopted as they are, so `upgrade head` is the one step for old and new
databases alike.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = '0001'
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Create what a pre-migration database lacks (all of it, for a new one)."""
    bind = op.get_bind()
    existing = set(sa.inspect(bind).get_table_names())
    created: set[str] = set()

    def _create(name: str, *columns) -> None:
        if name not in existing:
            op.create_table(name, *columns)
            created.add(name)

    def _index(table: str, name: str, columns: list[str], unique: bool = False) -> None:
        if table in created:
            op.create_index(name, table, columns, unique=unique)

    _create('api_keys',
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('scopes', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('key_hash')
    )
    _create('channels',
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('priority', sa.BigInteger(), nullable=False),
    sa.Column('locations', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('location_groups', sa.JSON(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    _create('locations',
    sa.Column('code', sa.String(), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('type', sa.String(), nullable=False),
    sa.Column('priority', sa.BigInteger(), nullable=False),
    sa.Column('ships', sa.Boolean(), nullable=False),
    sa.Column('pickup', sa.Boolean(), nullable=False),
    sa.Column('sells_in_store', sa.Boolean(), nullable=False),
    sa.Column('groups', sa.JSON(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('code')
    )
    _create('master_changes',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('entity', sa.String(), nullable=False),
    sa.Column('key', sa.String(), nullable=False),
    sa.Column('action', sa.String(), nullable=False),
    sa.Column('actor', sa.String(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('store_version', sa.BigInteger(), nullable=False),
    sa.Column('before', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('after', sa.JSON(none_as_null=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    _index('master_changes', 'ix_master_changes_entity_key', ['entity', 'key'], unique=False)
    _create('rule_changes',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('rule_id', sa.BigInteger(), nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.Column('action', sa.String(), nullable=False),
    sa.Column('actor', sa.String(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('store_version', sa.BigInteger(), nullable=False),
    sa.Column('before', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('after', sa.JSON(none_as_null=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('rule_id', 'version', name='uq_rule_changes_rule_version')
    )
    _create('rules',
    sa.Column('id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('kind', sa.String(), nullable=False),
    sa.Column('units', sa.BigInteger(), nullable=False),
    sa.Column('percent', sa.Float(), nullable=False),
    sa.Column('sku', sa.String(), nullable=True),
    sa.Column('category', sa.String(), nullable=True),
    sa.Column('location', sa.String(), nullable=True),
    sa.Column('location_group', sa.String(), nullable=True),
    sa.Column('channel', sa.String(), nullable=True),
    sa.Column('priority', sa.BigInteger(), nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    _index('rules', 'ix_rules_kind', ['kind'], unique=False)
    _index('rules', 'ix_rules_sku', ['sku'], unique=False)
    _create('shopify_item_mappings',
    sa.Column('sku', sa.String(), nullable=False),
    sa.Column('inventory_item_gid', sa.String(), nullable=False),
    sa.PrimaryKeyConstraint('sku')
    )
    _create('shopify_location_mappings',
    sa.Column('channel', sa.String(), nullable=False),
    sa.Column('location', sa.String(), nullable=False),
    sa.Column('shopify_location_gid', sa.String(), nullable=False),
    sa.PrimaryKeyConstraint('channel', 'location')
    )
    _create('sku_categories',
    sa.Column('sku', sa.String(), nullable=False),
    sa.Column('category', sa.String(), nullable=False),
    sa.PrimaryKeyConstraint('sku')
    )
    _create('store_version',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.CheckConstraint('id = 1', name='store_version_single_row'),
    sa.PrimaryKeyConstraint('id')
    )
    _create('order_document_history',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('reference', sa.String(length=200), nullable=False),
    sa.Column('at_ms', sa.BigInteger(), nullable=False),
    sa.Column('from_state', sa.String(length=32), nullable=True),
    sa.Column('to_state', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('correlation_id', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    _index('order_document_history', 'ix_order_document_history_reference', ['reference'], unique=False)
    _create('order_documents',
    sa.Column('reference', sa.String(length=200), nullable=False),
    sa.Column('shop', sa.String(length=200), nullable=False),
    sa.Column('order_id', sa.String(length=64), nullable=True),
    sa.Column('state', sa.String(length=32), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=True),
    sa.Column('payload_updated_at', sa.String(length=64), nullable=True),
    sa.Column('paid', sa.Boolean(), nullable=False),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('erp_sale_id', sa.Integer(), nullable=True),
    sa.Column('posted_version', sa.String(length=64), nullable=True),
    sa.Column('received_ms', sa.BigInteger(), nullable=False),
    sa.Column('posted_ms', sa.BigInteger(), nullable=True),
    sa.Column('confirmed_ms', sa.BigInteger(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('correlation_id', sa.String(length=64), nullable=True),
    sa.Column('updated_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('reference')
    )
    _create('order_exceptions',
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
    sa.PrimaryKeyConstraint('id')
    )
    _index('order_exceptions', 'ix_order_exceptions_reference', ['reference'], unique=False)
    _create('order_webhooks',
    sa.Column('webhook_id', sa.String(length=200), nullable=False),
    sa.Column('topic', sa.String(length=64), nullable=False),
    sa.Column('reference', sa.String(length=200), nullable=True),
    sa.Column('at_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('webhook_id')
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table('order_webhooks')
    op.drop_index('ix_order_exceptions_reference', table_name='order_exceptions')
    op.drop_table('order_exceptions')
    op.drop_table('order_documents')
    op.drop_index('ix_order_document_history_reference', table_name='order_document_history')
    op.drop_table('order_document_history')
    op.drop_table('store_version')
    op.drop_table('sku_categories')
    op.drop_table('shopify_location_mappings')
    op.drop_table('shopify_item_mappings')
    op.drop_index('ix_rules_sku', table_name='rules')
    op.drop_index('ix_rules_kind', table_name='rules')
    op.drop_table('rules')
    op.drop_table('rule_changes')
    op.drop_index('ix_master_changes_entity_key', table_name='master_changes')
    op.drop_table('master_changes')
    op.drop_table('locations')
    op.drop_table('channels')
    op.drop_table('api_keys')
