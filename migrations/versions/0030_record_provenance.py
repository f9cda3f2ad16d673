"""record provenance: each data record's source and ingestion time

Datasets may name a source column (or one source for the whole file); every record keeps
its source and when it was ingested, so lineage can say which model versions hold records
of a source and removal requests can select by source or ingestion time.

Revision ID: 0030
Revises: 0017
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.database

revision: str = "0030"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("data_records") as batch:
        batch.add_column(sa.Column("source", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("ingested_at", app.core.database.UTCDateTime(timezone=True), nullable=True))
    op.create_index("ix_data_records_dataset_source", "data_records", ["dataset_id", "source"])


def downgrade() -> None:
    op.drop_index("ix_data_records_dataset_source", table_name="data_records")
    with op.batch_alter_table("data_records") as batch:
        batch.drop_column("ingested_at")
        batch.drop_column("source")
