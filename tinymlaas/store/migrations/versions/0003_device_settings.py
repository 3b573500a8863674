"""device_settings, stored_profiles, held_requests: per-device settings (profile, figures, queue
mode), profiles added at run time, requests held for queue-mode devices.

Revision ID: 0003
Revises: 0002
Created: 2026-12-07 03:13:00.479840
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('device_settings',
    sa.Column('endpoint', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('profile', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('sram_free', sa.Integer(), nullable=True),
    sa.Column('flash_free', sa.Integer(), nullable=True),
    sa.Column('runtimes', sa.JSON(), nullable=True),
    sa.Column('awake_s', sa.Float(), nullable=True),
    sa.Column('queue_mode', sa.Boolean(), nullable=True),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('endpoint')
    )
    op.create_table('held_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('endpoint', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('operation', sa.JSON(), nullable=True),
    sa.Column('content_format', sa.Integer(), nullable=True),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('deadline', sa.Float(), nullable=False),
    sa.Column('finished_at', sa.Float(), nullable=True),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('held_requests', schema=None) as batch_op:
        batch_op.create_index('ix_held_requests_endpoint_state', ['endpoint', 'state'], unique=False)

    op.create_table('stored_profiles',
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('toml', sa.Text(), nullable=True),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )


def downgrade() -> None:
    op.drop_table('stored_profiles')
    with op.batch_alter_table('held_requests', schema=None) as batch_op:
        batch_op.drop_index('ix_held_requests_endpoint_state')

    op.drop_table('held_requests')
    op.drop_table('device_settings')
