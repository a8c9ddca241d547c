"""Our tests for the intent of upstream tests that cannot pass with our
services.

Some upstream functional tests on the boot path patch, or wait for, a stock
internal our boot flow does not call (``ComputeAPI.build_and_run_instance``,
``ComputeManager._build_resources``, ...): with our services the patch never
takes effect, or the wait never ends.
``tools/compat.d/replaced-internals.yaml`` lists them, each with the test
here (or elsewhere under ``nova/tests/functional/orc/``) that checks the
same behaviour through the steps our flow does call, and ``tools/compat``
reports them apart.

On Nova's harness with :class:`nova.tests.functional.orc.fixtures.OrcFixture`
and ZooKeeper, as :mod:`nova.tests.functional.orc.test_delete_during_build`,
whose helpers the delete tests reuse.
"""

import time

from nova import exception
from nova.tests.functional.orc import fixtures as orc_fixtures
from nova.tests.functional.orc import test_boot
from nova.tests.functional.orc import test_delete_during_build as ddb
from nova.tests import fixtures as nova_fixtures


class _DeleteDuringBuildHelpers:
    """The helpers of :class:`ddb.DeleteDuringBuildTest`, without its
    tests (a subclass would run them a second time)."""

    _wait = ddb.DeleteDuringBuildTest._wait
    _post = ddb.DeleteDuringBuildTest._post
    _delete_during = ddb.DeleteDuringBuildTest._delete_during
    _flow_state = ddb.DeleteDuringBuildTest._flow_state
    _wait_for_flow_end = ddb.DeleteDuringBuildTest._wait_for_flow_end
    _faults = ddb.DeleteDuringBuildTest._faults
    _error_logs = ddb.DeleteDuringBuildTest._error_logs
    _assert_nothing_left = ddb.DeleteDuringBuildTest._assert_nothing_left


class BootFromVolumeDeletedDuringBuildTest(_DeleteDuringBuildHelpers,
                                           test_boot.OrcBootTestBase):
    """Intent of upstream ``regressions.test_bug_2088066``: a server booted
    from a volume and deleted while its build is in progress leaves no
    volume attachment.

    Upstream holds stock's conductor in ``ComputeAPI.build_and_run_instance``
    (the cast to the compute, after scheduling), which our flow never calls:
    here the boot flow is held at each point where the volume is attached
    (by the API, at the create) or being attached or held by the host: while
    the scheduler runs, after the record is created and before the first
    host step (where stock's conductor would call the compute), and during
    the spawn with the volume attached. The delete while the block device
    step attaches it is
    ``test_delete_during_build.DeleteDuringBuildTest.
    test_delete_during_block_devices``.

    Each test checks that the server, its attachments and everything else
    of its build are gone, and that its boot flow ran and ended reverted.
    """

    CAST_AS_CALL = False
    VOLUME = nova_fixtures.CinderFixture.IMAGE_BACKED_VOL

    def _setup_compute_service(self):
        self.flags(compute_driver='orc_fake.SlowSpawnDriver')
        super()._setup_compute_service()

    def setUp(self):
        super().setUp()
        self.terminate = ddb.TerminateWatch(self)

    def _attachments(self, server_id):
        """Attachments of the test volume to ``server_id`` in the cinder
        fixture."""
        return [a for a in self.cinder.volume_to_attachment[
            self.VOLUME].values() if a['instance_uuid'] == server_id]

    def _reverted_flows(self):
        return orc_fixtures.FlowTracker.finished[('boot', 'REVERTED')]

    def _check(self, server, reverted_before):
        self.assertEqual([], self._attachments(server['id']))
        self.assertEqual(reverted_before + 1, self._reverted_flows(),
                         'the boot flow of the server ran and reverted')
        self._assert_nothing_left(server, volume_id=self.VOLUME)

    def test_deleted_while_scheduling(self):
        # the upstream test's window: a build request and the attachment
        # the API made, no instance record yet; the API deletes the build
        # request itself
        reverted = self._reverted_flows()
        gate = ddb.Gate(self, 'nova.scheduler.manager.SchedulerManager.'
                              'select_destinations')
        server = self._post(volume_id=self.VOLUME)
        self._wait(gate.entered, 'scheduling')
        self.assertNotEqual([], self._attachments(server['id']),
                            'the API attached the volume at the create')
        self._delete_during(server, gate, through_host=False)
        self._check(server, reverted)

    def test_deleted_before_the_host_steps(self):
        # where stock's conductor casts build_and_run_instance: scheduled,
        # the instance record in its cell, nothing asked of the host yet
        reverted = self._reverted_flows()
        gate = ddb.Gate(self, 'nova.orc.compute.rpcapi.OrcComputeAPI.'
                              'claim_resources')
        server = self._post(volume_id=self.VOLUME)
        self._wait(gate.entered, 'the first host step')
        self.assertNotEqual([], self._attachments(server['id']))
        self._delete_during(server, gate, through_host=False)
        self._check(server, reverted)

    def test_deleted_while_spawning_with_the_volume_attached(self):
        self.flags(spawn_delay=ddb.SPAWN_DELAY, group='orc_fake')
        reverted = self._reverted_flows()
        server = self._post(volume_id=self.VOLUME)
        deadline = time.monotonic() + ddb.TIMEOUT
        while (self.api.get_server(server['id'])['OS-EXT-STS:task_state'] !=
               'spawning'):
            self.assertLess(time.monotonic(), deadline, 'never spawned')
            time.sleep(0.05)
        attached = self._attachments(server['id'])
        self.assertEqual(1, len(attached), attached)
        self.assertIsNotNone(attached[0].get('connector'),
                             'the block device step completed the attach')
        self._delete_during(server)
        self._check(server, reverted)


