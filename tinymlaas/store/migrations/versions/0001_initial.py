"""The schema of tinymlaas 0.1.0, the release before migrations: every table as it was then.

Revision ID: 0001
Revises: -
Created: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('artifacts',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('model_sha256', sa.String(length=64), nullable=False),
    sa.Column('backend', sa.String(length=16), nullable=False),
    sa.Column('precision', sa.String(length=16), nullable=False),
    sa.Column('features', sa.String(length=255), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('figures', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    with op.batch_alter_table('artifacts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_artifacts_model_sha256'), ['model_sha256'], unique=False)

    op.create_table('campaigns',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('model', sa.String(length=128), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('group_name', sa.String(length=64), nullable=False),
    sa.Column('endpoints', sa.JSON(), nullable=True),
    sa.Column('stages', sa.JSON(), nullable=True),
    sa.Column('success_threshold', sa.Float(), nullable=False),
    sa.Column('error_threshold', sa.Float(), nullable=False),
    sa.Column('concurrency', sa.Integer(), nullable=False),
    sa.Column('options', sa.JSON(), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('stage', sa.Integer(), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.Column('finished_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('capability_snapshots',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('endpoint', sa.String(length=255), nullable=False),
    sa.Column('taken_at', sa.Float(), nullable=False),
    sa.Column('source', sa.String(), nullable=False),
    sa.Column('data', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('capability_snapshots', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_capability_snapshots_endpoint'), ['endpoint'], unique=False)

    op.create_table('deployments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('endpoint', sa.String(length=255), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('model', sa.String(length=128), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('model_sha256', sa.String(length=64), nullable=False),
    sa.Column('options', sa.JSON(), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('backend', sa.String(length=16), nullable=True),
    sa.Column('precision', sa.String(length=16), nullable=True),
    sa.Column('method', sa.String(length=8), nullable=True),
    sa.Column('object_path', sa.String(length=16), nullable=True),
    sa.Column('artifact_sha256', sa.String(length=64), nullable=True),
    sa.Column('package_size', sa.Integer(), nullable=True),
    sa.Column('decision', sa.JSON(), nullable=True),
    sa.Column('inference', sa.JSON(), nullable=True),
    sa.Column('previous', sa.JSON(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('result_code', sa.Integer(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.Column('finished_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.create_index('ix_deployments_campaign_state', ['campaign_id', 'state'], unique=False)
        batch_op.create_index(batch_op.f('ix_deployments_endpoint'), ['endpoint'], unique=False)

    op.create_table('devices',
    sa.Column('endpoint', sa.String(length=255), nullable=False),
    sa.Column('first_seen', sa.Float(), nullable=False),
    sa.Column('last_seen', sa.Float(), nullable=False),
    sa.Column('lwm2m_version', sa.String(), nullable=False),
    sa.Column('profile', sa.String(), nullable=True),
    sa.Column('capability_source', sa.String(), nullable=True),
    sa.Column('tags', sa.String(), nullable=False),
    sa.PrimaryKeyConstraint('endpoint')
    )
    op.create_table('events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ts', sa.Float(), nullable=False),
    sa.Column('endpoint', sa.String(length=255), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_endpoint_ts', ['endpoint', 'ts'], unique=False)

    op.create_table('groups',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('selector', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('models',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('format', sa.String(length=16), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('calibration_sha256', sa.String(length=64), nullable=True),
    sa.Column('added_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.create_index('ix_models_name_version', ['name', 'version'], unique=True)
        batch_op.create_index(batch_op.f('ix_models_sha256'), ['sha256'], unique=False)

    op.create_table('object_definitions',
    sa.Column('object_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('xml', sa.Text(), nullable=True),
    sa.Column('imported_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('object_id')
    )
    op.create_table('observed_values',
    sa.Column('endpoint', sa.String(length=255), nullable=False),
    sa.Column('path', sa.String(length=64), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.Column('content_format', sa.Integer(), nullable=True),
    sa.Column('data', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('endpoint', 'path')
    )
    op.create_table('registrations',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('endpoint', sa.String(length=255), nullable=False),
    sa.Column('address', sa.String(), nullable=False),
    sa.Column('lifetime', sa.Integer(), nullable=False),
    sa.Column('binding', sa.String(), nullable=False),
    sa.Column('lwm2m_version', sa.String(), nullable=False),
    sa.Column('queue_mode', sa.Boolean(), nullable=False),
    sa.Column('sms', sa.String(), nullable=True),
    sa.Column('links', sa.Text(), nullable=True),
    sa.Column('registered_at', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('registrations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_registrations_endpoint'), ['endpoint'], unique=True)



def downgrade() -> None:
    with op.batch_alter_table('registrations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_registrations_endpoint'))

    op.drop_table('registrations')
    op.drop_table('observed_values')
    op.drop_table('object_definitions')
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_models_sha256'))
        batch_op.drop_index('ix_models_name_version')

    op.drop_table('models')
    op.drop_table('groups')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_endpoint_ts')

    op.drop_table('events')
    op.drop_table('devices')
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_deployments_endpoint'))
        batch_op.drop_index('ix_deployments_campaign_state')

    op.drop_table('deployments')
    with op.batch_alter_table('capability_snapshots', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_capability_snapshots_endpoint'))

    op.drop_table('capability_snapshots')
    op.drop_table('campaigns')
    with op.batch_alter_table('artifacts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_artifacts_model_sha256'))

    op.drop_table('artifacts')
