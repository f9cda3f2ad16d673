"""suppression list: forgotten stays forgotten

``suppressions`` holds the keyed subject hashes and record keys of forgotten records;
ingestion keeps matching rows out (``data_records.state = 'suppressed'``) and counts them
on the dataset (``datasets.suppressed_count``).

Revision ID: 0036
Revises: 0035
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.database

revision: str = "0036"
down_revision: str | None = "0035"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Time = app.core.database.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "suppressions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("value", sa.String(length=256), nullable=False),
        sa.Column("request_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("lifted_at", Time, nullable=True),
        sa.Column("lifted_by", sa.String(length=36), nullable=True),
        sa.Column("lift_reason", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suppressions")),
        sa.UniqueConstraint("kind", "value", name=op.f("uq_suppressions_kind_value")),
    )
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("suppressed_count", sa.BigInteger(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("suppressed_count")
    op.drop_table("suppressions")
