"""Boot-path results that must be stock's, word for word, with our services.

Each test here reproduces a case where an upstream functional test found
our conductor and compute different from stock's (the upstream test named
in its docstring, run by ``tools/compat``), on Nova's harness with our
managers and ZooKeeper (:class:`nova.tests.functional.orc.test_boot.
OrcBootTestBase`), and asserts what stock records.
"""

import threading
import time
from unittest import mock

import fixtures
from oslo_db import exception as oslo_db_exc

from nova.compute import instance_actions
from nova.compute import task_states
from nova import context as nova_context
from nova import exception
from nova import objects
from nova.scheduler import utils as scheduler_utils
from nova import test
from nova.tests.functional.orc import fixtures as orc_fixtures
from nova.tests.functional.orc import test_boot
from nova.tests import fixtures as nova_fixtures


class ParityTestBase(test_boot.OrcBootTestBase):
    """Two computes (host1, host2), our conductor and computes, ZooKeeper."""

    def _post(self, hints=None, **kwargs):
        """Create a server (scheduler hints allowed) and wait for its flow.

        :returns: the server once its flow ended
        """
        body = {'server': self._build_server(networks='none', **kwargs)}
        if hints:
            body['os:scheduler_hints'] = hints
        server = self.api.post_server(body)
        self._wait_for_flow_end(server['id'])
        return self.api.get_server(server['id'])

    def _versioned(self, event_type):
        return [n for n in self.notifier.versioned_notifications
                if n['event_type'] == event_type]

    def _legacy(self, event_type):
        return [n for n in self.notifier.notifications
                if n.event_type == event_type]

    def _failed_builds(self):
        """``failed_builds`` of every node once the periodic flushed them
        (stock counts in memory and writes at the next
        ``update_available_resource``)."""
        ctxt = nova_context.get_admin_context()
        for compute in self.computes.values():
            compute.manager.update_available_resource(ctxt)
        return {n.host: n.stats.get('failed_builds')
                for n in objects.ComputeNodeList.get_all(ctxt)}


class LatePolicyViolationTest(ParityTestBase):
    """The late anti-affinity check on the compute fails (upstream
    ``test_server_group.ServerGroupTestV21.test_failed_count_with_*``):
    stock reschedules by policy (``RescheduledByPolicyException``), which
    does not count as a failed build of the node, after ``create.error``
    carrying the violation."""

    @mock.patch('nova.scheduler.filters.affinity_filter.'
                'ServerGroupAntiAffinityFilter.host_passes',
                return_value=True)
    def test_policy_failure_not_counted(self, _passes):
        # host1 only: the second server of the group lands there too (the
        # filter passes), the late check on host1 fails, no alternate left
        host2 = self.api.get_services(host='host2',
                                      binary='nova-compute')[0]['id']
        self.api.put_service(host2, {'status': 'disabled'})
        group = self.api.post_server_groups(
            {'name': 'anti', 'policy': 'anti-affinity'})
        first = self._post(hints={'group': group['id']})
        self.assertEqual('host1', first['OS-EXT-SRV-ATTR:host'])
        self.notifier.reset()
        second = self._post(hints={'group': group['id']})
        self.assertEqual('ERROR', second['status'])
        self.assertEqual('Exceeded maximum number of retries. Exhausted all '
                         'hosts available for retrying build failures for '
                         'instance %s.' % second['id'],
                         second['fault']['message'])
        # stock: RESCHEDULED_BY_POLICY, not counted against host1
        self.assertEqual({'host1': '0', 'host2': '0'}, self._failed_builds())
        errors = self._versioned('instance.create.error')
        self.assertEqual(1, len(errors), errors)
        fault = errors[0]['payload']['nova_object.data']['fault'][
            'nova_object.data']
        self.assertEqual('GroupAffinityViolation', fault['exception'])
        self.assertEqual('Anti-affinity instance group policy was violated',
                         fault['exception_message'])
        self.assertEqual(
            1, len(self._legacy('compute.instance.create.error')),
            [n.event_type for n in self.notifier.notifications])

    def test_build_failure_counted(self):
        # the other half: a build failure still counts against its node
        self._prefer_host1()
        self._fail_spawn_on(['host1'])
        server = self._post()
        self.assertEqual('host2', server['OS-EXT-SRV-ATTR:host'])
        self.assertEqual({'host1': '1', 'host2': '0'}, self._failed_builds())


class ResourcesFailureNotificationTest(ParityTestBase):
    """Building the resources fails on the host (upstream
    ``notification_sample_tests.test_instance.TestInstanceNotificationSample
    .test_create_server_error`` patches stock ``_build_resources``, which our
    flow does not call): stock's ``create.error`` carries the failure as
    ``_build_and_run_instance`` caught it, here the
    ``BuildAbortException`` of a failed block-device preparation."""

    def test_create_error_carries_the_failure(self):
        self.stub_out(
            'nova.compute.manager.ComputeManager._prep_block_device',
            mock.Mock(side_effect=test.TestingException('no disk')))
        server = self._post()
        self.assertEqual('ERROR', server['status'])
        message = ('Build of instance %s aborted: Failure prepping block '
                   'device.' % server['id'])
        self.assertEqual(message, server['fault']['message'])
        # the fault's details: the traceback, as stock's compute records it
        # from its except block (not "NoneType: None")
        self.assertIn('BuildAbortException', server['fault']['details'])
        errors = self._versioned('instance.create.error')
        self.assertEqual(1, len(errors), errors)
        fault = errors[0]['payload']['nova_object.data']['fault'][
            'nova_object.data']
        self.assertEqual('BuildAbortException', fault['exception'])
        self.assertEqual(message, fault['exception_message'])
        legacy = self._legacy('compute.instance.create.error')
        self.assertEqual(1, len(legacy))
        self.assertEqual(message, legacy[0].payload['message'])


