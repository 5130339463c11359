"""replicas: the replica registry, leases on sources and channels, retired sources

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "replicas",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True)),
    )
    with op.batch_alter_table("sources") as batch:
        batch.add_column(sa.Column("leased_by", sa.String(200)))
        batch.add_column(sa.Column("lease_until", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("retired_at", sa.DateTime(timezone=True)))  # no longer in the config
        batch.create_index("ix_sources_next_poll", ["next_poll_at"])
    with op.batch_alter_table("channel_state") as batch:
        batch.add_column(sa.Column("leased_by", sa.String(200)))
        batch.add_column(sa.Column("lease_until", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("channel_state") as batch:
        batch.drop_column("lease_until")
        batch.drop_column("leased_by")
    with op.batch_alter_table("sources") as batch:
        batch.drop_index("ix_sources_next_poll")
        for column in ("retired_at", "lease_until", "leased_by"):
            batch.drop_column(column)
    op.drop_table("replicas")
