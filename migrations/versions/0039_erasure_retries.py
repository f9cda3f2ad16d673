"""erasure retries: failed or lost dataset rewrites are run again by the scheduler

``dataset_erasures`` gains ``attempts``, ``retry_at`` (a failed run's back-off) and
``started_at`` (a run older than the stale limit is taken to be lost); a partial index on
``data_records`` finds the rows still waiting to leave their file.

Revision ID: 0039
Revises: 0038
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.database

revision: str = "0039"
down_revision: str | None = "0038"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Time = app.core.database.UTCDateTime(timezone=True)
UNERASED = "state <> 'active' AND erasure_id IS NULL"


def upgrade() -> None:
    with op.batch_alter_table("dataset_erasures") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("retry_at", Time, nullable=True))
        batch.add_column(sa.Column("started_at", Time, nullable=True))
    op.create_index("ix_data_records_unerased", "data_records", ["dataset_id"],
                    postgresql_where=sa.text(UNERASED), sqlite_where=sa.text(UNERASED))


def downgrade() -> None:
    op.drop_index("ix_data_records_unerased", table_name="data_records")
    with op.batch_alter_table("dataset_erasures") as batch:
        batch.drop_column("started_at")
        batch.drop_column("retry_at")
        batch.drop_column("attempts")
