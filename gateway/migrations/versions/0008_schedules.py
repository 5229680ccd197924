"""schedules: a template run on a cron schedule, reviewed once; each occurrence claimed once

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 18:40:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'schedules',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('template', sa.String(length=500), nullable=False),
        sa.Column('target', sa.String(length=100), nullable=False),
        sa.Column('parameters', sa.JSON(), nullable=False),
        sa.Column('cron', sa.String(length=100), nullable=False),
        sa.Column('on_missed', sa.String(length=10), nullable=False),
        sa.Column('notify', sa.String(length=200), nullable=False),
        sa.Column('why', sa.Text(), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('status_reason', sa.Text(), nullable=False),
        sa.Column('kind', sa.String(length=10), nullable=False),
        sa.Column('code', sa.Text(), nullable=False),
        sa.Column('code_sha256', sa.String(length=64), nullable=False),
        sa.Column('record', sa.JSON(), nullable=False),
        sa.Column('review_task_id', sa.Integer(), nullable=True),
        sa.Column('next_run_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['review_task_id'], ['tasks.id']),
        sa.ForeignKeyConstraint(['user_id'], ['users.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name'),
    )
    op.create_index('ix_schedules_status', 'schedules', ['status'])
    op.create_index('ix_schedules_user_id', 'schedules', ['user_id'])
    op.create_table(
        'schedule_runs',
        sa.Column('schedule_id', sa.Integer(), nullable=False),
        sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('outcome', sa.String(length=20), nullable=False),
        sa.Column('task_id', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['schedule_id'], ['schedules.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['task_id'], ['tasks.id']),
        sa.PrimaryKeyConstraint('schedule_id', 'due_at'),
    )


def downgrade() -> None:
    op.drop_table('schedule_runs')
    op.drop_index('ix_schedules_user_id', table_name='schedules')
    op.drop_index('ix_schedules_status', table_name='schedules')
    op.drop_table('schedules')
