"""a Slack user's direct messages to cellgate run on the target they chose (``target NAME``)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 19:20:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'slack_dm_targets',
        sa.Column('team_id', sa.String(length=64), nullable=False),
        sa.Column('slack_user_id', sa.String(length=64), nullable=False),
        sa.Column('target', sa.String(length=100), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('team_id', 'slack_user_id'),
    )


def downgrade() -> None:
    op.drop_table('slack_dm_targets')
