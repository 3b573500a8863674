"""models.input_shapes, input_layout and external_files: a model version's import options and
its side files (an ONNX model's external data, location -> sha256).

Rows of 0003 get no input shapes, the layout "nchw" (the model's declared input shapes) and no
side files: what they were imported with before.

Revision ID: 0006
Revises: 0005
Created: 2026-12-07 03:21:43.075263
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.add_column(sa.Column('input_shapes', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('input_layout', sa.String(length=8),
                                      server_default='nchw', nullable=False))
        batch_op.add_column(sa.Column('external_files', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_column('external_files')
        batch_op.drop_column('input_layout')
        batch_op.drop_column('input_shapes')
