"""band sketches: band rows keep their fingerprint's sketch

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25

At a million stored items about 26 unrelated items share a band key with each new story, and
the story lookup loaded the fingerprint of each (a random page read) only to find it was
not a copy. ``story_bands`` gets ``sketch``: ``monitor.dedupe.sketch`` of the fingerprint's
signature (its values' two low bits, 16 bytes), from which the lookup sees that most of
them cannot be one story before it loads them. Rows made before this revision keep NULL:
the lookup loads those as before, and pruning drops them within the story window.
"""
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("story_bands", sa.Column("sketch", sa.LargeBinary, nullable=True))


def downgrade() -> None:
    op.drop_column("story_bands", "sketch")
