"""a notebook task keeps the notebook it executed

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 18:10:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'task_notebooks',
        sa.Column('task_id', sa.Integer(), nullable=False),
        sa.Column('notebook', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('task_id'),
    )


def downgrade() -> None:
    op.drop_table('task_notebooks')
