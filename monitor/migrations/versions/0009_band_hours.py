"""band hours: each band row holds its fingerprint's time, in whole hours

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25

The story lookup ranks the stored items that share a band key with a new one by how near
in time they are, and leaves out those outside the story window, before it loads any
fingerprint: at a million stored items, about a hundred unrelated ones share a key with
each new item, and loading each was a random page read. ``story_bands`` gets ``at_hour``
(hours since 1970 of the fingerprint's ``at``, as ``monitor.store._hour`` computes it),
filled in from the fingerprints.
"""
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

HOURS = {"sqlite": "CAST(strftime('%s', f.at) AS INTEGER) / 3600",
         "postgresql": "CAST(floor(extract(epoch FROM f.at) / 3600) AS BIGINT)"}


def upgrade() -> None:
    op.add_column("story_bands", sa.Column("at_hour", sa.Integer))
    conn = op.get_bind()
    hours = HOURS[conn.dialect.name]
    conn.exec_driver_sql(f"UPDATE story_bands SET at_hour = (SELECT {hours} FROM fingerprints AS f "
                         "WHERE f.item_id = story_bands.item_id)")


def downgrade() -> None:
    op.drop_column("story_bands", "at_hour")
