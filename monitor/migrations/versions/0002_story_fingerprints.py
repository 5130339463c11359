"""story fingerprints: fingerprints and LSH band keys of items, repost updates in the outbox

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

Items stored before this revision get fingerprints too when they were first seen in the last
14 days, so stories keep merging across the upgrade; older items stay stories of their own.
"""
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
BACKFILL_DAYS = 14


def upgrade() -> None:
    op.create_table(
        "fingerprints",
        sa.Column("item_id", sa.Integer, sa.ForeignKey("items.id"), primary_key=True),
        sa.Column("story_id", sa.Integer, sa.ForeignKey("stories.id"), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("signature", sa.LargeBinary, nullable=False),
        sa.Column("lead_key", sa.String(40)),
        sa.Column("title_key", sa.String(40)),
        sa.Column("title", sa.Text, nullable=False),
    )
    op.create_index("ix_fingerprints_lead", "fingerprints", ["lead_key", "at"])
    op.create_index("ix_fingerprints_title", "fingerprints", ["title_key", "at"])
    op.create_index("ix_fingerprints_story", "fingerprints", ["story_id"])
    # One row per band key of an item: the primary key is the lookup index, and on SQLite the
    # table is that index alone (WITHOUT ROWID): 16 random-key inserts per item stay cheap.
    op.create_table(
        "story_bands",
        sa.Column("band_key", sa.BigInteger, primary_key=True),
        sa.Column("at", TS, primary_key=True),
        sa.Column("item_id", sa.Integer, primary_key=True),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("kind", sa.String(20), nullable=False, server_default="alert"))
        batch.drop_constraint("uq_deliveries_alert_channel", type_="unique")
        batch.create_unique_constraint("uq_deliveries_alert_channel_kind", ["alert_id", "channel", "kind"])
    _backfill()


def _backfill() -> None:
    from monitor import dedupe
    from monitor.model import join_text

    conn = op.get_bind()
    since = datetime.now(UTC) - timedelta(days=BACKFILL_DAYS)
    if conn.dialect.name == "sqlite":
        since = since.replace(tzinfo=None)
    items = sa.table("items", sa.column("id"), sa.column("story_id"), sa.column("title"), sa.column("summary"),
                     sa.column("content"), sa.column("published_at"), sa.column("first_seen_at"))
    fingerprints = sa.table("fingerprints", sa.column("item_id"), sa.column("story_id"), sa.column("at"),
                            sa.column("size"), sa.column("signature"), sa.column("lead_key"),
                            sa.column("title_key"), sa.column("title"))
    bands = sa.table("story_bands", sa.column("band_key"), sa.column("at"), sa.column("item_id"))
    rows = conn.execute(sa.select(items).where(items.c.first_seen_at >= since).order_by(items.c.id)).all()
    for row in rows:
        at = row.first_seen_at if row.published_at is None else min(row.published_at, row.first_seen_at)
        fp = dedupe.fingerprint(row.title, join_text(row.summary, row.content))
        conn.execute(fingerprints.insert().values(
            item_id=row.id, story_id=row.story_id, at=at, size=fp.size, signature=fp.signature,
            lead_key=fp.lead_key, title_key=fp.title_key, title=fp.title))
        if fp.bands:
            conn.execute(bands.insert(), [{"band_key": b, "at": at, "item_id": row.id} for b in set(fp.bands)])


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_constraint("uq_deliveries_alert_channel_kind", type_="unique")
        batch.create_unique_constraint("uq_deliveries_alert_channel", ["alert_id", "channel"])
        batch.drop_column("kind")
    op.drop_table("story_bands")
    op.drop_table("fingerprints")
