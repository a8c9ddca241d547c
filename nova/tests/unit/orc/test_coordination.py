"""Lock contract of both coordination backends; ZooKeeper is the real one.

ZooKeeper comes from ``ORC_TEST_ZOOKEEPER`` (default ``127.0.0.1:2181``,
started by ``run_tests.sh``); without one these tests fail, they never skip.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from unittest import mock

from kazoo import client as kazoo_client
from kazoo import exceptions as kazoo_exc
from oslo_utils.fixture import uuidsentinel as uuids
from oslo_utils import uuidutils
from taskflow import exceptions as tf_exc
from taskflow.jobs.backends import impl_zookeeper
from taskflow.persistence import models as tf_models
from taskflow import states as tf_states

from nova.orc import coordination
from nova.orc import exception as orc_exc
from nova.orc import jobboard
from nova import test

ZOOKEEPER = os.environ.get('ORC_TEST_ZOOKEEPER', '127.0.0.1:2181')


def _wait_for(predicate, timeout, what):
    """Poll ``predicate()`` until true; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError('%s: not within %s s' % (what, timeout))
        time.sleep(0.05)


def _expire_session(coordinator):
    """Make ZooKeeper end ``coordinator``'s session as if its process had
    hung past the session timeout: a second connection takes the session
    over and closes it (kazoo's own tests do the same)."""
    session_id, password = coordinator.client.client_id
    thief = kazoo_client.KazooClient(
        hosts=coordinator.hosts, client_id=(session_id, password))
    thief.start(timeout=10)
    thief.stop()
    thief.close()


class _LockContract:
    """Behaviour both backends must have."""

    def make(self, conductor_id):
        raise NotImplementedError()

    def setUp(self):
        super().setUp()
        self.a = self.make('conductor-a')
        self.b = self.make('conductor-b')

    def test_all_or_nothing(self):
        self.a.acquire(uuids.flow_a, [('port', 'p1'), ('volume', 'v1')])
        exc = self.assertRaises(
            orc_exc.ResourceLocked, self.b.acquire, uuids.flow_b,
            [('volume', 'v1'), ('instance', 'i1')], timeout=0)
        self.assertIn('volume v1 is locked by flow %s' % uuids.flow_a,
                      str(exc))
        self.assertIn('conductor-a', str(exc))
        self.assertEqual(409, exc.code)
        # nothing of the failed request was locked
        self.assertIsNone(self.b.holder('instance', 'i1'))

    def test_same_owner_reacquires(self):
        self.a.acquire(uuids.flow_a, [('port', 'p1')])
        self.a.acquire(uuids.flow_a, [('port', 'p1'), ('port', 'p2')])
        self.assertEqual(uuids.flow_a, self.b.holder('port', 'p2')['owner'])

    def test_release_only_own_locks(self):
        self.a.acquire(uuids.flow_a, [('port', 'p1')])
        self.b.release(uuids.flow_b, [('port', 'p1')])
        self.assertEqual(uuids.flow_a, self.b.holder('port', 'p1')['owner'])
        self.a.release(uuids.flow_a, [('port', 'p1')])
        self.assertIsNone(self.b.holder('port', 'p1'))
        self.a.release(uuids.flow_a, [('port', 'p1')])  # idempotent

    def test_wait_within_bound_then_acquire(self):
        self.a.acquire(uuids.flow_a, [('instance', 'i1')])
        timer = threading.Timer(
            0.3, self.a.release, (uuids.flow_a, [('instance', 'i1')]))
        timer.start()
        self.addCleanup(timer.cancel)
        self.b.acquire(uuids.flow_b, [('instance', 'i1')], timeout=5)
        self.assertEqual(uuids.flow_b, self.a.holder('instance', 'i1')['owner'])

    def test_wait_bound_expires(self):
        self.a.acquire(uuids.flow_a, [('instance', 'i1')])
        t0 = time.monotonic()
        self.assertRaises(orc_exc.ResourceLocked, self.b.acquire,
                          uuids.flow_b, [('instance', 'i1')], timeout=0.3)
        self.assertGreaterEqual(time.monotonic() - t0, 0.3)

    def test_locks_of_an_ended_flow_are_broken(self):
        # a release lost in an outage must not block the resource forever
        self.a.acquire(uuids.flow_a, [('instance', 'i1'), ('port', 'p1')])
        self.b.stale_owner = lambda owner: owner == uuids.flow_a
        self.b.acquire(uuids.flow_b, [('instance', 'i1')], timeout=0)
        self.assertEqual(uuids.flow_b, self.a.holder('instance', 'i1')['owner'])
        # a live owner's lock still conflicts
        self.b.stale_owner = lambda owner: False
        self.a.acquire(uuids.flow_c, [('port', 'p2')])
        self.assertRaises(orc_exc.ResourceLocked, self.b.acquire,
                          uuids.flow_b, [('port', 'p2')], timeout=0)

    def test_list_locks(self):
        self.a.acquire(uuids.flow_a, [('port', 'p1'), ('instance', 'i1')])
        locks = self.b.list_locks()
        self.assertEqual([('instance', 'i1', uuids.flow_a),
                          ('port', 'p1', uuids.flow_a)],
                         [(l['kind'], l['id'], l['owner']) for l in locks])
        self.assertEqual({'conductor-a'}, {l['conductor'] for l in locks})

    def test_list_locks_keeps_every_field_of_the_record(self):
        # nova-orc lock list will show more about a lock (e.g. whether its
        # owner is alive) from fields it does not know yet
        self.write_record('port', 'p7', {
            'owner': uuids.flow_x, 'conductor': 'c-x',
            'since': '2026-01-01T00:00:00', 'claim': 'job-1', 'kind': 'x'})
        self.a.acquire(uuids.flow_a, [('instance', 'i1')])
        locks = self.b.list_locks()
        self.assertEqual([
            {'kind': 'instance', 'id': 'i1', 'owner': uuids.flow_a,
             'conductor': 'conductor-a',
             'since': self.a.holder('instance', 'i1')['since']},
            {'kind': 'port', 'id': 'p7', 'owner': uuids.flow_x,
             'conductor': 'c-x', 'since': '2026-01-01T00:00:00',
             'claim': 'job-1'}], locks)
        self.assertEqual('job-1', self.b.holder('port', 'p7')['claim'])


