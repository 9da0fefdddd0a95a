"""api_key.from_environment: the key came from EMBEDTRAIN_ADMIN_KEY (embedtrain-admin bootstrap)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 15:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_key", schema=None) as batch_op:
        batch_op.add_column(sa.Column("from_environment", sa.Boolean(), server_default=sa.false(), nullable=False))
    # bootstrap stored EMBEDTRAIN_ADMIN_KEY as an admin key named "bootstrap" before this column told it apart
    op.execute(sa.text("UPDATE api_key SET from_environment = :yes WHERE name = 'bootstrap' AND is_admin = :yes")
               .bindparams(yes=True))  # fmt: skip


def downgrade() -> None:
    with op.batch_alter_table("api_key", schema=None) as batch_op:
        batch_op.drop_column("from_environment")
