"""Test fixtures that put nova-orc into Nova's functional harness.

:class:`OrcFixture` makes any test on ``nova.tests.functional`` run with
our conductor and compute managers: it sets them in
``nova.service.SERVICE_MANAGERS`` (which ``start_service`` and
``restart_compute_service`` both end up reading through
``Service.create``), creates the journal tables in the API database every
time Nova's ``Database`` fixture builds it, and sets
``[orc] coordination_url``. Use it before the harness starts its services::

    def setUp(self):
        self.useFixture(OrcFixture(zookeeper='127.0.0.1:2181'))
        super().setUp()

or apply it to a whole process (``tools/compat``) with :func:`install`.
"""

import fixtures
from kazoo import client as kazoo_client
from oslo_utils import uuidutils

import nova.conf
from nova import service
from nova.tests import fixtures as nova_fixtures

from nova.orc import coordination
from nova.orc import engine
from nova.orc.persistence import migration

CONF = nova.conf.CONF

MANAGERS = {
    'nova-conductor': 'nova.orc.manager.OrcConductorManager',
    'nova-compute': 'nova.orc.compute.manager.OrcComputeManager',
}

_original_apply_schema = nova_fixtures.Database._apply_schema


def _apply_schema_with_journal(self):
    """Nova's schema, then (API database only) the journal migrations."""
    _original_apply_schema(self)
    if self.database == 'api':
        migration.db_sync(engine=self.get_engine())


def install():
    """Process-wide, for running upstream tests unchanged: our managers in
    ``SERVICE_MANAGERS`` and the journal in every API database fixture.
    Coordination stays ``memory://`` (the ``[orc]`` default)."""
    service.SERVICE_MANAGERS.update(MANAGERS)
    nova_fixtures.Database._apply_schema = _apply_schema_with_journal


class OrcFixture(fixtures.Fixture):
    """Our services, journal and coordination for one test.

    :param zookeeper: ``host:port`` of a ZooKeeper to use (each test gets
        its own chroot, deleted at clean-up); None uses ``memory://``
    """

    def __init__(self, zookeeper=None):
        super().__init__()
        self.zookeeper = zookeeper
        self.chroot = None

    def _setUp(self):
        managers = dict(service.SERVICE_MANAGERS, **MANAGERS)
        self.useFixture(fixtures.MonkeyPatch(
            'nova.service.SERVICE_MANAGERS', managers))
        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.Database._apply_schema',
            _apply_schema_with_journal))
        if self.zookeeper:
            self.chroot = '/nova-orc-test-%s' % uuidutils.generate_uuid()
            url = 'zookeeper://%s%s' % (self.zookeeper, self.chroot)
            self.addCleanup(self._delete_chroot)
        else:
            url = 'memory://'
            self.addCleanup(coordination.MemoryCoordinator.reset)
        self.useFixture(nova_fixtures.ConfPatcher(
            coordination_url=url, group='orc'))
        self.addCleanup(self._stop_orchestrators)

    @staticmethod
    def _stop_orchestrators():
        for orchestrator in list(engine.Orchestrator.instances):
            orchestrator.stop()

    def _delete_chroot(self):
        client = kazoo_client.KazooClient(hosts=self.zookeeper)
        client.start(timeout=10)
        try:
            client.delete(self.chroot, recursive=True)
        except Exception:
            pass
        finally:
            client.stop()
            client.close()

    def coordinator(self, conductor_id='test'):
        """A started coordinator on this fixture's backend (for tests that
        lock resources themselves); stopped at clean-up."""
        coordinator = coordination.coordinator_from_conf(
            conductor_id=conductor_id)
        coordinator.start()
        self.addCleanup(coordinator.stop)
        return coordinator
