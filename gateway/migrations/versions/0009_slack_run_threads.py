"""a template run started from Slack keeps the direct message its result is threaded under

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 18:30:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'slack_run_threads',
        sa.Column('task_id', sa.Integer(), nullable=False),
        sa.Column('slack_user_id', sa.String(length=64), nullable=False),
        sa.Column('channel', sa.String(length=64), nullable=False),
        sa.Column('ts', sa.String(length=32), nullable=False),
        sa.Column('shown_status', sa.String(length=20), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('task_id'),
    )


def downgrade() -> None:
    op.drop_table('slack_run_threads')
