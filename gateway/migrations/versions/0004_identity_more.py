"""identity: the CLI's state on a sign-in, one-time codes looked up by hash

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 10:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('login_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('client_state', sa.String(length=128), nullable=True))
        batch_op.create_index(batch_op.f('ix_login_requests_code_hash'), ['code_hash'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('login_requests', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_login_requests_code_hash'))
        batch_op.drop_column('client_state')