class DeletedWhileFinishingTest(ParityTestBase):
    """The server is deleted while its build saves it ACTIVE (upstream
    ``regressions.test_bug_1831771``): stock's build stops quietly and
    cleans up as for an instance that disappeared during its build, VIFs
    unplugged (``_cleanup_allocated_networks``)."""

    #: the delete casts to the host, whose lock the build holds
    CAST_AS_CALL = False

    def test_vifs_unplugged(self):
        original = objects.Instance.save
        deleted = []

        def save(instance, *args, **kwargs):
            if (kwargs.get('expected_task_state') == task_states.SPAWNING
                    and not deleted):
                deleted.append(instance.uuid)
                self.api.delete_server(instance.uuid)
                self._wait_for_server_parameter(
                    {'id': instance.uuid},
                    {'OS-EXT-STS:task_state': task_states.DELETING})
            return original(instance, *args, **kwargs)

        unplugged = []
        self.stub_out('nova.objects.Instance.save', save)
        self.stub_out('nova.virt.fake.FakeDriver.unplug_vifs',
                      lambda driver, instance, network_info:
                      unplugged.append(instance.uuid))
        body = {'server': self._build_server(networks='none')}
        server = self.api.post_server(body)
        self._wait_until_deleted(server)
        self._wait_for_flow_end(server['id'])
        self.assertEqual([server['id']], deleted)
        self.assertIn(server['id'], unplugged)
        self.assertEqual({}, self._allocations(server['id']))


class RescheduleZoneTest(ParityTestBase):
    """A reschedule to a host of another availability zone while the API
    database cannot be reached (upstream
    ``regressions.test_bug_1781286``, which blocks the up-call inside
    stock ``build_and_run_instance``): stock's ``build_instances`` gives
    the instance the alternate's zone from its Selection."""

    def test_alternate_zone_from_selection(self):
        for host, zone in (('host1', 'az1'), ('host2', 'az2')):
            agg = self._create_aggregate('agg-' + zone, zone)
            self.api.add_host_to_aggregate(agg, host)
        self._prefer_host1()
        blocked = mock.patch('nova.objects.AggregateList.get_by_host',
                             side_effect=oslo_db_exc.CantStartEngineError)
        original = self.computes['host1'].driver.__class__.spawn

        def spawn(driver, context, instance, *args, **kwargs):
            if instance.host == 'host1':
                # from the first failure on, no API database up-call works
                blocked.start()
                raise test.TestingException('spawn failed on host1')
            return original(driver, context, instance, *args, **kwargs)
        self.stub_out('nova.virt.fake.FakeDriver.spawn', spawn)
        body = {'server': self._build_server(networks='none')}
        server = self.api.post_server(body)
        try:
            self._wait_for_flow_end(server['id'])
        finally:
            blocked.stop()
        server = self.api.get_server(server['id'])
        self.assertEqual('ACTIVE', server['status'])
        self.assertEqual('host2', server['OS-EXT-SRV-ATTR:host'])
        # shown from the host's aggregate; the record's zone is what the
        # zone filter of the server list (and later moves) read
        self.assertEqual('az2', server['OS-EXT-AZ:availability_zone'])
        listed = self.api.get_servers(
            search_opts={'availability_zone': 'az2'})
        self.assertEqual([server['id']], [s['id'] for s in listed])
        self.assertEqual([], self.api.get_servers(
            search_opts={'availability_zone': 'az1'}))


class AlternateClaimErrorTest(ParityTestBase):
    """Claiming an alternate's resources fails with an error during a
    reschedule (upstream ``test_servers.ServerRescheduleTests.
    test_allocation_fails_during_reschedule``, which checks ERROR only):
    stock's ``build_instances`` ends the build with that error as the
    fault (``_cleanup_when_reschedule_fails``) and tries no further
    alternate."""

    def setUp(self):
        super().setUp()
        self._start_compute('host3')

    def test_error_is_the_fault(self):
        self.flags(max_attempts=3, group='scheduler')
        self._prefer_host1()
        attempts = self._fail_spawn_on(['host1'])
        claims = []
        original = scheduler_utils.claim_resources

        def claim(*args, **kwargs):
            claims.append(args)
            if len(claims) == 1:
                # the scheduler's claim of the first host
                return original(*args, **kwargs)
            raise exception.AllocationUpdateFailed(
                consumer_uuid='x', error='placement said no')
        self.stub_out('nova.scheduler.utils.claim_resources', claim)
        server = self._post()
        self.assertEqual('ERROR', server['status'])
        self.assertEqual('Failed to update allocations for consumer x. '
                         'Error: placement said no',
                         server['fault']['message'])
        self.assertIn('AllocationUpdateFailed', server['fault']['details'])
        self.assertEqual(['host1'], attempts)
        # the scheduler's, then the first alternate's; not the second's
        self.assertEqual(2, len(claims))
        self.assertEqual({}, self._allocations(server['id']))


