"""policy on targets; risk, row estimate, review rule and approval expiry on tasks

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('targets') as batch:
        batch.add_column(sa.Column('policy', sa.JSON(), nullable=False, server_default='{}'))
    with op.batch_alter_table('tasks') as batch:
        batch.add_column(sa.Column('risk', sa.JSON(), nullable=False, server_default='{}'))
        batch.add_column(sa.Column('row_estimate', sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column('review_rule', sa.JSON(), nullable=False, server_default='{}'))
        batch.add_column(sa.Column('approved_at', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('tasks') as batch:
        for name in ('expires_at', 'approved_at', 'review_rule', 'row_estimate', 'risk'):
            batch.drop_column(name)
    with op.batch_alter_table('targets') as batch:
        batch.drop_column('policy')