class ZooKeeperOutageTest(test.NoDBTestCase):
    """A ZooKeeper of its own (tools/zookeeper on a free port, state in a
    temporary folder) that the test stops, starts or freezes: lock
    operations wait out an outage within [orc] coordination_outage_timeout,
    then fail with a clear error."""

    def _zookeeper(self, command):
        tools = os.environ.get('ORC_TOOLS')
        self.assertIsNotNone(tools, 'ORC_TOOLS (the repository tools/ '
                             'folder) must be set, as run_tests.sh does')
        subprocess.run([os.path.join(tools, 'zookeeper'), command,
                        self.port], check=True, stdout=subprocess.DEVNULL,
                       env=dict(os.environ, ORC_ZK_STATE=self.state))

    def _pid(self):
        with open(os.path.join(self.state, 'zookeeper.pid')) as f:
            return int(f.read())

    def _stop_zookeeper(self):
        """Stop it and wait for the process to be gone (its clients then
        see the connection drop, and the port is free for a restart)."""
        if not os.path.exists(os.path.join(self.state, 'zookeeper.pid')):
            return
        pid = self._pid()
        self._zookeeper('stop')

        def gone():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            return False
        _wait_for(gone, 60, 'ZooKeeper pid %d exit' % pid)

    def setUp(self):
        super().setUp()
        # a port and a state folder of its own: test runs of other
        # checkouts on the same machine must not stop our server
        with socket.socket() as s:
            s.bind(('127.0.0.1', 0))
            self.port = str(s.getsockname()[1])
        self.state = tempfile.mkdtemp(prefix='nova-orc-zk-outage-',
                                      dir='/var/tmp')
        self.addCleanup(shutil.rmtree, self.state, True)
        self._zookeeper('start')
        self.addCleanup(self._stop_zookeeper)
        self.flags(coordination_url='zookeeper://127.0.0.1:%s/outage-%s' % (
            self.port, uuidutils.generate_uuid()), group='orc',
            zookeeper_session_timeout=30)
        self.coordinator = coordination.coordinator_from_conf(
            conductor_id='c1')
        self.coordinator.start()
        self.addCleanup(self.coordinator.stop)

    def _freeze_zookeeper(self):
        """ZooKeeper hangs (SIGSTOP): connections stay open, nothing is
        answered. Resumed at cleanup, before anything else."""
        pid = self._pid()
        os.kill(pid, signal.SIGSTOP)
        self.addCleanup(os.kill, pid, signal.SIGCONT)

    def test_acquire_waits_for_zookeeper_to_come_back(self):
        self.flags(coordination_outage_timeout=60, group='orc')
        self._stop_zookeeper()
        restart = threading.Timer(2, self._zookeeper, ('start',))
        restart.start()
        self.addCleanup(restart.cancel)
        t0 = time.monotonic()
        self.coordinator.acquire(uuids.flow, [('instance', 'i1')], timeout=0)
        self.assertGreater(time.monotonic() - t0, 1.5)
        self.assertEqual(uuids.flow,
                         self.coordinator.holder('instance', 'i1')['owner'])

    def test_outage_longer_than_the_bound_fails_clearly(self):
        self.flags(coordination_outage_timeout=2, group='orc')
        self._stop_zookeeper()
        t0 = time.monotonic()
        exc = self.assertRaises(orc_exc.CoordinationUnavailable,
                                self.coordinator.acquire, uuids.flow,
                                [('instance', 'i1')], timeout=0)
        self.assertLess(time.monotonic() - t0, 30)
        self.assertIn('127.0.0.1:%s' % self.port, str(exc))

    def test_release_in_a_hang_fails_within_the_bound(self):
        # the orchestrator releases when a flow ends: a hung ZooKeeper must
        # cost it [orc] coordination_outage_timeout at most, not a session
        # timeout per request; the locks stay for a later break
        self.flags(coordination_outage_timeout=2, group='orc')
        resources = [('instance', 'i1'), ('port', 'p1'), ('volume', 'v1')]
        self.coordinator.acquire(uuids.flow, resources, timeout=0)
        self._freeze_zookeeper()
        t0 = time.monotonic()
        exc = self.assertRaises(orc_exc.CoordinationUnavailable,
                                self.coordinator.release, uuids.flow,
                                resources)
        self.assertLess(time.monotonic() - t0, 3)
        self.assertIn('127.0.0.1:%s' % self.port, str(exc))
        os.kill(self._pid(), signal.SIGCONT)
        self.assertEqual(uuids.flow,
                         self.coordinator.holder('instance', 'i1')['owner'])
        # the flow has ended: the next flow breaks its leftovers
        self.coordinator.stale_owner = lambda owner: owner == uuids.flow
        self.coordinator.acquire(uuids.flow_b, resources, timeout=0)
        self.assertEqual(uuids.flow_b,
                         self.coordinator.holder('volume', 'v1')['owner'])

    def test_board_calls_end_within_the_bound(self):
        # the conductor loop's exclusive scan and a claimed run's abort
        # check must not hang a conductor through an outage
        self.flags(coordination_outage_timeout=2, group='orc')
        board = jobboard.ZooKeeperJobBoard('owner-a', self.coordinator)
        board.connect()
        self.addCleanup(board.close)
        self._stop_zookeeper()
        t0 = time.monotonic()
        with board.exclusive('leftovers') as mine:
            self.assertFalse(mine)
        self.assertRaises(orc_exc.CoordinationUnavailable,
                          board.abort_requested, uuids.flow)
        self.assertRaises(orc_exc.CoordinationUnavailable,
                          board.request_abort, uuids.flow, 'why')
        self.assertLess(time.monotonic() - t0, 3 * 3)

    def test_suspension_is_reported_and_the_session_survives(self):
        events = []
        self.coordinator.add_session_listener(events.append)
        session = self.coordinator.session_id()
        self.assertIsInstance(session, int)
        self._stop_zookeeper()
        _wait_for(lambda: events, 30, 'suspended reported')
        self.assertEqual(['suspended'], events)
        self.assertIsNone(self.coordinator.session_id())
        self._zookeeper('start')
        _wait_for(lambda: len(events) > 1, 30, 'connected reported')
        # the server kept the session (30 s timeout): same session, no loss
        self.assertEqual(['suspended', 'connected'], events)
        self.assertEqual(session, self.coordinator.session_id())


