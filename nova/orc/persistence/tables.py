"""Schema of the flow journal (TaskFlow logbooks, flow and atom details).

The same shapes as TaskFlow's own SQL backend (logbook, flow detail, atom
detail), in tables prefixed ``orc_`` so they can share the Nova API database.
Each row keeps the full TaskFlow ``to_dict()`` of its object as JSON in
``data``; a few columns are lifted out for queries (state, name, instance)
and timings the journal derives itself (``started_at``, ``finished_at``).
A flow row's ``owner_token`` is the token of the conductor that last
claimed the flow (``JournalConnection.claim_flow``), NULL until then.
The alembic migrations under ``migrations/`` create exactly these tables.
"""

import sqlalchemy as sa

metadata = sa.MetaData()

logbooks = sa.Table(
    'orc_logbooks', metadata,
    sa.Column('uuid', sa.String(36), primary_key=True),
    sa.Column('name', sa.String(255)),
    sa.Column('data', sa.Text),
    sa.Column('created_at', sa.DateTime),
    sa.Column('updated_at', sa.DateTime),
)

flow_details = sa.Table(
    'orc_flow_details', metadata,
    sa.Column('uuid', sa.String(36), primary_key=True),
    sa.Column('logbook_uuid', sa.String(36), index=True),
    sa.Column('name', sa.String(255)),
    sa.Column('state', sa.String(32)),
    sa.Column('instance_uuid', sa.String(36), index=True),
    sa.Column('data', sa.Text),
    sa.Column('created_at', sa.DateTime),
    sa.Column('updated_at', sa.DateTime),
    sa.Column('owner_token', sa.BigInteger),
)

atom_details = sa.Table(
    'orc_atom_details', metadata,
    sa.Column('uuid', sa.String(36), primary_key=True),
    sa.Column('flow_uuid', sa.String(36), index=True),
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
