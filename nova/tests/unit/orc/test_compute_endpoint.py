"""``host_step``: what every orc compute step and undo goes through (lock,
fencing token, idempotency record, deletes racing the build), against a
mocked compute manager."""

from unittest import mock

import fixtures

from oslo_concurrency import lockutils
import oslo_messaging as messaging
from oslo_utils.fixture import uuidsentinel as uuids

from nova.compute import rpcapi as compute_rpcapi
from nova.compute import task_states
from nova.compute import vm_states
from nova import context as nova_context
from nova import exception
from nova import manager as nova_manager
from nova import objects
from nova.orc.compute import manager as orc_compute
from nova.orc.compute import rpcapi as orc_rpcapi
from nova.orc import exception as orc_exc
from nova import test
from nova import utils


class EndpointTestBase(test.NoDBTestCase):
    """The endpoint with a mocked compute manager, the instance read from
    a mocked database (``db_task_state``: its task state there, 'gone':
    deleted)."""

    def setUp(self):
        super().setUp()
        self.ctxt = nova_context.RequestContext('user', 'project')
        self.mgr = mock.MagicMock()
        self.mgr.driver.instance_exists.return_value = False
        # neutron: no port bound to the instance yet
        self.mgr.network_api.list_ports.return_value = {'ports': []}
        self.endpoint = orc_compute.OrcComputeEndpoint(self.mgr)
        self.instance = objects.Instance(
            uuid=uuids.instance, vm_state=vm_states.BUILDING,
            task_state=task_states.BLOCK_DEVICE_MAPPING, host='host1',
            node='node1')
        self.db_task_state = None
        self.db_vm_state = vm_states.BUILDING
        get = mock.patch.object(objects.Instance, 'get_by_uuid',
                                side_effect=self._get_by_uuid)
        self.get_by_uuid = get.start()
        self.addCleanup(get.stop)
        for target in (mock.patch.object(objects.Instance, 'save'),
                       mock.patch.object(objects.BlockDeviceMappingList,
                                         'get_by_instance_uuid',
                                         return_value=[]),
                       mock.patch('nova.virt.driver.get_block_device_info',
                                  return_value={}),
                       mock.patch('nova.compute.utils.'
                                  'notify_about_instance_create'),
                       mock.patch('nova.objects.InstanceActionEvent.'
                                  'event_start'),
                       mock.patch('nova.objects.InstanceActionEvent.'
                                  'event_finish'),
                       mock.patch('nova.objects.InstanceActionEvent.'
                                  'event_finish_with_failure')):
            target.start()
            self.addCleanup(target.stop)

    def _get_by_uuid(self, context, uuid, expected_attrs=None):
        if self.db_task_state == 'gone':
            raise exception.InstanceNotFound(instance_id=uuid)
        return objects.Instance(uuid=uuid, task_state=self.db_task_state,
                                vm_state=self.db_vm_state, host='host1')

    @staticmethod
    def _job(token=0, atom='spawn'):
        return {'flow_id': uuids.flow, 'atom': atom, 'token': token}

    def _spawn(self, token=0):
        return self.endpoint.spawn(
            self.ctxt, instance=self.instance, node='node1', image={},
            injected_files=None, admin_password=None, network_info=None,
            job=self._job(token))

    def _undo_calls(self, token):
        """Every undo step, each with ``token``."""
        return [
            lambda: self.endpoint.abort_claim(
                self.ctxt, instance=self.instance, node='node1',
                reason='x', job=self._job(token, 'claim_host')),
            lambda: self.endpoint.deallocate_networks(
                self.ctxt, instance=self.instance, requested_networks=None,
                job=self._job(token, 'networks')),
            lambda: self.endpoint.cleanup_block_devices(
                self.ctxt, instance=self.instance,
                job=self._job(token, 'block_devices')),
            lambda: self.endpoint.destroy_guest(
                self.ctxt, instance=self.instance, network_info=None,
                job=self._job(token)),
        ]

    def assertRaisesExpected(self, exc_class, call):
        """The RPC server gets ``exc_class`` as an expected exception (no
        ERROR log): ``messaging.ExpectedException`` wrapping it."""
        exc = self.assertRaises(messaging.ExpectedException, call)
        self.assertIsInstance(exc.exc_info[1], exc_class)
        return exc.exc_info[1]

    def _claim(self, token=0):
        """claim_resources of the test instance, as the conductor's
        ClaimHost calls it."""
        self.mgr._get_request_group_mapping.return_value = None
        self.instance.task_state = task_states.SCHEDULING
        self.instance.system_metadata = {}
        return self.endpoint.claim_resources(
            self.ctxt, instance=self.instance, node='node1', limits={},
            request_spec=objects.RequestSpec(),
            job=self._job(token, atom='claim_host'))


