"""story bands: 8 LSH bands of 3 per article instead of 16 of 4, and band rows without a time

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24

Each band row is a random place in the band index: at a million stored items they were most
of the pages a poll writes. ``story_bands`` is made again as (band key, item id) — the story
lookup checks the time on the fingerprints it loads — and filled with the new band keys of
the items first seen in the last 14 days, computed from their stored signatures and word
sets (no text is read again). Older items get none: pruning would drop them anyway.
"""
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

REFRESH_DAYS = 14
CHUNK = 2000


def upgrade() -> None:
    _make_again()
    _fill()


def _make_again(*columns: sa.Column) -> None:
    """``story_bands`` dropped and made again, empty: band key, ``columns``, item id."""
    op.drop_index("ix_story_bands_item", "story_bands")
    op.drop_table("story_bands")
    op.create_table(
        "story_bands",
        sa.Column("band_key", sa.BigInteger, primary_key=True),
        *columns,
        sa.Column("item_id", sa.Integer, primary_key=True),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_story_bands_item", "story_bands", ["item_id"])


def _fill() -> None:
    from monitor import dedupe

    conn = op.get_bind()
    since = datetime.now(UTC) - timedelta(days=REFRESH_DAYS)
    if conn.dialect.name == "sqlite":
        since = since.replace(tzinfo=None)
    items = sa.table("items", sa.column("id"), sa.column("first_seen_at"))
    fingerprints = sa.table("fingerprints", sa.column("item_id"), sa.column("size"), sa.column("signature"),
                            sa.column("words"))
    bands = sa.table("story_bands", sa.column("band_key"), sa.column("item_id"))
    ids = list(conn.scalars(sa.select(items.c.id).where(items.c.first_seen_at >= since).order_by(items.c.id)))
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start:start + CHUNK]
        rows = conn.execute(sa.select(fingerprints.c.item_id, fingerprints.c.size, fingerprints.c.signature,
                                      fingerprints.c.words).where(fingerprints.c.item_id.in_(chunk))).all()
        new = [{"band_key": b, "item_id": r.item_id}
               for r in rows for b in set(dedupe.bands_of(bytes(r.signature or b""), r.size or 0, bytes(r.words or b"")))]
        if new:
            conn.execute(bands.insert(), new)


def downgrade() -> None:
    # back to 0007's layout, empty: 0007's code finds stories again from the next poll on
    _make_again(sa.Column("at", sa.DateTime(timezone=True), primary_key=True))
