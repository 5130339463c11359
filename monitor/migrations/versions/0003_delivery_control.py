"""delivery control: dead letters, rate-limit folding, digests, silences, operator notices

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

Existing outbox rows keep their state; their ``queued_at`` (what ``delivery.max_age`` is
measured from) is their creation time.
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "silences",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("watchlist", sa.String(200), nullable=False),
        sa.Column("query", sa.Text),
        sa.Column("source", sa.String(200)),
        sa.Column("starts_at", TS, nullable=False),
        sa.Column("ends_at", TS, nullable=False),
        sa.Column("comment", sa.Text, nullable=False, server_default=""),
        sa.Column("created_by", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_silences_ends", "silences", ["ends_at"])
    op.create_table(
        "digests",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("channel", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),  # digest | rate_limit
        sa.Column("entries", sa.Integer, nullable=False),
        sa.Column("folded", sa.Integer, nullable=False),
        sa.Column("sent_at", TS, nullable=False),
    )
    op.create_index("ix_digests_channel_sent", "digests", ["channel", "sent_at"])
    op.create_table(
        "channel_state",
        sa.Column("channel", sa.String(200), primary_key=True),
        sa.Column("last_digest_at", TS),
        sa.Column("next_digest_at", TS),
        sa.Column("digest_failures", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "notices",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),  # pending | sent | dead
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("sent_at", TS),
    )
    op.create_index("ix_notices_due", "notices", ["status", "next_attempt_at"])
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("queued_at", TS))
        batch.add_column(sa.Column("folded", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("digest_id", sa.Integer))
        batch.add_column(sa.Column("silence_id", sa.Integer))
        batch.add_column(sa.Column("dead_at", TS))
    op.execute("UPDATE deliveries SET queued_at = created_at")
    op.create_index("ix_deliveries_channel_sent", "deliveries", ["channel", "sent_at"])
    op.create_index("ix_deliveries_alert", "deliveries", ["alert_id"])
    op.create_index("ix_alerts_created", "alerts", ["created_at"])
    with op.batch_alter_table("sources") as batch:
        batch.add_column(sa.Column("failure_notice_at", TS))


def downgrade() -> None:
    with op.batch_alter_table("sources") as batch:
        batch.drop_column("failure_notice_at")
    op.drop_index("ix_alerts_created", "alerts")
    op.drop_index("ix_deliveries_alert", "deliveries")
    op.drop_index("ix_deliveries_channel_sent", "deliveries")
    with op.batch_alter_table("deliveries") as batch:
        for column in ("dead_at", "silence_id", "digest_id", "folded", "queued_at"):
            batch.drop_column(column)
    op.drop_table("notices")
    op.drop_table("channel_state")
    op.drop_table("digests")
    op.drop_table("silences")