class BuildAbortNotificationTest(test_boot.OrcBootTestBase):
    """Intent of upstream ``notification_sample_tests.test_instance.
    TestInstanceNotificationSample.test_create_server_error``: a build that
    fails on the host with an error stock never reschedules
    (``FlavorDiskTooSmall``) puts the server in ERROR without a host, with
    the ``instance.create.start`` and ``instance.create.error`` versioned
    notifications, the latter carrying the fault and its traceback, and
    its delete is the delete of a server that was not scheduled.

    Upstream raises it from ``ComputeManager._build_resources``, which our
    flow never calls; stock's ``_build_and_run_instance`` handles the error
    the same way when the driver's spawn raises it, the step our flow
    shares with stock, so it is raised there.
    """

    def setUp(self):
        super().setUp()
        self.notifier = self.useFixture(
            nova_fixtures.NotificationFixture(self))

    def test_build_aborted_notifies_create_error_with_the_fault(self):
        def spawn(*args, **kwargs):
            raise exception.FlavorDiskTooSmall()
        self.stub_out('nova.virt.fake.FakeDriver.spawn', spawn)
        # the upstream test's request: a port, tags, trusted certificates
        server = self._build_server(networks=[
            {'port': self.neutron.port_1['id']}])
        server['tags'] = ['tag']
        server['trusted_image_certificates'] = ['cert-id-1', 'cert-id-2']
        server = self.api.post_server({'server': server})
        server = self._wait_for_state_change(server, 'ERROR')
        self._wait_for_flow_end(server['id'])

        self.assertIsNone(server['OS-EXT-SRV-ATTR:host'])
        self.assertEqual(
            "Build of instance %s aborted: The created instance's disk "
            "would be too small." % server['id'], server['fault']['message'])
        # the fault keeps the traceback of the error (admin view)
        self.assertIn('raise exception.FlavorDiskTooSmall()',
                      server['fault']['details'])
        events = [n['event_type']
                  for n in self.notifier.versioned_notifications]
        # (stock also sends instance.shutdown.* in between, for the guest
        # it cleans up after a failed spawn; upstream's stub of
        # _build_resources skips that)
        self.assertEqual(
            ['scheduler.select_destinations.start',
             'scheduler.select_destinations.end',
             'instance.create.start', 'instance.create.error'],
            [e for e in events if e.startswith(
                ('scheduler.', 'instance.create.'))])
        error = [n for n in self.notifier.versioned_notifications
                 if n['event_type'] == 'instance.create.error'][0]
        payload = error['payload']['nova_object.data']
        self.assertEqual(server['id'], payload['uuid'])
        self.assertEqual(['tag'], payload['tags'])
        fault = payload['fault']['nova_object.data']
        self.assertEqual('FlavorDiskTooSmall', fault['exception'])
        self.assertIn('raise exception.FlavorDiskTooSmall()',
                      fault['traceback'])
        # not rescheduled: one host tried
        self.assertEqual(
            1, len([n for n in self.notifier.versioned_notifications
                    if n['event_type'] == 'instance.create.start']))

        self.notifier.reset()
        self._delete_server(server)
        events = [n['event_type']
                  for n in self.notifier.versioned_notifications]
        self.assertEqual(['instance.delete.start', 'instance.delete.end'],
                         events)
        for notification in self.notifier.versioned_notifications:
            # the delete of a server without a host (the API's local
            # delete): stock's *_not_scheduled samples
            self.assertIsNone(
                notification['payload']['nova_object.data']['host'])

