"""DRP status callbacks through the webhooks room

``webhook_endpoints.kind``: ``webhook`` (registered by a client, fed by the audit fan-out) or
``drp_callback`` (an agent's ``status_callback`` URL, fed by the DRP room). ``drp_callbacks``
links a deletion request to its callback endpoint and the last DRP status queued for it.

Revision ID: 0037
Revises: 0036
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.database

revision: str = "0037"
down_revision: str | None = "0036"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Time = app.core.database.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("webhook_endpoints") as batch:
        batch.add_column(sa.Column("kind", sa.String(length=16), server_default="webhook", nullable=False))
    op.create_table(
        "drp_callbacks",
        sa.Column("request_id", sa.String(length=36), nullable=False),
        sa.Column("endpoint_id", sa.String(length=36), nullable=False),
        sa.Column("last_status", sa.String(length=16), nullable=True),
        sa.Column("created_at", Time, nullable=False),
        sa.ForeignKeyConstraint(["request_id"], ["deletion_requests.id"],
                                name=op.f("fk_drp_callbacks_request_id_deletion_requests")),
        sa.ForeignKeyConstraint(["endpoint_id"], ["webhook_endpoints.id"],
                                name=op.f("fk_drp_callbacks_endpoint_id_webhook_endpoints")),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_drp_callbacks")),
    )
    op.create_index(op.f("ix_drp_callbacks_last_status"), "drp_callbacks", ["last_status"])


def downgrade() -> None:
    op.drop_index(op.f("ix_drp_callbacks_last_status"), table_name="drp_callbacks")
    op.drop_table("drp_callbacks")
    with op.batch_alter_table("webhook_endpoints") as batch:
        batch.drop_column("kind")