class HostStepTest(EndpointTestBase):

    def test_claim_saves_the_resources_it_assigned(self):
        """Resources the resource tracker assigns (vPMEM namespaces) are set
        on the instance after instance_claim's own save: the step saves
        them, or the delete of the server never releases them (upstream's
        libvirt.test_vpmem.VPMEMTests.test_create_servers_with_vpmem)."""
        assigned = objects.ResourceList(objects=[
            objects.Resource(provider_uuid=uuids.rp,
                             resource_class='CUSTOM_PMEM_NAMESPACE_SMALL',
                             identifier='ns_0')])
        saved = []

        def instance_claim(context, instance, node, allocs, limits):
            instance.resources = assigned
        self.mgr.rt.instance_claim.side_effect = instance_claim
        objects.Instance.save.side_effect = lambda *a, **k: saved.append(
            self.instance.resources if 'resources' in self.instance
            else None)
        self._claim()
        self.assertIs(assigned, saved[-1])

    # ------------------------------------------------------------ fencing
    def test_undo_with_stale_token_is_refused(self):
        self._spawn(token=5)
        self.mgr.reset_mock()
        for call in self._undo_calls(token=4):
            exc = self.assertRaisesExpected(orc_exc.StaleFencingToken, call)
            self.assertEqual(5, exc.kwargs['latest'])
        self.mgr.rt.abort_instance_claim.assert_not_called()
        self.mgr._cleanup_allocated_networks.assert_not_called()
        self.mgr.volume_api.attachment_delete.assert_not_called()
        self.mgr.driver.destroy.assert_not_called()
        # the current token still passes
        self._undo_calls(token=5)[-1]()
        self.mgr.driver.destroy.assert_called_once()

    def test_forward_step_with_stale_token_is_refused(self):
        self.endpoint.destroy_guest(self.ctxt, instance=self.instance,
                                    network_info=None, job=self._job(3))
        self.assertRaisesExpected(orc_exc.StaleFencingToken,
                                  lambda: self._spawn(token=2))
        self.mgr.driver.spawn.assert_not_called()

    # -------------------------------------------------- lock, semaphore
    def test_step_holds_stocks_instance_lock_and_build_semaphore(self):
        held = []

        def spawn(*args, **kwargs):
            # the lock stock's build and terminate_instance take
            held.append(self.assertRaises(
                lockutils.AcquireLockFailedException,
                utils.synchronized(uuids.instance, blocking=False)(
                    lambda: None)))
            self.mgr._build_semaphore.__enter__.assert_called_once()
            self.mgr._build_semaphore.__exit__.assert_not_called()
        self.mgr.driver.spawn.side_effect = spawn
        self.assertTrue(self._spawn())
        self.assertEqual(1, len(held))
        self.mgr._build_semaphore.__exit__.assert_called_once()
        # released afterwards
        utils.synchronized(uuids.instance, blocking=False)(lambda: None)()

    def test_undo_holds_stocks_instance_lock(self):
        def destroy(*args, **kwargs):
            self.assertRaises(
                lockutils.AcquireLockFailedException,
                utils.synchronized(uuids.instance, blocking=False)(
                    lambda: None))
        self.mgr.driver.destroy.side_effect = destroy
        self.endpoint.destroy_guest(self.ctxt, instance=self.instance,
                                    network_info=None, job=self._job())
        self.mgr.driver.destroy.assert_called_once()

    # -------------------------------------------------------- idempotency
    def test_repeated_forward_call_returns_the_record(self):
        self.assertTrue(self._spawn())
        self.assertTrue(self._spawn())
        self.mgr.driver.spawn.assert_called_once()
        # an undo forgets it: a resumed flow's call (greater token) runs
        # again
        self.endpoint.destroy_guest(self.ctxt, instance=self.instance,
                                    network_info=None, job=self._job())
        self._spawn(token=1)
        self.assertEqual(2, self.mgr.driver.spawn.call_count)

    def test_late_forward_call_after_its_undo_is_refused(self):
        """A copy of a step the conductor gave up on (no answer within
        its attempts) and undid, delivered after the undo: refused; a
        resumed flow (greater token) may do it again."""
        self.endpoint.destroy_guest(self.ctxt, instance=self.instance,
                                    network_info=None, job=self._job(4))
        exc = self.assertRaisesExpected(orc_exc.StepUndone,
                                        lambda: self._spawn(token=4))
        self.assertEqual(4, exc.kwargs['undone'])
        # a lower token is stale anyway
        self.assertRaisesExpected(orc_exc.StaleFencingToken,
                                  lambda: self._spawn(token=3))
        self.mgr.driver.spawn.assert_not_called()
        self.assertTrue(self._spawn(token=5))
        self.mgr.driver.spawn.assert_called_once()

    def test_a_repeated_undo_is_done_once(self):
        """Copies of an undo (calls the conductor timed out on and sent
        again) run once: stock's abort would clear the host of the next
        attempt and count the failure against the node twice."""
        job = dict(self._job(3, 'claim_host'), node='node1')
        for _ in range(3):
            self.endpoint.abort_claim(self.ctxt, instance=self.instance,
                                      node='node1', reason='x', job=job)
        self.mgr._build_failed.assert_called_once_with('node1')
        self.mgr._nil_out_instance_obj_host_and_node.assert_called_once()
        # a resumed flow's undo (greater token) runs
        self.endpoint.abort_claim(self.ctxt, instance=self.instance,
                                  node='node1', reason='x',
                                  job=dict(job, token=4))
        self.assertEqual(2, self.mgr._build_failed.call_count)

    def test_a_failed_undo_is_done_again(self):
        self.mgr.driver.destroy.side_effect = [test.TestingException('x'),
                                               None]
        self.assertRaises(test.TestingException, self.endpoint.destroy_guest,
                          self.ctxt, instance=self.instance,
                          network_info=None, job=self._job(2))
        self.endpoint.destroy_guest(self.ctxt, instance=self.instance,
                                    network_info=None, job=self._job(2))
        self.assertEqual(2, self.mgr.driver.destroy.call_count)

    def test_late_claim_after_its_abort_leaves_the_instance_alone(self):
        """The claim goes to topic compute, its abort to compute-alt: the
        abort can run first. The late claim must not claim the host and
        set it on an instance whose flow moved on."""
        self.endpoint.abort_claim(
            self.ctxt, instance=self.instance, node='node1', reason='x',
            job=dict(self._job(2, 'claim_host'), node='node1'))
        self.mgr.reset_mock()
        objects.Instance.save.reset_mock()
        self.mgr._get_request_group_mapping.return_value = None
        self.instance.task_state = task_states.SCHEDULING
        self.instance.system_metadata = {}
        self.assertRaisesExpected(
            orc_exc.StepUndone, lambda: self.endpoint.claim_resources(
                self.ctxt, instance=self.instance, node='node1', limits={},
                request_spec=objects.RequestSpec(),
                job=dict(self._job(2, 'claim_host'), node='node1')))
        self.mgr.rt.instance_claim.assert_not_called()
        objects.Instance.save.assert_not_called()
        # another node of the same host (ironic) is another attempt
        self.endpoint.claim_resources(
            self.ctxt, instance=self.instance, node='node2', limits={},
            request_spec=objects.RequestSpec(),
            job=dict(self._job(2, 'claim_host'), node='node2'))
        self.mgr.rt.instance_claim.assert_called_once()

    # ------------------------------------------------------------ deletes
    def test_forward_step_on_deleted_instance_does_nothing(self):
        for state, exc_class in (
                ('gone', exception.InstanceNotFound),
                (task_states.DELETING,
                 exception.UnexpectedDeletingTaskStateError)):
            self.db_task_state = state
            with self.assertLogs(orc_compute.LOG.logger, 'INFO') as logs:
                self.assertRaisesExpected(exc_class, self._spawn)
            self.assertIn('spawn: instance deleted or being deleted; '
                          'nothing done', logs.output[0])
        self.mgr.driver.spawn.assert_not_called()
        self.mgr.driver.destroy.assert_not_called()

    def test_forward_step_undoes_its_work_when_deleted_meanwhile(self):
        def spawn(*args, **kwargs):
            self.db_task_state = task_states.DELETING
        self.mgr.driver.spawn.side_effect = spawn
        self.assertRaisesExpected(exception.UnexpectedDeletingTaskStateError,
                                  self._spawn)
        self.mgr.driver.destroy.assert_called_once()
        self.mgr.driver.failed_spawn_cleanup.assert_called_once()
        # not recorded: a repeated call does not report success
        self.assertRaisesExpected(exception.UnexpectedDeletingTaskStateError,
                                  self._spawn)

    def test_forward_step_undoes_its_work_when_it_hit_the_delete(self):
        self.mgr._allocate_network_async.side_effect = (
            exception.InstanceNotFound(instance_id=uuids.instance))
        self.assertRaisesExpected(
            exception.InstanceNotFound,
            lambda: self.endpoint.allocate_networks(
                self.ctxt, instance=self.instance, requested_networks=None,
                security_groups=[], provider_mapping=None,
                job=self._job(atom='networks')))
        self.mgr._deallocate_network.assert_called_once_with(
            self.ctxt, self.instance, None)

    def _allocate_networks(self, requested_networks=None):
        return self.endpoint.allocate_networks(
            self.ctxt, instance=self.instance,
            requested_networks=requested_networks, security_groups=[],
            provider_mapping=None, job=self._job(atom='networks'))

    def test_networks_without_record_release_an_earlier_runs_ports(self):
        # a re-run the compute has no record of (it restarted): the ports
        # the first run bound are deallocated before allocating again
        self.mgr.network_api.list_ports.return_value = {
            'ports': [{'id': uuids.port}]}
        order = mock.Mock()
        order.attach_mock(self.mgr._deallocate_network, 'deallocate')
        order.attach_mock(self.mgr._allocate_network_async, 'allocate')
        self._allocate_networks()
        self.mgr.network_api.list_ports.assert_called_once_with(
            self.ctxt, device_id=uuids.instance)
        self.assertEqual(['deallocate', 'allocate'],
                         [c[0] for c in order.mock_calls][:2])
        self.mgr._deallocate_network.assert_called_once_with(
            self.ctxt, self.instance, None)

    def test_networks_first_run_allocates_only(self):
        self._allocate_networks()
        self.mgr._deallocate_network.assert_not_called()
        self.mgr._allocate_network_async.assert_called_once()

    def test_networks_none_requested_asks_neutron_nothing(self):
        none = objects.NetworkRequestList(
            objects=[objects.NetworkRequest(network_id='none')])
        self._allocate_networks(none)
        self.mgr.network_api.list_ports.assert_not_called()
        self.mgr._deallocate_network.assert_not_called()

    def test_networks_recorded_run_asks_neutron_nothing(self):
        self._allocate_networks()
        self.mgr.network_api.list_ports.reset_mock()
        self._allocate_networks()
        self.mgr.network_api.list_ports.assert_not_called()
        self.mgr._allocate_network_async.assert_called_once()

    def test_undo_on_deleted_instance_is_left_to_the_delete(self):
        for state in ('gone', task_states.DELETING):
            self.db_task_state = state
            for call in self._undo_calls(token=0):
                self.assertIsNone(call())
        self.mgr.rt.abort_instance_claim.assert_not_called()
        self.mgr._cleanup_allocated_networks.assert_not_called()
        self.mgr.driver.destroy.assert_not_called()


