"""partial index on forgotten records

The lineage invariant's check (and its beat sweep) reads every forgotten record on each
run; a partial index keeps that an index scan over the forgotten few, not the table.

Revision ID: 0017
Revises: 0014
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FORGOTTEN = sa.text("state = 'forgotten'")


def upgrade() -> None:
    op.create_index("ix_data_records_forgotten", "data_records", ["dataset_id", "row_index"],
                    postgresql_where=FORGOTTEN, sqlite_where=FORGOTTEN)


def downgrade() -> None:
    op.drop_index("ix_data_records_forgotten", table_name="data_records")
