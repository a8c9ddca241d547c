"""The lease and the one guard every side effect of a flow's task passes.

A conductor that ZooKeeper declared dead may wake up inside the task it was
running (SIGSTOP, a frozen VM): :meth:`Coordinator.hold_lease` must find
its lease void before its next side effect, on the monotonic clock, from
kazoo's SUSPENDED, and for a lost session; :mod:`nova.orc.fencing` must
check it right before every database write of a task, every host call and
every journal write. ZooKeeper is the real one (``ORC_TEST_ZOOKEEPER``,
started by ``run_tests.sh``); without one these tests fail, never skip.
"""

import os
import threading
import time
from unittest import mock

import fixtures
import sqlalchemy as sa
from kazoo.protocol import states as kazoo_states
from oslo_utils.fixture import uuidsentinel as uuids
from oslo_utils import uuidutils

from nova import context as nova_context
from nova import objects
from nova.orc.compute import rpcapi as orc_rpcapi
from nova.orc import coordination
from nova.orc import engine
from nova.orc import exception as orc_exc
from nova.orc import fencing
from nova.orc import jobboard
from nova.orc.persistence import backend as journal
from nova import test
from nova.tests.unit.orc import test_coordination

ZOOKEEPER = os.environ.get('ORC_TEST_ZOOKEEPER', '127.0.0.1:2181')
SESSION_TIMEOUT = 3.0


def _skewed_clock(offset):
    """A monotonic clock ``offset`` seconds ahead: what a process sees on
    waking from a pause of that length."""
    return lambda: time.monotonic() + offset


class LeaseTest(test.NoDBTestCase):
    """``ZooKeeperCoordinator.hold_lease`` against the real ZooKeeper."""

    def setUp(self):
        super().setUp()
        self.chroot = '/nova-orc-lease-%s' % uuidutils.generate_uuid()
        self.flags(coordination_url='zookeeper://%s%s' % (
            ZOOKEEPER, self.chroot), group='orc',
            zookeeper_session_timeout=SESSION_TIMEOUT,
            coordination_outage_timeout=5)
        self.c = coordination.coordinator_from_conf(conductor_id='c1')
        self.c.start()
        self.addCleanup(self.c.stop)
        self.session = self.c.session_id()

    def tearDown(self):
        # a client of its own: self.c may have lost its session
        other = coordination.coordinator_from_conf(conductor_id='cleanup')
        other.start()
        other.client.delete(self.chroot, recursive=True)
        other.stop()
        super().tearDown()

    def _count_requests(self):
        requests = []
        real = self.c.client.sync_async

        def sync_async(path, *args, **kwargs):
            requests.append(path)
            return real(path, *args, **kwargs)
        self.useFixture(fixtures.MockPatchObject(
            self.c.client, 'sync_async', side_effect=sync_async))
        return requests

    def test_a_fresh_lease_holds_without_a_request(self):
        requests = self._count_requests()
        for _ in range(100):
            self.c.hold_lease(self.session)
        self.assertEqual([], requests)
        # it lasts the session timeout less the margin from a send time
        left = self.c._lease_until - time.monotonic()
        self.assertLessEqual(
            left, SESSION_TIMEOUT * (1 - coordination.LEASE_MARGIN))
        self.assertGreater(left, 0)

    def test_the_renewer_keeps_the_lease_fresh(self):
        first = self.c._lease_until
        test_coordination._wait_for(
            lambda: self.c._lease_until > first,
            SESSION_TIMEOUT, 'lease renewed by the renewer thread')

    def test_lease_run_out_on_the_clock_is_renewed_while_the_session_lives(
            self):
        # a pause shorter than the session: the lease ran out on the
        # monotonic clock but ZooKeeper still holds the session, so one
        # request renews it and the claim may be acted on
        requests = self._count_requests()
        offset = SESSION_TIMEOUT
        with mock.patch.object(coordination, '_clock',
                               _skewed_clock(offset)):
            self.c.hold_lease(self.session)
            self.assertGreater(self.c._lease_until,
                               time.monotonic() + offset)
        self.assertEqual([self.chroot], requests)

    def test_waking_after_the_session_expired_never_holds(self):
        # a pause past the session: ZooKeeper expired it (another conductor
        # may hold its claims now); on waking the lease has run out on the
        # clock and cannot be renewed on that session
        with mock.patch.object(coordination, '_clock',
                               _skewed_clock(2 * SESSION_TIMEOUT)):
            test_coordination._expire_session(self.c)
            self.assertRaises(orc_exc.SessionLost, self.c.hold_lease,
                              self.session)
        # and never again, even once a new session renews the lease
        test_coordination._wait_for(
            lambda: self.c.session_id() not in (None, self.session), 30,
            'new session')
        self.assertRaises(orc_exc.SessionLost, self.c.hold_lease,
                          self.session)
        self.c.hold_lease(self.c.session_id())
        self.c.hold_lease(None)

    def test_suspended_voids_the_lease_at_once(self):
        # kazoo reports SUSPENDED on its connection thread: from that moment
        # nothing may act on a claim until a request on the same session is
        # answered again
        self.c._on_state(kazoo_states.KazooState.SUSPENDED)
        self.assertIsNone(self.c._lease_until)
        self.flags(coordination_outage_timeout=0, group='orc')
        with mock.patch.object(self.c, '_renew_lease', return_value=False):
            t0 = time.monotonic()
            exc = self.assertRaises(orc_exc.CoordinationUnavailable,
                                    self.c.hold_lease, self.session)
            self.assertLess(time.monotonic() - t0,
                            coordination.MIN_OPERATION_WAIT + 1)
        self.assertIn('lease of session %s' % self.session, str(exc))
        # the connection is in fact fine: the next check renews and holds
        self.c.hold_lease(self.session)

    def test_a_renewal_sent_before_a_suspension_renews_nothing(self):
        self.c._on_state(kazoo_states.KazooState.SUSPENDED)
        real = self.c.client.sync_async

        def suspended_in_flight(path, *args, **kwargs):
            result = real(path, *args, **kwargs)
            result.get(timeout=5)
            # the connection drops while the answer is on its way
            self.c._on_state(kazoo_states.KazooState.SUSPENDED)
            return result
        with mock.patch.object(self.c.client, 'sync_async',
                               side_effect=suspended_in_flight):
            self.assertFalse(self.c._renew_lease())
        self.assertIsNone(self.c._lease_until)

    def test_memory_lease_is_always_held(self):
        memory = coordination.MemoryCoordinator('m', 'memory://lease')
        self.assertIsNone(memory.hold_lease(None))