class FinishBuildTest(EndpointTestBase):
    """``finish_build`` without its record (a restarted compute) after an
    earlier run finished the instance: nothing is done again."""

    def _finish(self):
        self.instance.task_state = task_states.SPAWNING
        self.instance.system_metadata = {}
        self.instance.access_ip_v4 = self.instance.access_ip_v6 = None
        return self.endpoint.finish_build(
            self.ctxt, instance=self.instance, node='node1',
            network_info=None, job=self._job(0, 'finalize'))

    def test_instance_active_with_its_guest_was_finished_earlier(self):
        self.db_vm_state = vm_states.ACTIVE
        self.mgr.host = 'host1'
        self.mgr.driver.instance_exists.return_value = True
        self.assertTrue(self._finish())
        self.mgr._update_instance_after_spawn.assert_not_called()
        self.mgr._build_succeeded.assert_not_called()

    def test_active_without_its_guest_here_is_finished_again(self):
        # ACTIVE in the database but no guest on this hypervisor: not an
        # earlier run of this step; the step runs (and fails on the
        # instance's task state, as before)
        self.db_vm_state = vm_states.ACTIVE
        self.mgr.host = 'host1'
        self.mgr.driver.instance_exists.return_value = False
        self.instance.save = mock.Mock()
        self.assertTrue(self._finish())
        self.mgr._update_instance_after_spawn.assert_called_once_with(
            self.instance)

    def test_building_instance_is_finished(self):
        self.mgr.host = 'host1'
        self.mgr.driver.instance_exists.return_value = True
        self.instance.save = mock.Mock()
        self.assertTrue(self._finish())
        self.instance.save.assert_called_once_with(
            expected_task_state=task_states.SPAWNING)


