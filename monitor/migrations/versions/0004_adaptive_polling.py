"""adaptive polling: each source's next poll, current interval, publishing rate, body hash

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sources") as batch:
        batch.add_column(sa.Column("next_poll_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("poll_interval", sa.Float))  # seconds
        batch.add_column(sa.Column("items_per_day", sa.Float))
        batch.add_column(sa.Column("body_hash", sa.String(40)))


def downgrade() -> None:
    with op.batch_alter_table("sources") as batch:
        for column in ("body_hash", "items_per_day", "poll_interval", "next_poll_at"):
            batch.drop_column(column)
