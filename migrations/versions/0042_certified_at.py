"""certified_at: a completed request says when its certificate was issued

The sweep that catches completed requests still without a certificate read them as "completed
and NOT IN (every certificate's request)". PostgreSQL cannot hash a subquery larger than
``work_mem``, so past some ten thousand certificates that became a scan of the certificates for
each completed request: at 300,000 it had not finished after ten minutes, and the beat starts
one every minute. Now issuance stamps ``certified_at`` in the certificate's transaction, and a
partial index over the completed requests without it holds only those still waiting: the
sweep and the certificate orders that take later completions along read a few entries of it,
however many requests were ever certified. The take-along read 0040's index over every
completed request, which nothing else reads: it is dropped.

Revision ID: 0042
Revises: 0041
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.database

revision: str = "0042"
down_revision: str | None = "0041"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Time = app.core.database.UTCDateTime(timezone=True)
UNCERTIFIED = "status = 'completed' AND certified_at IS NULL"
COMPLETED = "status = 'completed'"


def upgrade() -> None:
    with op.batch_alter_table("deletion_requests") as batch:
        batch.add_column(sa.Column("certified_at", Time, nullable=True))
    op.execute("UPDATE deletion_requests SET certified_at = (SELECT c.issued_at FROM certificates c "
               "WHERE c.request_id = deletion_requests.id) "
               "WHERE EXISTS (SELECT 1 FROM certificates c WHERE c.request_id = deletion_requests.id)")
    op.create_index("ix_deletion_requests_uncertified", "deletion_requests", ["completed_at", "id"],
                    postgresql_where=sa.text(UNCERTIFIED), sqlite_where=sa.text(UNCERTIFIED))
    op.drop_index("ix_deletion_requests_completed_at", table_name="deletion_requests")


def downgrade() -> None:
    op.create_index("ix_deletion_requests_completed_at", "deletion_requests", ["completed_at", "id"],
                    postgresql_where=sa.text(COMPLETED), sqlite_where=sa.text(COMPLETED))
    op.drop_index("ix_deletion_requests_uncertified", table_name="deletion_requests")
    with op.batch_alter_table("deletion_requests") as batch:
        batch.drop_column("certified_at")