class TrackedBuildTest(EndpointTestBase):
    """A graceful shutdown waits for the builds in progress on the host:
    a flow's build there is one in-progress task named as stock's
    (``build_instance``) from the claim to ``finish_build`` or
    ``abort_claim``, in the manager's own tracker; the steps are not
    tracked one by one (upstream ``test_graceful_shutdown.
    TestComputeGracefulShutdown.test_build_instance_track_wait_during_
    shutdown``)."""

    def setUp(self):
        super().setUp()
        tracker = nova_manager.Manager(host='host1', service_name='compute')
        self.mgr._record_task_start = tracker._record_task_start
        self.mgr._record_task_end = tracker._record_task_end
        self.tracked = tracker._in_progress_tasks

    def _tracked(self):
        return [(t['name'], t['instance_uuid'])
                for t in self.tracked.values()]

    def _finish(self, token=0):
        self.instance.task_state = task_states.SPAWNING
        return self.endpoint.finish_build(
            self.ctxt, instance=self.instance, node='node1',
            network_info=None, job=self._job(token, 'finalize'))

    def _abort(self, token=0):
        return self.endpoint.abort_claim(
            self.ctxt, instance=self.instance, node='node1', reason='x',
            job=self._job(token, 'claim_host'))

    def test_build_is_one_task_from_claim_to_finish(self):
        build = [('build_instance', uuids.instance)]
        self._claim()
        self.assertEqual(build, self._tracked())
        self._claim()  # a resumed flow claims again: still one task
        self._spawn()
        self.assertEqual(build, self._tracked())
        self._finish()
        self.assertEqual([], self._tracked())
        # a late copy of the claim (its messages live as long as the call)
        # answers from the record and tracks nothing a graceful shutdown
        # would wait for
        self._claim()
        self.assertEqual([], self._tracked())

    def test_abort_claim_ends_the_build(self):
        self._claim()
        self._abort()
        self.assertEqual([], self._tracked())
        # the undo of a deleted instance's claim (left to its delete) too
        # (a resumed flow's claim: the first attempt's is undone)
        self._claim(token=1)
        self.db_task_state = task_states.DELETING
        self.assertIsNone(self._abort(token=1))
        self.assertEqual([], self._tracked())

    def test_failed_claim_ends_the_build(self):
        self.mgr.rt.instance_claim.side_effect = (
            exception.ComputeResourcesUnavailable(reason='full'))
        self.assertRaises(exception.ComputeResourcesUnavailable, self._claim)
        self.assertEqual([], self._tracked())

    def test_step_finding_the_instance_deleted_ends_the_build(self):
        self._claim()
        self.db_task_state = 'gone'
        self.assertRaisesExpected(exception.InstanceNotFound, self._spawn)
        self.assertEqual([], self._tracked())

    def test_stale_undo_does_not_end_the_new_owners_build(self):
        self._claim(token=2)
        self.assertRaisesExpected(orc_exc.StaleFencingToken,
                                  lambda: self._abort(token=1))
        self.assertEqual([('build_instance', uuids.instance)],
                         self._tracked())

    def test_shutdown_stops_waiting_for_builds_of_deleted_instances(self):
        self._claim()
        self.assertEqual(0, self.endpoint.end_builds_of_deleted_instances(
            self.ctxt))
        self.assertEqual(1, len(self._tracked()))
        self.db_task_state = task_states.DELETING
        self.assertEqual(1, self.endpoint.end_builds_of_deleted_instances(
            self.ctxt))
        self.assertEqual([], self._tracked())

    def test_steps_skip_the_per_call_tracking(self):
        for step in ('claim_resources', 'abort_claim', 'allocate_networks',
                     'deallocate_networks', 'prep_block_devices',
                     'cleanup_block_devices', 'spawn', 'destroy_guest',
                     'finish_build'):
            method = getattr(self.endpoint, step)
            self.assertTrue(
                getattr(method, '_skip_automatic_rpc_tracking', False), step)


