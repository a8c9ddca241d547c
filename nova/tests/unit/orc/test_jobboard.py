"""Exactly one job per flow, on the real ZooKeeper.

``ZooKeeperJobBoard.post`` creates TaskFlow's job node in one transaction
with ``<chroot>/posted/<flow id>``: a flow posted twice (a poster asking
again after a lost answer, an adopter racing a poster woken from a pause,
``nova-orc job resume``) has one job. ZooKeeper comes from
``ORC_TEST_ZOOKEEPER`` (started by ``run_tests.sh``); no skipping.
"""

import json
import os
import threading
from unittest import mock

from oslo_utils.fixture import uuidsentinel as uuids
from oslo_utils import uuidutils
from taskflow.jobs.backends import impl_zookeeper
from taskflow.persistence import models as tf_models

from nova.orc import coordination
from nova.orc import jobboard
from nova import test
from nova.tests.unit.orc import test_coordination

ZOOKEEPER = os.environ.get('ORC_TEST_ZOOKEEPER', '127.0.0.1:2181')


class _BoardTestBase(test.NoDBTestCase):
    """Two conductors' boards on one chroot of the real ZooKeeper."""

    def setUp(self):
        super().setUp()
        self.chroot = '/nova-orc-board-%s' % uuidutils.generate_uuid()
        self.flags(coordination_url='zookeeper://%s%s' % (
            ZOOKEEPER, self.chroot), group='orc')
        self.a, self.board_a = self._board('owner-a')
        self.b, self.board_b = self._board('owner-b')
        self.book = tf_models.LogBook('book')

    def tearDown(self):
        self.a.client.delete(self.chroot, recursive=True)
        super().tearDown()

    def _board(self, owner):
        coordinator = coordination.coordinator_from_conf(conductor_id=owner)
        coordinator.start()
        self.addCleanup(coordinator.stop)
        board = jobboard.ZooKeeperJobBoard(owner, coordinator)
        board.connect()
        self.addCleanup(board.close)
        return coordinator, board

    def _post(self, board, flow_id=uuids.flow):
        return board.post(flow_id, self.book, {
            'operation': 'boot', 'instance_uuid': uuids.instance,
            'book': self.book.uuid, 'posted_by': board.owner})

    def _job_nodes(self):
        """``{flow id: [job node]}`` as ZooKeeper holds them."""
        client = self.a.client
        by_flow = {}
        path = self.chroot + '/jobs'
        for name in client.get_children(path):
            if name.endswith(jobboard.LOCK_POSTFIX):
                continue
            data, _stat = client.get('%s/%s' % (path, name))
            flow_id = json.loads(data)['details']['flow_id']
            by_flow.setdefault(flow_id, []).append(name)
        return by_flow


