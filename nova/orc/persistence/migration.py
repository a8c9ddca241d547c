"""Schema management of the flow journal (``nova-orc db sync``).

Alembic with its own version table, ``orc_alembic_version``, so the journal
can live inside the Nova API database without touching Nova's migrations.
"""

import os

from alembic import command as alembic_command
from alembic import config as alembic_config
from alembic import migration as alembic_migration

from nova.orc.persistence import backend

MIGRATIONS_DIR = os.path.join(os.path.dirname(__file__), 'migrations')
VERSION_TABLE = 'orc_alembic_version'


def _config(connection):
    cfg = alembic_config.Config()
    cfg.set_main_option('script_location', MIGRATIONS_DIR)
    cfg.attributes['connection'] = connection
    return cfg


def db_sync(version='heads', engine=None):
    """Upgrade the journal schema to ``version`` (default: latest).

    :param engine: SQLAlchemy engine; default the journal engine
        (:func:`nova.orc.persistence.backend.get_engine`)
    """
    engine = engine or backend.get_engine()
    with engine.begin() as connection:
        alembic_command.upgrade(_config(connection), version)


def db_version(engine=None):
    """The applied journal revision, or None before the first sync."""
    engine = engine or backend.get_engine()
    with engine.connect() as connection:
        context = alembic_migration.MigrationContext.configure(
            connection, opts={'version_table': VERSION_TABLE})
        return context.get_current_revision()