class OrcComputeAPITopicTest(test.NoDBTestCase):
    """The claim goes to topic ``compute`` (new work: a compute shutting
    down takes none); every later step and undo to ``compute-alt``, which a
    compute shutting down serves until its in-progress tasks end (stock
    ``ComputeAPI.prepare_for_alt_rpcserver``)."""

    def test_topics(self):
        api = orc_rpcapi.OrcComputeAPI()
        ctxt = nova_context.RequestContext('user', 'project')
        with mock.patch.object(api.client, 'prepare') as prepare:
            calls = {
                'claim_resources': dict(node='n', limits={},
                                        request_spec=None),
                'abort_claim': dict(node='n', reason='x'),
                'allocate_networks': dict(requested_networks=None,
                                          security_groups=[],
                                          provider_mapping=None),
                'deallocate_networks': dict(requested_networks=None),
                'prep_block_devices': dict(image={}),
                'cleanup_block_devices': {},
                'spawn': dict(node='n', image={}, injected_files=None,
                              admin_password=None, network_info=None),
                'destroy_guest': dict(network_info=None),
                'finish_build': dict(node='n', network_info=None),
            }
            topics = {}
            for method, kwargs in calls.items():
                prepare.reset_mock()
                getattr(api, method)(ctxt, 'host1', instance=None, job={},
                                     **kwargs)
                options = prepare.call_args.kwargs
                self.assertEqual('host1', options['server'])
                topics[method] = options.get('topic', compute_rpcapi.RPC_TOPIC)
        self.assertEqual(compute_rpcapi.RPC_TOPIC, topics.pop(
            'claim_resources'))
        self.assertEqual({compute_rpcapi.RPC_TOPIC_ALT}, set(topics.values()))
