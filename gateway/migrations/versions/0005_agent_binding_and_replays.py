"""the gate holds: agent tokens bound to an agent name and targets; Slack requests seen, in the store;
Python auto-approval removed from stored policies

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 05:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('agent_name', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('agent_targets', sa.JSON(), nullable=True))
    op.create_table(
        'slack_seen_requests',
        sa.Column('signature', sa.String(length=64), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('signature'),
    )
    op.create_index('ix_slack_seen_requests_expires_at', 'slack_seen_requests', ['expires_at'], unique=False)
    # python_auto_approve = "unflagged" is gone (a per-cell scan cannot make Python safe): stored
    # policies that asked for it now review every Python cell
    targets = sa.table('targets', sa.column('name', sa.String), sa.column('policy', sa.JSON))
    conn = op.get_bind()
    for name, policy in conn.execute(sa.select(targets.c.name, targets.c.policy)).all():
        if isinstance(policy, dict) and policy.get('python_auto_approve') not in (None, 'never'):
            conn.execute(targets.update().where(targets.c.name == name)
                         .values(policy={**policy, 'python_auto_approve': 'never'}))


def downgrade() -> None:
    op.drop_index('ix_slack_seen_requests_expires_at', table_name='slack_seen_requests')
    op.drop_table('slack_seen_requests')
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.drop_column('agent_targets')
        batch_op.drop_column('agent_name')