class _Run:
    """A stand-in for :class:`nova.orc.engine.JobRun`: counts its checks,
    raises ``error`` once set."""

    def __init__(self):
        self.checks = 0
        self.in_transaction = 0
        self.error = None

    def fence(self):
        self.checks += 1
        if self.error is not None:
            raise self.error

    def fence_in_transaction(self, connection):
        self.in_transaction += 1


class FencingGuardTest(test.TestCase):
    """Every database write a task makes passes the run's lease right
    before it is sent; nothing else is fenced."""

    def setUp(self):
        super().setUp()
        fencing.install()
        self.ctxt = nova_context.get_admin_context()
        self.run = _Run()
        self.addCleanup(fencing.leave)

    def _action(self, instance_uuid):
        return objects.InstanceAction.action_start(
            self.ctxt, instance_uuid, 'create', want_result=True)

    def _actions(self, instance_uuid):
        return objects.InstanceActionList.get_by_instance_uuid(
            self.ctxt, instance_uuid)

    def test_write_of_a_task_whose_claim_is_lost_is_not_made(self):
        fencing.enter(self.run)
        self.run.error = orc_exc.ClaimLost(flow_id=uuids.flow)
        self.assertRaises(orc_exc.ClaimLost, self._action, uuids.instance)
        fencing.leave()
        self.assertEqual([], list(self._actions(uuids.instance)))

    def test_transaction_whose_lease_ran_out_before_commit_is_not_made(
            self):
        # paused after the transaction's last statement, before its COMMIT
        # (an engine of its own: Nova's test database fixture nests every
        # transaction in one it never commits)
        engine = sa.create_engine('sqlite://')
        self.addCleanup(engine.dispose)
        with engine.begin() as conn:
            conn.execute(sa.text('CREATE TABLE t (a INTEGER)'))
        fencing.enter(self.run)

        def write_then_pause():
            with engine.begin() as conn:
                conn.execute(sa.text('INSERT INTO t VALUES (1)'))
                self.run.error = orc_exc.ClaimLost(flow_id=uuids.flow)
        self.assertRaises(orc_exc.ClaimLost, write_then_pause)
        fencing.leave()
        with engine.connect() as conn:
            self.assertEqual(0, conn.execute(
                sa.text('SELECT count(*) FROM t')).scalar())
            # the connection is usable again
            conn.execute(sa.text('INSERT INTO t VALUES (2)'))
            conn.commit()

    def test_each_write_is_checked_reads_are_not(self):
        fencing.enter(self.run)
        self._action(uuids.instance)
        writes = self.run.checks
        self.assertGreaterEqual(writes, 1)
        # each write statement is also checked in its transaction (commits
        # are checked by the lease alone)
        self.assertGreaterEqual(self.run.in_transaction, 1)
        self.assertLessEqual(self.run.in_transaction, writes)
        self.assertEqual(1, len(self._actions(uuids.instance)))
        self.assertEqual(writes, self.run.checks)
        # a read after the claim is lost still reads
        self.run.error = orc_exc.ClaimLost(flow_id=uuids.flow)
        self.assertEqual(1, len(self._actions(uuids.instance)))

    def test_outside_a_task_nothing_is_fenced(self):
        self.run.error = orc_exc.ClaimLost(flow_id=uuids.flow)
        fencing.enter(self.run)
        fencing.leave()
        self._action(uuids.instance)
        self.assertEqual(0, self.run.checks)
        self.assertIsNone(fencing.current())

    def test_the_run_is_bound_per_thread(self):
        fencing.enter(self.run)
        seen = []
        thread = threading.Thread(target=lambda: seen.append(
            fencing.current()))
        thread.start()
        thread.join()
        self.assertEqual([None], seen)
        self.assertIs(self.run, fencing.current())

    def test_statements_that_write(self):
        for statement in ('INSERT INTO x VALUES (1)', '  update x set a=1',
                          'DELETE FROM x', 'REPLACE INTO x VALUES (1)'):
            self.assertTrue(fencing.is_write(statement), statement)
        for statement in ('SELECT 1', 'SELECT a FROM x FOR UPDATE',
                          'SAVEPOINT sa_1', 'select * from updates'):
            self.assertFalse(fencing.is_write(statement), statement)

    def test_host_call_of_a_fenced_run_is_not_sent(self):
        api = orc_rpcapi.OrcComputeAPI()
        fencing.enter(self.run)
        self.run.error = orc_exc.ClaimLost(flow_id=uuids.flow)
        with mock.patch.object(api, 'client') as client:
            self.assertRaises(orc_exc.ClaimLost, api.finish_build,
                              self.ctxt, 'host1', None, 'node1', [],
                              {'flow_id': uuids.flow, 'atom': 'finalize',
                               'token': 7})
        client.prepare.return_value.call.assert_not_called()
        self.run.error = None
        with mock.patch.object(api, 'client') as client:
            api.finish_build(self.ctxt, 'host1', None, 'node1', [],
                             {'flow_id': uuids.flow, 'atom': 'finalize',
                              'token': 7})
        client.prepare.return_value.call.assert_called_once()


