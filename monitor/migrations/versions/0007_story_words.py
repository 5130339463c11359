"""story words: short texts keep their content-word set (and its LSH band keys); band rows by item

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24

The fingerprints of items first seen in the last 14 days are computed again with this
revision's rules (content words, markup left out) and their band keys replaced, so that
stories keep merging across the upgrade; older items keep what they have. Band rows get an
index by item, so that the rows of items older than the story window can be pruned.
"""
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

REFRESH_DAYS = 14
CHUNK = 500


def upgrade() -> None:
    with op.batch_alter_table("fingerprints") as batch:
        batch.add_column(sa.Column("words", sa.LargeBinary))
    op.create_index("ix_story_bands_item", "story_bands", ["item_id"])
    _refresh()


def _refresh() -> None:
    from monitor import dedupe
    from monitor.model import join_text

    conn = op.get_bind()
    since = datetime.now(UTC) - timedelta(days=REFRESH_DAYS)
    if conn.dialect.name == "sqlite":
        since = since.replace(tzinfo=None)
    items = sa.table("items", sa.column("id"), sa.column("title"), sa.column("summary"), sa.column("content"),
                     sa.column("first_seen_at"))
    fingerprints = sa.table("fingerprints", sa.column("item_id"), sa.column("at"), sa.column("size"),
                            sa.column("signature"), sa.column("lead_key"), sa.column("title_key"),
                            sa.column("title"), sa.column("words"))
    bands = sa.table("story_bands", sa.column("band_key"), sa.column("at"), sa.column("item_id"))
    ids = list(conn.scalars(sa.select(items.c.id).where(items.c.first_seen_at >= since).order_by(items.c.id)))
    for start in range(0, len(ids), CHUNK):  # a chunk of texts in memory at a time
        chunk = ids[start:start + CHUNK]
        rows = conn.execute(
            sa.select(items.c.id, items.c.title, items.c.summary, items.c.content, fingerprints.c.at)
            .join(fingerprints, fingerprints.c.item_id == items.c.id).where(items.c.id.in_(chunk))).all()
        updates, new_bands = [], []
        for row in rows:
            fp = dedupe.fingerprint(row.title, join_text(row.summary, row.content))
            updates.append({"id": row.id, "size": fp.size, "signature": fp.signature, "lead_key": fp.lead_key,
                            "title_key": fp.title_key, "title": fp.title, "words": fp.words or None})
            new_bands += [{"band_key": b, "at": row.at, "item_id": row.id} for b in set(fp.bands)]
        if updates:
            conn.execute(fingerprints.update().where(fingerprints.c.item_id == sa.bindparam("id")).values(
                {c: sa.bindparam(c) for c in ("size", "signature", "lead_key", "title_key", "title", "words")}),
                updates)
        conn.execute(bands.delete().where(bands.c.item_id.in_(chunk)))
        if new_bands:
            conn.execute(bands.insert(), new_bands)


def downgrade() -> None:
    op.drop_index("ix_story_bands_item", "story_bands")
    with op.batch_alter_table("fingerprints") as batch:
        batch.drop_column("words")
