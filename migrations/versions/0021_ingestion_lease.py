"""ingestion lease on datasets

``ingest_worker`` and ``heartbeat_at`` let one delivery of the ingestion task own a
dataset's rows, so a duplicate delivery cannot delete what another is writing or has
finished, and let the scheduler re-send an ingestion whose message was lost.

Revision ID: 0021
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.database

revision: str = "0021"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("ingest_worker", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", app.core.database.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("ingest_worker")