class JobRunFenceTest(test.NoDBTestCase):
    """``JobRun.fence``: the run's side of the guard."""

    def _run(self, hold_lease):
        orchestrator = mock.Mock()
        orchestrator.coordinator.hold_lease.side_effect = hold_lease
        claim = jobboard.Claim(None, uuids.flow, 12, {}, session=34)
        run = engine.JobRun(orchestrator, claim)
        run.engine = mock.Mock()
        return run

    def test_lease_held(self):
        run = self._run(None)
        run.fence()
        run.orchestrator.coordinator.hold_lease.assert_called_once_with(34)
        self.assertFalse(run.lost)

    def test_session_lost_marks_the_run_lost_and_suspends_it(self):
        run = self._run(orc_exc.SessionLost(session=34, reason='expired'))
        self.assertRaises(orc_exc.ClaimLost, run.fence)
        self.assertTrue(run.lost)
        run.engine.suspend.assert_called_once_with()
        # never asked again: a lost run stays lost
        self.assertRaises(orc_exc.ClaimLost, run.fence)
        self.assertEqual(1, run.orchestrator.coordinator.hold_lease.call_count)

    def test_outage_past_the_bound_is_no_loss(self):
        run = self._run(orc_exc.CoordinationUnavailable(reason='down'))
        self.assertRaises(orc_exc.CoordinationUnavailable, run.fence)
        self.assertFalse(run.lost)

    def test_journal_refuses_the_write_of_a_lost_run(self):
        run = self._run(orc_exc.SessionLost(session=34, reason='expired'))
        exc = self.assertRaises(journal.FlowFenced, run.journal_lease)
        self.assertIn(uuids.flow, str(exc))
        self.assertIn('claim of this conductor is lost', str(exc))