class MemoryCoordinatorTest(_LockContract, test.NoDBTestCase):

    def make(self, conductor_id):
        self.addCleanup(coordination.MemoryCoordinator.reset)
        return coordination.MemoryCoordinator(conductor_id, 'memory://test')

    def write_record(self, kind, rid, record):
        self.a._locks[(kind, rid)] = record

    def test_session_is_the_process(self):
        events = []
        self.a.add_session_listener(events.append)
        self.a.start()
        self.a.acquire(uuids.flow_a, [('instance', 'i1')])
        self.a.stop()
        self.assertEqual([], events)
        self.assertIsInstance(self.a.session_id(), int)
        self.assertEqual(self.a.session_id(), self.b.session_id())
        self.assertIsNone(self.a.client)
        self.assertRaises(NotImplementedError, self.a.claim_token, '/x')


class ZooKeeperCoordinatorTest(_LockContract, test.NoDBTestCase):

    def setUp(self):
        self.chroot = '/nova-orc-unit-%s' % uuidutils.generate_uuid()
        super().setUp()

    def make(self, conductor_id):
        self.flags(coordination_url='zookeeper://%s%s' % (
            ZOOKEEPER, self.chroot), group='orc')
        coordinator = coordination.coordinator_from_conf(
            conductor_id=conductor_id)
        coordinator.start()
        self.addCleanup(coordinator.stop)
        return coordinator

    def tearDown(self):
        self.a.client.delete(self.chroot, recursive=True)
        super().tearDown()

    def write_record(self, kind, rid, record):
        self.a.client.create('%s/locks/%s/%s' % (self.chroot, kind, rid),
                             json.dumps(record).encode(), makepath=True)

    def _race(self, coordinator, path_end, action):
        """Run ``action()`` once, right after ``coordinator`` reads the lock
        node ending in ``path_end`` (what another conductor may do between
        a read and the transaction that follows it)."""
        real_read = coordinator._read
        done = []

        def read(path):
            result = real_read(path)
            if path.endswith(path_end) and not done:
                done.append(path)
                action()
            return result
        patcher = mock.patch.object(coordinator, '_read', side_effect=read)
        patcher.start()
        self.addCleanup(patcher.stop)
        return done

    def test_conductor_registration_waits_out_a_lost_connection(self):
        """A connection lost while a conductor registers its liveness node
        at start-up (seen under load with 2 s sessions) is retried within
        [orc] coordination_outage_timeout instead of failing the start."""
        board = jobboard.ZooKeeperJobBoard('conductor-a-owner', self.a)
        real_create = self.a.client.create
        lost = []

        def create(path, *args, **kwargs):
            if path.startswith(board.conductors_path + '/') and not lost:
                lost.append(path)
                raise kazoo_exc.ConnectionLoss()
            return real_create(path, *args, **kwargs)
        with mock.patch.object(self.a.client, 'create', side_effect=create):
            board.connect()
        self.addCleanup(board.close)
        self.assertEqual(1, len(lost), lost)
        self.assertEqual(['conductor-a-owner'],
                         self.a.client.get_children(board.conductors_path))

    def test_claim_whose_session_ended_while_claiming_is_not_taken(self):
        """Conductor A is paused while it claims a job: its session
        expires, B claims the job, A wakes up on a new session. A must not
        come back with B's claim node and its token (both would pass every
        fence), and B's claim stays B's."""
        board_a = jobboard.ZooKeeperJobBoard('owner-a', self.a)
        board_b = jobboard.ZooKeeperJobBoard('owner-b', self.b)
        for board in (board_a, board_b):
            board.connect()
            self.addCleanup(board.close)
        book = tf_models.LogBook('book')
        board_a.post(uuids.flow, book, {'book': book.uuid})

        def job_of(board):
            return [j for j in board._board.iterjobs(ensure_fresh=True)
                    if j.details['flow_id'] == uuids.flow][0]
        taken_by_b = []
        real_claim = board_a._board.claim

        def claim_then_pause(job, owner):
            real_claim(job, owner)
            old_session = self.a.session_id()
            _expire_session(self.a)
            _wait_for(lambda: self.a.client.connected and
                      self.a.session_id() not in (None, old_session), 30,
                      'conductor A on a new session')
            _wait_for(lambda: self.b.claim_token(job.lock_path) is None, 30,
                      "A's expired claim gone")
            taken_by_b.append(board_b.claim(job_of(board_b)))
        with mock.patch.object(board_a._board, 'claim',
                               side_effect=claim_then_pause):
            claim_a = board_a.claim(job_of(board_a))
        self.assertIsNotNone(taken_by_b[0])
        self.assertIsNone(claim_a)
        self.assertTrue(board_b.still_owned(taken_by_b[0]))
        self.assertEqual('owner-b',
                         board_b._board.find_owner(job_of(board_b)))

    def test_locks_outlive_the_session_that_took_them(self):
        # locks belong to the job: a dead conductor's locks stay for the
        # conductor that resumes its job
        c = self.make('conductor-c')
        c.acquire(uuids.flow_c, [('instance', 'i9')])
        c.stop()
        self.assertEqual(uuids.flow_c, self.a.holder('instance', 'i9')['owner'])

    def test_unreachable_zookeeper_fails_clearly(self):
        self.flags(coordination_url='zookeeper://127.0.0.1:1/x', group='orc',
                   zookeeper_connect_timeout=0.5)
        coordinator = coordination.coordinator_from_conf(conductor_id='x')
        exc = self.assertRaises(orc_exc.CoordinationUnavailable,
                                coordinator.start)
        self.assertIn('127.0.0.1:1', str(exc))

    def test_release_never_deletes_a_lock_taken_meanwhile(self):
        # flow_a ended; while its release runs, conductor b breaks its p1
        # lock (stale_owner) and flow_b takes p1: flow_a's release must
        # leave flow_b's lock alone and still free p2
        resources = [('port', 'p1'), ('port', 'p2')]
        self.a.acquire(uuids.flow_a, resources)
        self.b.stale_owner = lambda owner: owner == uuids.flow_a
        raced = self._race(self.a, '/port/p1', lambda: self.b.acquire(
            uuids.flow_b, [('port', 'p1')], timeout=0))
        self.a.release(uuids.flow_a, resources)
        self.assertTrue(raced)
        self.assertEqual(uuids.flow_b, self.b.holder('port', 'p1')['owner'])
        self.assertIsNone(self.b.holder('port', 'p2'))
        # and flow_b's own release still works
        self.b.release(uuids.flow_b, resources)
        self.assertEqual([], self.b.list_locks())

    def test_lock_node_without_owner_marker_is_released(self):
        # lock nodes written before owner markers existed
        self.write_record('port', 'p1', {'owner': uuids.flow_a})
        self.b.release(uuids.flow_b, [('port', 'p1')])
        self.assertEqual(uuids.flow_a, self.b.holder('port', 'p1')['owner'])
        self.a.release(uuids.flow_a, [('port', 'p1')])
        self.assertIsNone(self.b.holder('port', 'p1'))

    def test_lock_node_that_is_no_json_object_is_listed(self):
        self.a.client.create(self.chroot + '/locks/port/p1', b'[1]',
                             makepath=True)
        self.assertEqual([{'kind': 'port', 'id': 'p1', 'owner': '?',
                           'data': '[1]'}], self.b.list_locks())

    def test_conflict_inside_the_transaction_is_named(self):
        # flow_a takes b after flow_b read it free: flow_b's transaction
        # fails on b (RolledBackError for a, RuntimeInconsistency for c)
        resources = [('port', 'a'), ('port', 'b'), ('port', 'c')]
        raced = self._race(self.b, '/port/b', lambda: self.a.acquire(
            uuids.flow_a, [('port', 'b')], timeout=0))
        exc = self.assertRaises(orc_exc.ResourceLocked, self.b.acquire,
                                uuids.flow_b, resources, timeout=0)
        self.assertTrue(raced)
        self.assertIn('port b is locked by flow %s' % uuids.flow_a, str(exc))
        self.assertIsNone(self.a.holder('port', 'a'))
        self.assertIsNone(self.a.holder('port', 'c'))

    def test_own_lock_taken_inside_the_transaction(self):
        # the same flow, resumed by conductor a while conductor b still runs
        # it, locks a first: b's transaction fails on a and reports
        # RuntimeInconsistency for b and c, which is no outage
        resources = [('port', 'a'), ('port', 'b'), ('port', 'c')]
        raced = self._race(self.b, '/port/a', lambda: self.a.acquire(
            uuids.flow_b, [('port', 'a')], timeout=0))
        self.b.acquire(uuids.flow_b, resources, timeout=0)
        self.assertTrue(raced)
        self.assertEqual([uuids.flow_b] * 3,
                         [l['owner'] for l in self.a.list_locks()])

    def test_lost_session_is_reported_then_a_new_one(self):
        c = self.make('conductor-c')
        blocked = threading.Event()
        events = []

        def slow_listener(state):
            # a callback that blocks must not hold up kazoo
            blocked.wait(30)
        c.add_session_listener(slow_listener)
        c.add_session_listener(events.append)
        c.acquire(uuids.flow_c, [('instance', 'i1')])
        session = c.session_id()
        self.assertIsInstance(session, int)
        _expire_session(c)
        _wait_for(lambda: c.session_id() not in (None, session), 30,
                  'new session while a listener blocks')
        c.acquire(uuids.flow_c, [('instance', 'i2')], timeout=0)
        self.assertEqual([], events)
        blocked.set()
        _wait_for(lambda: len(events) == 3, 30, 'three events')
        self.assertEqual(['suspended', 'lost', 'connected'], events)
        # locks belong to the job, not to the session
        self.assertEqual(uuids.flow_c,
                         self.a.holder('instance', 'i1')['owner'])
        # stopping is no loss
        c.stop()
        time.sleep(0.2)
        self.assertEqual(3, len(events))
        self.assertIsNone(c.session_id())

    def test_jobboard_claim_lives_and_dies_with_the_session(self):
        # the contract the orchestrator builds on: jobs on TaskFlow's
        # ZooKeeper job board sharing the coordinator's client; a claim is
        # an ephemeral node of the claimer's session, its fencing token the
        # node's creation zxid
        def board(coordinator):
            jobboard = impl_zookeeper.ZookeeperJobBoard(
                coordinator.conductor_id,
                {'path': self.chroot + '/jobs', 'check_compatible': False},
                client=coordinator.client)
            jobboard.connect()
            self.addCleanup(jobboard.close)
            return jobboard

        def job_on(jobboard, uuid):
            return {j.uuid: j for j in jobboard.iterjobs(
                ensure_fresh=True)}[uuid]
        c = self.make('conductor-c')
        posted = board(self.a).post('boot', details={'flow': uuids.flow})
        board_c = board(c)
        job_c = job_on(board_c, posted.uuid)
        board_c.claim(job_c, 'conductor-c')
        stat = self.a.client.exists(job_c.lock_path)
        self.assertEqual(c.session_id(), stat.ephemeralOwner)
        token = c.claim_token(job_c.lock_path)
        self.assertEqual(stat.czxid, token)
        board_b = board(self.b)
        job_b = job_on(board_b, posted.uuid)
        self.assertEqual(tf_states.CLAIMED, job_b.state)
        self.assertRaises(tf_exc.UnclaimableJob, board_b.claim, job_b,
                          'conductor-b')
        # conductor c hangs past its session timeout: its claim vanishes
        _expire_session(c)
        _wait_for(lambda: self.b.claim_token(job_b.lock_path) is None, 30,
                  'claim of the expired session gone')
        self.assertEqual(tf_states.UNCLAIMED, job_b.state)
        board_b.claim(job_b, 'conductor-b')
        self.assertGreater(self.b.claim_token(job_b.lock_path), token)
        self.assertEqual('conductor-b', board_b.find_owner(job_b))
        # the coordinator still owns its client: the boards did not stop it
        self.assertTrue(self.b.client.connected)
