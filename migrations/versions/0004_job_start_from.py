"""job.start_checkpoint_id and job.start_from: a job's weights may start from a registered model

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 23:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("start_checkpoint_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("start_from", sa.JSON(), nullable=True))
        batch_op.create_index(batch_op.f("ix_job_start_checkpoint_id"), ["start_checkpoint_id"], unique=False)
        batch_op.create_foreign_key("fk_job_start_checkpoint_id", "checkpoint", ["start_checkpoint_id"], ["id"],
                                    ondelete="SET NULL")  # fmt: skip


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_constraint("fk_job_start_checkpoint_id", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_job_start_checkpoint_id"))
        batch_op.drop_column("start_from")
        batch_op.drop_column("start_checkpoint_id")