class OneJobPerFlowTest(_BoardTestBase):

    def _assert_eight_concurrent_posts_make_one_job(self):
        """Eight posts of one flow from the two boards, through a barrier:
        one says posted, the flow has one job."""
        results = []
        barrier = threading.Barrier(8)

        def post(board):
            barrier.wait(10)
            results.append(self._post(board))
        threads = [threading.Thread(target=post, args=(board,))
                   for board in [self.board_a, self.board_b] * 4]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        self.assertEqual(8, len(results))
        self.assertEqual(1, results.count(True), results)
        self.assertEqual({uuids.flow: 1},
                         {f: len(n) for f, n in self._job_nodes().items()})

    def test_concurrent_posts_of_one_flow_make_one_job(self):
        self._assert_eight_concurrent_posts_make_one_job()

    def test_post_asked_again_after_a_lost_answer_posts_nothing(self):
        self.assertTrue(self._post(self.board_a))
        # the adopter, or the poster asking again after a lost answer
        self.assertFalse(self._post(self.board_b))
        self.assertFalse(self._post(self.board_a))
        self.assertEqual([uuids.flow], list(self._job_nodes()))
        self.assertTrue(self._post(self.board_a, uuids.other_flow))
        self.assertEqual(1, len(self._job_nodes()[uuids.other_flow]))

    def test_a_post_whose_answer_was_lost_finds_its_own_job(self):
        # the transaction committed but its answer was lost: the retry
        # finds the marker it made and says posted (the poster keeps the
        # request's secrets for its own run)
        data = b'{"details": {"flow_id": "%s"}}' % uuids.flow.encode()
        self.assertTrue(self.board_a._post_once(uuids.flow, data, None,
                                                uuids.job))
        self.assertTrue(self.board_a._post_once(uuids.flow, data, None,
                                                uuids.job))
        self.assertFalse(self.board_a._post_once(uuids.flow, data, None,
                                                 uuids.other_job))
        self.assertEqual(1, len(self._job_nodes()[uuids.flow]))

    def test_consumed_job_takes_its_marker_and_the_flow_can_be_posted_again(
            self):
        # nova-orc job resume of a quarantined flow: its job was consumed
        self._post(self.board_a)
        test_coordination._wait_for(
            lambda: self.board_a.claimable(), 10, 'job claimable')
        claim = self.board_a.claim(self.board_a.claimable()[0])
        self.board_a.consume(claim)
        self.assertEqual([], self.a.client.get_children(
            self.board_a.posted_path))
        self.assertTrue(self._post(self.board_b))
        self.assertEqual(1, len(self._job_nodes()[uuids.flow]))

    def test_a_marker_that_outlived_its_job_is_replaced(self):
        # a conductor died between consuming a job and deleting its marker
        self.a.client.create('%s/%s' % (self.board_a.posted_path,
                                        uuids.flow))
        self.assertTrue(self._post(self.board_a))
        self.assertEqual(1, len(self._job_nodes()[uuids.flow]))

    def test_concurrent_posts_replacing_a_stale_marker_make_one_job(self):
        # the adopter and an operator's job resume (or two adopters) both
        # find the marker stale: one replaces it, the others see its job
        self.a.client.create('%s/%s' % (self.board_a.posted_path,
                                        uuids.flow))
        self._assert_eight_concurrent_posts_make_one_job()

    def test_a_stale_marker_deleted_meanwhile_is_created_again(self):
        # a poster found the marker stale, a consume deleted it before the
        # poster's compare-and-set: the post creates it, not an error
        data = b'{"details": {"flow_id": "%s"}}' % uuids.flow.encode()
        self.assertTrue(self.board_a._post_once(
            uuids.flow, data, None, uuids.job, attempts=2, stale_version=0))
        self.assertEqual(1, len(self._job_nodes()[uuids.flow]))

    def test_a_consume_leaves_the_marker_of_a_later_post(self):
        # a consume retried after an outage, once the flow was posted again
        # (an operator's job resume): the marker names the new job, stays
        path = '%s/%s' % (self.board_a.posted_path, uuids.flow)
        self.a.client.create(path, uuids.new_job.encode())
        self.board_a._delete_marker(uuids.old_job, path)
        self.assertEqual(uuids.new_job.encode(), self.a.client.get(path)[0])
        self.board_a._delete_marker(uuids.new_job, path)
        self.assertIsNone(self.a.client.exists(path))

    def test_a_flow_that_ran_and_ended_is_not_posted_again(self):
        # its poster was paused between journaling it and posting its job;
        # meanwhile an adopter posted it, it ran and ended, its job and
        # marker are gone... but for a marker the adopter's consume left
        self.a.client.create('%s/%s' % (self.board_a.posted_path,
                                        uuids.flow))
        self.assertFalse(self.board_a.post(
            uuids.flow, self.book, {'posted_by': 'owner-a'},
            ended=lambda: True))
        self.assertEqual({}, self._job_nodes())

    def test_a_job_posted_elsewhere_is_claimable_at_once(self):
        # the posts are ours, not TaskFlow's: a board that has not read the
        # new node yet reads it when its watch says there is one
        self._post(self.board_b)
        test_coordination._wait_for(
            lambda: self.board_a.claimable(), 10, 'job claimable on A')
        [job] = self.board_a.claimable()
        self.assertEqual((uuids.flow, 'owner-b'),
                         self.board_a.job_identity(job))

    def test_a_scan_of_the_claimable_jobs_asks_zookeeper_nothing(self):
        """The claim loop scans at every wake of a burst: with the jobs
        known, the scan is in memory (it used to ask each job's state: a
        sync and two reads per job on the board, O(jobs in flight) per
        boot)."""
        flows = [getattr(uuids, 'flow%d' % i) for i in range(5)]
        for flow in flows:
            self.assertTrue(self._post(self.board_b, flow))
        test_coordination._wait_for(
            lambda: len(self.board_a.claimable()) == 5, 10,
            'five jobs claimable on A')
        client = self.a.client
        with mock.patch.object(client, 'get', wraps=client.get) as get, \
                mock.patch.object(client, 'sync', wraps=client.sync) as sync, \
                mock.patch.object(client, 'exists',
                                  wraps=client.exists) as exists, \
                mock.patch.object(client, 'get_children',
                                  wraps=client.get_children) as children:
            jobs = self.board_a.claimable()
        self.assertEqual(sorted(flows), sorted(
            self.board_a.job_identity(job)[0] for job in jobs))
        for request in (get, sync, exists, children):
            request.assert_not_called()
        # a claimed job is not claimable (the watch saw its claim node)
        claim = self.board_a.claim(jobs[0])
        self.assertIsNotNone(claim)
        test_coordination._wait_for(
            lambda: len(self.board_a.claimable()) == 4, 10,
            'four jobs claimable on A')

    def test_taskflow_reads_our_posting(self):
        # the posting format is TaskFlow's (format_posting): a plain
        # TaskFlow board sees name, details and book as its own post makes
        # them; this fails when upstream's format changes
        self._post(self.board_a)
        plain = impl_zookeeper.ZookeeperJobBoard(
            'plain', {'path': self.chroot + '/jobs',
                      'check_compatible': False}, client=self.a.client)
        plain.connect()
        self.addCleanup(plain.close)
        [job] = list(plain.iterjobs(ensure_fresh=True))
        self.assertEqual('boot-%s' % uuids.flow, job.name)
        self.assertEqual(uuids.flow, job.details['flow_id'])
        self.assertEqual('owner-a', job.details['posted_by'])
        self.assertEqual(self.book.uuid, job.book_uuid)
        self.assertEqual(self.book.name, job.book_name)
        plain.claim(job, 'plain')
        self.assertEqual('plain', plain.find_owner(job))


