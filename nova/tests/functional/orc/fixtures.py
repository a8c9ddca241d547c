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

import collections
import weakref

import fixtures
from kazoo import client as kazoo_client
from oslo_utils import uuidutils

import nova.conf
from nova import service
from nova.tests import fixtures as nova_fixtures

from nova.orc import coordination
from nova.orc import engine
from nova.orc import jobboard
from nova.orc.persistence import migration

CONF = nova.conf.CONF

MANAGERS = {
    'nova-conductor': 'nova.orc.manager.OrcConductorManager',
    'nova-compute': 'nova.orc.compute.manager.OrcComputeManager',
}

_original_apply_schema = nova_fixtures.Database._apply_schema
_original_init = engine.Orchestrator.__init__
_original_finish = engine.Orchestrator._finish


class FlowTracker:
    """What the tests observe of the orchestrators of this process: the
    live ones (stopped at clean-up) and the flow runs they finished, by
    ``(operation, end state)`` - proof that an operation went through a
    flow."""

    orchestrators = weakref.WeakSet()
    finished = collections.Counter()

    @classmethod
    def stop_all(cls):
        for orchestrator in list(cls.orchestrators):
            cls.orchestrators.discard(orchestrator)
            orchestrator.stop()


def _tracked_init(self, *args, **kwargs):
    _original_init(self, *args, **kwargs)
    FlowTracker.orchestrators.add(self)


def _counted_finish(self, run, state, meta):
    FlowTracker.finished[(meta.get('operation'), state)] += 1
    return _original_finish(self, run, state, meta)


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
    engine.Orchestrator.__init__ = _tracked_init
    engine.Orchestrator._finish = _counted_finish


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
        self.useFixture(fixtures.MonkeyPatch(
            'nova.orc.engine.Orchestrator.__init__', _tracked_init))
        self.useFixture(fixtures.MonkeyPatch(
            'nova.orc.engine.Orchestrator._finish', _counted_finish))
        if self.zookeeper:
            self.chroot = '/nova-orc-test-%s' % uuidutils.generate_uuid()
            url = 'zookeeper://%s%s' % (self.zookeeper, self.chroot)
            self.addCleanup(self._delete_chroot)
        else:
            url = 'memory://'
            self.addCleanup(coordination.MemoryCoordinator.reset)
            self.addCleanup(jobboard.MemoryJobBoard.reset)
        self.useFixture(nova_fixtures.ConfPatcher(
            coordination_url=url, group='orc'))
        # runs after the harness stopped its services, before the chroot
        # or the memory tables are dropped
        self.addCleanup(FlowTracker.stop_all)

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
