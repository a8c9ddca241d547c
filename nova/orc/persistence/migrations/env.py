"""Alembic environment of the nova-orc journal.

Run through :func:`nova.orc.persistence.migration.db_sync`, which hands the
connection in ``config.attributes['connection']``. The version table is
``orc_alembic_version`` so the journal can live in the Nova API database
next to Nova's own ``alembic_version``.
"""
from alembic import context

from nova.orc.persistence import tables

VERSION_TABLE = 'orc_alembic_version'


def run_migrations_online():
    connection = context.config.attributes['connection']
    context.configure(connection=connection,
                      target_metadata=tables.metadata,
                      version_table=VERSION_TABLE,
                      render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
