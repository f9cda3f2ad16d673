"""webhook delivery: endpoints' secrets and health, the delivery chain, attempts, fan-out cursor

The fan-out turns sealed audit events into deliveries behind a persisted cursor over
``audit_events.seq``; its single row is created here so concurrent dispatchers only ever
lock it, never race to insert it.

Revision ID: 0013
Revises: 0018
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.database

revision: str = "0013"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = app.core.database.UTCDateTime(timezone=True)


def upgrade() -> None:
    cursor = op.create_table(
        "webhook_cursor",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_webhook_cursor")),
    )
    op.execute(cursor.insert().values(name="audit", last_seq=0, updated_at=sa.func.now()))
    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("delivery_id", sa.String(length=36), nullable=False),
        sa.Column("attempted_at", UTC, nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Double(), nullable=False),
        sa.Column("response_excerpt", sa.String(), nullable=True),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("delivered", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"], ["webhook_deliveries.id"], name=op.f("fk_webhook_attempts_delivery_id_webhook_deliveries")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_attempts")),
    )
    op.create_index(op.f("ix_webhook_attempts_delivery_id"), "webhook_attempts", ["delivery_id"], unique=False)
    # The tables had no writer before this revision; the server defaults only satisfy NOT NULL.
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.add_column(sa.Column("event_seq", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("event_index", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("order_key", sa.String(length=64), nullable=False, server_default=""))
        batch.add_column(sa.Column("lease_until", UTC, nullable=True))
        batch.create_index(
            "ix_webhook_deliveries_chain", ["endpoint_id", "order_key", "status", "event_seq"], unique=False
        )
        batch.create_index("ix_webhook_deliveries_due", ["status", "next_attempt_at"], unique=False)
        batch.create_unique_constraint(
            op.f("uq_webhook_deliveries_endpoint_id_event_seq_event_index"), ["endpoint_id", "event_seq", "event_index"]
        )
    with op.batch_alter_table("webhook_deliveries") as batch:
        for column in ("event_seq", "event_index", "order_key"):
            batch.alter_column(column, server_default=None)
    with op.batch_alter_table("webhook_endpoints") as batch:
        batch.add_column(sa.Column("description", sa.String(length=500), nullable=True))
        batch.add_column(sa.Column("previous_secret_encrypted", sa.String(length=512), nullable=True))
        batch.add_column(sa.Column("previous_secret_expires_at", UTC, nullable=True))
        batch.add_column(sa.Column("disabled_reason", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("disabled_at", UTC, nullable=True))
        batch.add_column(sa.Column("failing_since", UTC, nullable=True))
        batch.add_column(sa.Column("consecutive_failures", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("consecutive_failed_deliveries", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("paused_until", UTC, nullable=True))
        batch.add_column(sa.Column("updated_at", UTC, nullable=False, server_default=sa.func.now()))
        batch.add_column(sa.Column("deleted_at", UTC, nullable=True))
    with op.batch_alter_table("webhook_endpoints") as batch:
        for column in ("consecutive_failures", "consecutive_failed_deliveries", "updated_at"):
            batch.alter_column(column, server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("webhook_endpoints") as batch:
        for column in (
            "deleted_at", "updated_at", "paused_until", "consecutive_failed_deliveries", "consecutive_failures",
            "failing_since", "disabled_at", "disabled_reason", "previous_secret_expires_at",
            "previous_secret_encrypted", "description",
        ):
            batch.drop_column(column)
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.drop_constraint(op.f("uq_webhook_deliveries_endpoint_id_event_seq_event_index"), type_="unique")
        batch.drop_index("ix_webhook_deliveries_due")
        batch.drop_index("ix_webhook_deliveries_chain")
        for column in ("lease_until", "order_key", "event_index", "event_seq"):
            batch.drop_column(column)
    op.drop_index(op.f("ix_webhook_attempts_delivery_id"), table_name="webhook_attempts")
    op.drop_table("webhook_attempts")
    op.drop_table("webhook_cursor")
