"""a task records its author's Idempotency-Key and request fingerprint, the key unique per user

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 19:30:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tasks') as batch:
        batch.add_column(sa.Column('idempotency_key', sa.String(length=200), nullable=True))
        batch.add_column(sa.Column('request_sha256', sa.String(length=64), nullable=True))
        batch.create_unique_constraint('uq_tasks_user_idempotency_key', ['user_id', 'idempotency_key'])


def downgrade() -> None:
    with op.batch_alter_table('tasks') as batch:
        batch.drop_constraint('uq_tasks_user_idempotency_key', type_='unique')
        batch.drop_column('request_sha256')
        batch.drop_column('idempotency_key')
