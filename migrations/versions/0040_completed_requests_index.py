"""completed requests index: a certificate order takes along the completions after its own

A partial index on ``deletion_requests (completed_at, id)`` over completed requests, so the
worker finds the next completed requests still without a certificate by reading a few index
entries from its own request's completion on, however many requests the table holds.

Revision ID: 0040
Revises: 0039
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0040"
down_revision: str | None = "0039"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COMPLETED = "status = 'completed'"


def upgrade() -> None:
    op.create_index("ix_deletion_requests_completed_at", "deletion_requests", ["completed_at", "id"],
                    postgresql_where=sa.text(COMPLETED), sqlite_where=sa.text(COMPLETED))


def downgrade() -> None:
    op.drop_index("ix_deletion_requests_completed_at", table_name="deletion_requests")
