"""Flow journal: logbooks, flow details, atom details.

Revision ID: 0001_journal
Revises:
Create Date: 2026-11-22
"""
from alembic import op
import sqlalchemy as sa

revision = '0001_journal'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'orc_logbooks',
        sa.Column('uuid', sa.String(36), primary_key=True),
        sa.Column('name', sa.String(255)),
        sa.Column('data', sa.Text),
        sa.Column('created_at', sa.DateTime),
        sa.Column('updated_at', sa.DateTime),
    )
    op.create_table(
        'orc_flow_details',
        sa.Column('uuid', sa.String(36), primary_key=True),
        sa.Column('logbook_uuid', sa.String(36)),
        sa.Column('name', sa.String(255)),
        sa.Column('state', sa.String(32)),
        sa.Column('instance_uuid', sa.String(36)),
        sa.Column('data', sa.Text),
        sa.Column('created_at', sa.DateTime),
        sa.Column('updated_at', sa.DateTime),
    )
    op.create_index('ix_orc_flow_details_logbook_uuid', 'orc_flow_details',
                    ['logbook_uuid'])
    op.create_index('ix_orc_flow_details_instance_uuid', 'orc_flow_details',
                    ['instance_uuid'])
    op.create_table(
        'orc_atom_details',
        sa.Column('uuid', sa.String(36), primary_key=True),
        sa.Column('flow_uuid', sa.String(36)),
        sa.Column('name', sa.String(255)),
        sa.Column('atom_type', sa.String(32)),
        sa.Column('state', sa.String(32)),
        sa.Column('intention', sa.String(32)),
        sa.Column('data', sa.Text),
        sa.Column('created_at', sa.DateTime),
        sa.Column('updated_at', sa.DateTime),
        sa.Column('started_at', sa.DateTime),
        sa.Column('finished_at', sa.DateTime),
    )
    op.create_index('ix_orc_atom_details_flow_uuid', 'orc_atom_details',
                    ['flow_uuid'])
