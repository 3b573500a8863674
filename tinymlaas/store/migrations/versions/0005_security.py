"""device_credentials, bootstrap_configs, package_sequences: DTLS-PSK credentials per endpoint
(encrypted), what the bootstrap server writes, and the anti-rollback sequence of each package.

Revision ID: 0005
Revises: 0004
Created: 2026-12-07 06:06:17.317232
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('bootstrap_configs',
    sa.Column('scope', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('target', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('server_uri', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('security_mode', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
    sa.Column('short_server_id', sa.Integer(), nullable=False),
    sa.Column('lifetime', sa.Integer(), nullable=False),
    sa.Column('binding', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
    sa.Column('trust_anchor', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('scope', 'target')
    )
    op.create_table('device_credentials',
    sa.Column('endpoint', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('purpose', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('identity', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('key', sa.LargeBinary(), nullable=True),
    sa.Column('pending_key', sa.LargeBinary(), nullable=True),
    sa.Column('key_id', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('rotated_at', sa.Float(), nullable=True),
    sa.Column('revoked_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('endpoint', 'purpose')
    )
    with op.batch_alter_table('device_credentials', schema=None) as batch_op:
        batch_op.create_index('ix_device_credentials_purpose_identity', ['purpose', 'identity'], unique=True)

    op.create_table('package_sequences',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('version', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('artifact_key', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('artifact_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('sealed_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('package_sequences', schema=None) as batch_op:
        batch_op.create_index('ix_package_sequences_build', ['name', 'version', 'artifact_key'], unique=True)



def downgrade() -> None:
    with op.batch_alter_table('package_sequences', schema=None) as batch_op:
        batch_op.drop_index('ix_package_sequences_build')

    op.drop_table('package_sequences')
    with op.batch_alter_table('device_credentials', schema=None) as batch_op:
        batch_op.drop_index('ix_device_credentials_purpose_identity')

    op.drop_table('device_credentials')
    op.drop_table('bootstrap_configs')