class BoardCallsTest(_BoardTestBase):
    """The board's own ZooKeeper calls: bounded, and none blocking kazoo's
    event thread."""

    def test_abort_request_reaches_the_conductor_without_a_blocking_read(
            self):
        told = []
        self.board_a.on_abort = lambda flow_id, reason: told.append(
            (flow_id, reason))
        with mock.patch.object(self.a.client, 'get',
                               side_effect=AssertionError('blocking get')):
            self.board_b.request_abort(uuids.flow, 'operator says stop')
            test_coordination._wait_for(lambda: told, 10, 'abort told')
        self.assertEqual([(uuids.flow, 'operator says stop')], told)
        self.assertEqual('operator says stop',
                         self.board_a.abort_requested(uuids.flow))
        self.assertIsNone(self.board_a.abort_requested(uuids.other_flow))

    def test_exclusive_is_one_conductor_at_a_time(self):
        with self.board_a.exclusive('scan') as mine_a:
            with self.board_b.exclusive('scan') as mine_b:
                self.assertTrue(mine_a)
                self.assertFalse(mine_b)
        with self.board_b.exclusive('scan') as mine_b:
            self.assertTrue(mine_b)

    def test_exclusive_is_not_blocked_by_an_earlier_releases_lock(self):
        # kazoo's Lock recipe (earlier releases) left a persistent node at
        # <chroot>/exclusive/<name>: it must not hold the scan for ever
        self.a.client.create(self.chroot + '/exclusive/scan', makepath=True)
        with self.board_a.exclusive('scan') as mine:
            self.assertTrue(mine)

    def test_exclusive_found_created_by_its_own_session_is_held(self):
        # a create whose answer was lost and that was asked again, or a
        # release that failed: the node is this session's, held
        self.a.client.create(self.chroot + '/holders/scan', b'owner-a',
                             ephemeral=True, makepath=True)
        with self.board_a.exclusive('scan') as mine_a:
            self.assertTrue(mine_a)
        with self.board_b.exclusive('scan') as mine_b:
            self.assertTrue(mine_b)  # released at the end of A's block
        self.b.client.create(self.chroot + '/holders/scan', b'owner-a',
                             ephemeral=True)
        with self.board_a.exclusive('scan') as mine_a:
            # the same owner name, another session: not A's
            self.assertFalse(mine_a)


class MemoryOneJobPerFlowTest(test.NoDBTestCase):

    def test_second_post_posts_nothing(self):
        self.addCleanup(jobboard.MemoryJobBoard.reset)
        board = jobboard.MemoryJobBoard('owner', 'memory://one-job')
        book = tf_models.LogBook('book')
        self.assertTrue(board.post(uuids.flow, book, {}))
        self.assertFalse(board.post(uuids.flow, book, {}))
        self.assertEqual([uuids.flow],
                         [j['flow_id'] for j in board.list_jobs()])
