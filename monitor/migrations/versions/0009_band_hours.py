"""band hours: band rows hold their fingerprint's time in whole hours; briefs get 12 word bands of 4

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25

At a million stored items about a hundred unrelated items shared a band key with each new
one (same-topic briefs most of all), and the story lookup loaded and compared up to 50 of
them, each a random page read. Now fewer share one (a brief's content words in 12 bands of
4 instead of 16 of 3: 4.0e-5 of the pairs of unrelated corpus briefs instead of 2.3e-4), and
the lookup ranks those that do by time before it loads any: ``story_bands`` gets
``at_hour`` (hours since 1970 of the fingerprint's ``at``, as ``monitor.store._hour``
computes it). The table is made again and filled, as 0008 did, with the band keys of the
items first seen in the last 14 days, computed from their stored signatures and word sets
(no text is read again). Older items get none: pruning would drop them anyway.
"""
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

REFRESH_DAYS = 14
CHUNK = 2000
#: ``monitor.store._hour(at)`` in SQL, per dialect.
HOURS = {"sqlite": "CAST(strftime('%s', at) AS INTEGER) / 3600",
         "postgresql": "CAST(floor(extract(epoch FROM at) / 3600) AS BIGINT)"}


def upgrade() -> None:
    _make_again(sa.Column("at_hour", sa.Integer))
    _fill()


def _make_again(*columns: sa.Column) -> None:
    """``story_bands`` dropped and made again, empty: band key, item id, ``columns``."""
    op.drop_index("ix_story_bands_item", "story_bands")
    op.drop_table("story_bands")
    op.create_table(
        "story_bands",
        sa.Column("band_key", sa.BigInteger, primary_key=True),
        sa.Column("item_id", sa.Integer, primary_key=True),
        *columns,
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
    hour = sa.literal_column(HOURS[conn.dialect.name]).label("at_hour")
    bands = sa.table("story_bands", sa.column("band_key"), sa.column("item_id"), sa.column("at_hour"))
    ids = list(conn.scalars(sa.select(items.c.id).where(items.c.first_seen_at >= since).order_by(items.c.id)))
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start:start + CHUNK]
        rows = conn.execute(sa.select(fingerprints.c.item_id, fingerprints.c.size, fingerprints.c.signature,
                                      fingerprints.c.words, hour).where(fingerprints.c.item_id.in_(chunk))).all()
        new = [{"band_key": b, "item_id": r.item_id, "at_hour": r.at_hour}
               for r in rows for b in set(dedupe.bands_of(bytes(r.signature or b""), r.size or 0, bytes(r.words or b"")))]
        if new:
            conn.execute(bands.insert(), new)


def downgrade() -> None:
    # back to 0008's layout, empty: 0008's code finds stories again from the next poll on
    _make_again()