class IdleInTransactionLimitTest(test.NoDBTestCase):
    """A transaction left open by a frozen process (the server sees a
    client idle inside a transaction; the kernel keeps its TCP connection
    alive) must not hold its locks past the limit: the conductor that took
    the job over would block on its first write (the journal's claim of the
    flow row) until the frozen one woke. The real PostgreSQL and MariaDB
    (``ORC_TEST_POSTGRESQL``, ``ORC_TEST_MYSQL``); no skipping."""

    POSTGRESQL = os.environ.get('ORC_TEST_POSTGRESQL',
                                'postgresql+psycopg2://postgres@127.0.0.1')
    MYSQL = os.environ.get('ORC_TEST_MYSQL',
                           'mysql+pymysql://root@127.0.0.1')

    def _connect(self, url):
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        self.addCleanup(engine.dispose)
        proxy = engine.raw_connection()
        self.addCleanup(lambda: _quietly(proxy.close))
        return proxy.dbapi_connection   # what the pool's events get

    def _frozen_holder_lets_go(self, url, take, take_waiting, released):
        frozen = self._connect(url)
        self.assertTrue(fencing.idle_in_transaction_limit(frozen, 1.0))
        cur = frozen.cursor()
        cur.execute(take)
        self.assertTrue(released(cur.fetchone()))
        # the holder goes silent here, its transaction open
        waiter = self._connect(url)
        t0 = time.monotonic()
        cur2 = waiter.cursor()
        cur2.execute(take_waiting)
        self.assertTrue(released(cur2.fetchone()))
        waited = time.monotonic() - t0
        # the limit (1 s) ended the holder, not the waiter's own bound (10 s)
        self.assertLess(waited, 6.0)
        # and the frozen holder finds its session gone when it wakes
        self.assertRaises(Exception, cur.execute, 'SELECT 1')
        return waited

    def test_postgresql_ends_a_frozen_transaction_and_its_locks(self):
        self._frozen_holder_lets_go(
            self.POSTGRESQL + '/postgres',
            'BEGIN; SELECT pg_advisory_xact_lock(424242), 1',
            "SET lock_timeout = '10s'; "
            "SELECT pg_advisory_xact_lock(424242), 1",
            lambda row: row is not None and row[-1] == 1)

    def test_mysql_closes_a_frozen_session_and_its_locks(self):
        self._frozen_holder_lets_go(
            self.MYSQL + '/mysql',
            "SELECT GET_LOCK('nova-orc-test', 0)",
            "SELECT GET_LOCK('nova-orc-test', 10)",
            lambda row: row is not None and row[0] == 1)

    def test_a_database_without_such_a_limit_is_left_as_is(self):
        conn = self._connect('sqlite://')
        self.assertFalse(fencing.idle_in_transaction_limit(conn, 1.0))

    def test_the_orchestrator_limits_idle_transactions_to_its_session(self):
        self.flags(zookeeper_session_timeout=7.0, group='orc')
        self.flags(coordination_url='zookeeper://%s/orc-test-%s' % (
            ZOOKEEPER, uuidutils.generate_uuid()), group='orc')
        installed = []
        self.useFixture(fixtures.MockPatch(
            'nova.orc.fencing.install',
            side_effect=lambda **kw: installed.append(kw)))
        orchestrator = engine.Orchestrator(manager=None)
        self.useFixture(fixtures.MockPatchObject(
            orchestrator.coordinator, 'start',
            side_effect=RuntimeError('stop after fencing.install')))
        self.assertRaises(RuntimeError, orchestrator.start)
        self.assertEqual([{'idle_in_transaction_seconds': 7.0}], installed)


def _quietly(fn):
    try:
        fn()
    except Exception:
        pass
