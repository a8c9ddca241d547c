"""Owner token of a flow (fencing of journal writes).

Revision ID: 0002_owner_token
Revises: 0001_journal
Create Date: 2026-11-29
"""
from alembic import op
import sqlalchemy as sa

revision = '0002_owner_token'
down_revision = '0001_journal'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('orc_flow_details') as batch:
        batch.add_column(sa.Column('owner_token', sa.BigInteger,
                                   nullable=True))