class BuriedInCell0Test(test_boot.OrcBootTestBase):
    """A boot that no host fits, buried in cell0 (upstream
    ``regressions.test_bug_1852458``)."""

    def test_create_action_failed_as_stock(self):
        # a flavor that no host fits: NoValidHost
        flavor_id = self._create_flavor(disk=10 ** 6)
        server = self._create_server(flavor_id=flavor_id, networks='none',
                                     expected_state='ERROR')
        self.assertIn('No valid host', server['fault']['message'])
        actions = self.api.get_instance_actions(server['id'])
        self.assertEqual(1, len(actions), actions)
        self.assertEqual(instance_actions.CREATE, actions[0]['action'])
        # stock: 'Error' once its one event failed with a traceback
        self.assertEqual('Error', actions[0]['message'])
        action = self.api.api_get(
            '/servers/%s/os-instance-actions/%s' % (
                server['id'], actions[0]['request_id'])
        ).body['instanceAction']
        # stock's one event, and no other (_create_instance_action_for_cell0)
        self.assertEqual(['conductor_schedule_and_build_instances'],
                         [e['event'] for e in action['events']])
        event = action['events'][0]
        self.assertEqual('Error', event['result'])
        self.assertIn('select_destinations', event['traceback'])
        # the fault's details carry the traceback, as stock's from its
        # except block (not "NoneType: None")
        cctxt = nova_context.get_admin_context()
        cell0 = objects.CellMapping.get_by_uuid(
            cctxt, objects.CellMapping.CELL0_UUID)
        with nova_context.target_cell(cctxt, cell0) as c0:
            fault = objects.InstanceFault.get_latest_for_instance(
                c0, server['id'])
        self.assertIn('select_destinations', fault.details)


class GracefulShutdownTest(ParityTestBase):
    """A compute is stopped gracefully while it builds a server (upstream
    ``test_graceful_shutdown.TestComputeGracefulShutdown.
    test_instance_build_graceful_shutdown``, ``test_build_instance_track_
    wait_during_shutdown``): stock's shutdown stops taking new work (topic
    ``compute``), waits for the build it tracks as ``build_instance`` and
    lets it finish through ``compute-alt``; the server goes ACTIVE there.
    Our flow's later steps must reach that RPC server, and the host's
    build must be the one task the shutdown waits for."""

    CAST_AS_CALL = False

    def setUp(self):
        super().setUp()
        self.flags(manager_shutdown_timeout=60)
        # cleanup_host() shuts the process-wide executors down for good
        self.useFixture(fixtures.MockPatch(
            'nova.thread_pool_factory.shutdown_all_executors'))

    def _tracked(self, host):
        return [(t['name'], t['instance_uuid']) for t in
                self.computes[host].manager._in_progress_tasks.values()]

    def test_build_finishes_during_shutdown(self):
        before = orc_fixtures.FlowTracker.finished[('boot', 'SUCCESS')]
        compute = self.computes['host1']
        spawn = self.useFixture(nova_fixtures.InterceptMethodFixture(
            compute.manager.driver, 'spawn', timeout=60))
        body = {'server': self._build_server(networks='none', host='host1')}
        server = self.api.post_server(body)
        self.assertTrue(spawn.started.wait(timeout=30), 'spawn not started')
        self.assertEqual([('build_instance', server['id'])],
                         self._tracked('host1'))

        stop = threading.Thread(target=compute.stop)
        stop.start()
        self.assertTrue(compute.manager._shutdown_in_progress.wait(30))
        time.sleep(1)
        self.assertTrue(stop.is_alive(), 'shutdown did not wait for the '
                        'build in progress')
        spawn.proceed.set()

        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual('host1', server['OS-EXT-SRV-ATTR:host'])
        stop.join(timeout=60)
        self.assertFalse(stop.is_alive(), 'shutdown did not end')
        self.assertEqual([], self._tracked('host1'))
        self.assertEqual('SUCCESS',
                         self._wait_for_flow_end(server['id'])['state'])
        self.assertEqual(
            before + 1,
            orc_fixtures.FlowTracker.finished[('boot', 'SUCCESS')])
        # started again (as upstream's test does), so clean-up stops it once
        self.computes.pop('host1')
        self._start_compute('host1')

    def test_reschedule_leaves_no_tracked_build(self):
        self._prefer_host1()
        self._fail_spawn_on(['host1'])
        server = self._post()
        self.assertEqual('ACTIVE', server['status'])
        self.assertEqual('host2', server['OS-EXT-SRV-ATTR:host'])
        self.assertEqual([], self._tracked('host1'))
        self.assertEqual([], self._tracked('host2'))
