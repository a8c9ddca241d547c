"""Every boot task's execute and revert, against mocked Nova services."""

from unittest import mock

import oslo_messaging as messaging
from oslo_serialization import jsonutils
from oslo_utils.fixture import uuidsentinel as uuids
from taskflow import exceptions as tf_exc
from taskflow import retry
from taskflow.types import failure as tf_failure

from nova.compute import vm_states
from nova import context as nova_context
from nova import exception
from nova import objects
from nova.orc import exception as orc_exc
from nova.orc.tasks import base
from nova.orc.tasks import compute
from nova.orc.tasks import instance as instance_tasks
from nova.orc.tasks import locks
from nova.orc.tasks import network
from nova.orc.tasks import scheduler
from nova.orc.tasks import volume
from nova import test


def _selection(host='host1', node='node1', rp=uuids.rp1):
    return objects.Selection(
        service_host=host, nodename=node, compute_node_uuid=rp,
        cell_uuid=uuids.cell1, limits=None,
        allocation_request=jsonutils.dumps(
            {'allocations': {rp: {'resources': {'VCPU': 1}}}}),
        allocation_request_version='1.36')


def _failure(exc):
    try:
        raise exc
    except Exception:
        return tf_failure.Failure()


class TaskTestBase(test.NoDBTestCase):

    def setUp(self):
        super().setUp()
        self.ctxt = nova_context.RequestContext(
            'user', 'project', request_id=uuids.request)
        # a first run unless a test resumes it
        self.run = mock.Mock(token=7, resumed=False)
        self.orc = self.run.orchestrator
        self.manager = self.orc.manager
        # an empty journal unless a test fills it
        self.journal = self.orc.backend.get_connection.return_value
        self.journal.list_flows.return_value = []
        groups = objects.SecurityGroupList()
        # (SecurityGroupList.__init__ drops an ``objects`` keyword)
        groups.objects = [objects.SecurityGroup(name='default')]
        self.spec = objects.RequestSpec(
            instance_uuid=uuids.instance, num_instances=1,
            security_groups=groups)
        self.instance = objects.Instance(uuid=uuids.instance, host='host1',
                                         task_state=None)
        get_instance = mock.patch('nova.orc.tasks.base.get_instance',
                                  return_value=(self.ctxt, self.instance))
        self.get_instance = get_instance.start()
        self.addCleanup(get_instance.stop)


    def bound(self, task):
        """``task`` bound to a job run with fencing token 7."""
        task.bind(self.run)
        return task


class LockResourcesTest(TaskTestBase):

    def test_execute_locks_all_and_revert_releases(self):
        task = self.bound(locks.LockResources(name='lock'))
        resources = [['instance', uuids.instance], ['port', uuids.port]]
        self.assertEqual(resources, task.execute(uuids.flow, resources))
        self.orc.coordinator.acquire.assert_called_once_with(
            uuids.flow, [('instance', uuids.instance), ('port', uuids.port)])
        task.revert(uuids.flow, resources, result=None)
        self.orc.coordinator.release.assert_called_once_with(
            uuids.flow, [('instance', uuids.instance), ('port', uuids.port)])

    def test_execute_conflict_propagates(self):
        self.orc.coordinator.acquire.side_effect = orc_exc.ResourceLocked(
            kind='port', resource_id=uuids.port, holder=uuids.other,
            conductor='c2')
        task = self.bound(locks.LockResources(name='lock'))
        self.assertRaises(orc_exc.ResourceLocked, task.execute, uuids.flow,
                          [['port', uuids.port]])

    def test_a_lost_claim_neither_locks_nor_releases(self):
        # woken after its peer ended the flow and released its locks: the
        # ended flow's locks are not taken again
        self.run.fence.side_effect = orc_exc.ClaimLost(flow_id=uuids.flow)
        task = self.bound(locks.LockResources(name='lock'))
        resources = [['instance', uuids.instance]]
        task.pre_execute()
        self.addCleanup(task.post_execute)
        self.assertRaises(orc_exc.ClaimLost, task.execute, uuids.flow,
                          resources)
        self.assertRaises(orc_exc.ClaimLost, task.revert, uuids.flow,
                          resources, result=None)
        self.orc.coordinator.acquire.assert_not_called()
        self.orc.coordinator.release.assert_not_called()

    def test_boot_lock_resources(self):
        networks = objects.NetworkRequestList(objects=[
            objects.NetworkRequest(port_id=uuids.port),
            objects.NetworkRequest(network_id=uuids.net)])
        bdms = objects.BlockDeviceMappingList(objects=[
            objects.BlockDeviceMapping(volume_id=uuids.vol),
            objects.BlockDeviceMapping(source_type='image')])
        self.assertEqual(
            [['instance', uuids.instance], ['port', uuids.port],
             ['volume', uuids.vol]],
            locks.boot_lock_resources(uuids.instance, networks, bdms))


class ScheduleTest(TaskTestBase):

    def test_execute_schedules_with_alternates(self):
        sel = [_selection('host1'), _selection('host2', rp=uuids.rp2)]
        self.manager._schedule_instances.return_value = [sel]
        task = self.bound(scheduler.Schedule(name='schedule'))
        result = task.execute(self.ctxt, uuids.instance,
                              self.spec.obj_to_primitive(), None)
        self.assertEqual([s.obj_to_primitive() for s in sel], result)
        args, kwargs = self.manager._schedule_instances.call_args
        self.assertEqual([uuids.instance], args[2])
        self.assertTrue(kwargs['return_alternates'])

    def test_execute_preselected_does_not_call_scheduler(self):
        hosts = [_selection().obj_to_primitive()]
        task = self.bound(scheduler.Schedule(name='schedule'))
        self.assertEqual(hosts, task.execute(self.ctxt, uuids.instance,
                                             self.spec.obj_to_primitive(),
                                             hosts))
        self.manager._schedule_instances.assert_not_called()

    def test_revert_deletes_allocations_unless_scheduling_failed(self):
        task = self.bound(scheduler.Schedule(name='schedule'))
        task.revert(self.ctxt, uuids.instance,
                    result=_failure(exception.NoValidHost(reason='x')))
        self.manager.report_client.delete_allocation_for_instance\
            .assert_not_called()
        task.revert(self.ctxt, uuids.instance, result=[])
        self.manager.report_client.delete_allocation_for_instance\
            .assert_called_once_with(self.ctxt, uuids.instance, force=True)

    def test_revert_of_a_failed_resume_deletes_the_earlier_claim(self):
        """An abort fails the resumed run before it deletes what the
        earlier run claimed: the revert deletes it."""
        self.run.resumed = True
        task = self.bound(scheduler.Schedule(name='schedule'))
        task.revert(self.ctxt, uuids.instance,
                    result=_failure(orc_exc.JobAborted(flow_id=uuids.flow,
                                                       reason='x')))
        self.manager.report_client.delete_allocation_for_instance\
            .assert_called_once_with(self.ctxt, uuids.instance, force=True)

    def test_revert_of_a_failure_with_preselected_hosts_deletes_claim(self):
        """The group's scheduling claimed for this instance."""
        task = self.bound(scheduler.Schedule(name='schedule'))
        task.revert(self.ctxt, uuids.instance,
                    preselected_hosts=[_selection().obj_to_primitive()],
                    result=_failure(orc_exc.JobAborted(flow_id=uuids.flow,
                                                       reason='x')))
        self.manager.report_client.delete_allocation_for_instance\
            .assert_called_once_with(self.ctxt, uuids.instance, force=True)

    def test_group_revert_of_a_failure_deletes_claims_only_on_resume(self):
        task = self.bound(scheduler.ScheduleGroup(name='schedule_group'))
        failure = _failure(exception.NoValidHost(reason='x'))
        task.revert(self.ctxt, [uuids.a, uuids.b], result=failure)
        delete = self.manager.report_client.delete_allocation_for_instance
        delete.assert_not_called()
        self.run.resumed = True
        task.revert(self.ctxt, [uuids.a, uuids.b], result=failure)
        self.assertEqual([mock.call(self.ctxt, uuids.a, force=True),
                          mock.call(self.ctxt, uuids.b, force=True)],
                         delete.call_args_list)


    def test_group_revert_leaves_instances_with_a_boot_flow_alone(self):
        # b's boot flow was posted: its allocation is that flow's
        self.journal.list_flows.side_effect = lambda instance_uuid: (
            [{'name': 'boot'}] if instance_uuid == uuids.b else [])
        task = self.bound(scheduler.ScheduleGroup(name='schedule_group'))
        task.revert(self.ctxt, [uuids.a, uuids.b], result=None)
        self.manager.report_client.delete_allocation_for_instance\
            .assert_called_once_with(self.ctxt, uuids.a, force=True)


class HostRetryTest(test.NoDBTestCase):

    def _history(self, exc):
        return retry.History([('host1', {'spawn': _failure(exc)})])

    def test_reschedulable_failure_moves_to_next_host(self):
        r = scheduler.HostRetry('host_retry', provides='selection')
        self.assertEqual(retry.RETRY, r.on_failure(
            values=['host1', 'host2'],
            history=self._history(test.TestingException('boom'))))

    def test_last_host_failure_reverts_all(self):
        r = scheduler.HostRetry('host_retry', provides='selection')
        self.assertEqual(retry.REVERT_ALL, r.on_failure(
            values=['host1'],
            history=self._history(test.TestingException('boom'))))

    def test_build_abort_reverts_all_at_once(self):
        r = scheduler.HostRetry('host_retry', provides='selection')
        self.assertEqual(retry.REVERT_ALL, r.on_failure(
            values=['host1', 'host2'],
            history=self._history(exception.BuildAbortException(
                instance_uuid=uuids.instance, reason='no'))))


class ClaimAllocationTest(TaskTestBase):

    @mock.patch('nova.scheduler.utils.fill_provider_mapping')
    @mock.patch('nova.scheduler.utils.claim_resources')
    def test_first_host_keeps_scheduler_allocation(self, claim, fill):
        client = self.manager.report_client
        client.get_allocs_for_consumer.return_value = {
            'allocations': {uuids.rp1: {}}}
        task = self.bound(scheduler.ClaimAllocation(name='claim_allocation'))
        task.execute(self.ctxt, uuids.instance,
                     _selection().obj_to_primitive(),
                     self.spec.obj_to_primitive())
        claim.assert_not_called()
        client.delete_allocation_for_instance.assert_not_called()
        fill.assert_called_once()

    @mock.patch('nova.scheduler.utils.fill_provider_mapping')
    @mock.patch('nova.scheduler.utils.claim_resources', return_value=True)
    def test_alternate_claims_its_allocation_request(self, claim, fill):
        client = self.manager.report_client
        client.get_allocs_for_consumer.return_value = {
            'allocations': {uuids.rp1: {}}}
        task = self.bound(scheduler.ClaimAllocation(name='claim_allocation'))
        task.execute(self.ctxt, uuids.instance,
                     _selection('host2', rp=uuids.rp2).obj_to_primitive(),
                     self.spec.obj_to_primitive())
        client.delete_allocation_for_instance.assert_called_once_with(
            self.ctxt, uuids.instance, force=True)
        self.assertEqual(
            {'allocations': {uuids.rp2: {'resources': {'VCPU': 1}}}},
            claim.call_args[0][4])

    @mock.patch('nova.scheduler.utils.claim_resources', return_value=False)
    def test_alternate_gone_fails(self, claim):
        self.manager.report_client.get_allocs_for_consumer.return_value = {
            'allocations': {}}
        task = self.bound(scheduler.ClaimAllocation(name='claim_allocation'))
        self.assertRaises(exception.NoValidHost, task.execute, self.ctxt,
                          uuids.instance, _selection().obj_to_primitive(),
                          self.spec.obj_to_primitive())

    def test_revert_deletes_allocations(self):
        task = self.bound(scheduler.ClaimAllocation(name='claim_allocation'))
        task.revert(self.ctxt, uuids.instance, result=None)
        self.manager.report_client.delete_allocation_for_instance\
            .assert_called_once_with(self.ctxt, uuids.instance, force=True)


class BuryInCell0OnFailureTest(TaskTestBase):

    @mock.patch('nova.objects.BuildRequest.get_by_instance_uuid')
    @mock.patch('nova.objects.InstanceMapping.get_by_instance_uuid')
    def test_revert_buries_unmapped_instance(self, get_mapping, get_br):
        get_mapping.return_value = objects.InstanceMapping(cell_mapping=None)
        task = self.bound(instance_tasks.BuryInCell0OnFailure(name='bury'))
        task.execute()
        exc = exception.NoValidHost(reason='none')
        task.revert(self.ctxt, uuids.instance, self.spec.obj_to_primitive(),
                    None, None, flow_failures={'schedule': _failure(exc)})
        args, kwargs = self.manager._bury_in_cell0.call_args
        self.assertIsInstance(args[2], exception.NoValidHost)
        self.assertEqual([get_br.return_value], kwargs['build_requests'])

    @mock.patch('nova.objects.InstanceMapping.get_by_instance_uuid')
    def test_revert_leaves_mapped_instance_to_create_record(self,
                                                            get_mapping):
        get_mapping.return_value = objects.InstanceMapping(
            cell_mapping=objects.CellMapping(uuid=uuids.cell1))
        task = self.bound(instance_tasks.BuryInCell0OnFailure(name='bury'))
        task.revert(self.ctxt, uuids.instance, self.spec.obj_to_primitive(),
                    None, None, flow_failures={})
        self.manager._bury_in_cell0.assert_not_called()

    @mock.patch('nova.objects.BuildRequest.get_by_instance_uuid',
                side_effect=exception.BuildRequestNotFound(uuid='x'))
    @mock.patch('nova.objects.InstanceMapping.get_by_instance_uuid')
    def test_revert_deleted_build_request_drops_mapping(self, get_mapping,
                                                        get_br):
        mapping = mock.Mock(cell_mapping=None)
        get_mapping.return_value = mapping
        task = self.bound(instance_tasks.BuryInCell0OnFailure(name='bury'))
        task.revert(self.ctxt, uuids.instance, self.spec.obj_to_primitive(),
                    None, None, flow_failures={})
        mapping.destroy.assert_called_once_with()
        self.manager._bury_in_cell0.assert_not_called()


class CreateRecordTest(TaskTestBase):

    @mock.patch('nova.objects.BuildRequest.get_by_instance_uuid')
    @mock.patch('nova.objects.InstanceMapping.get_by_instance_uuid')
    def test_execute_is_idempotent_once_mapped(self, get_mapping, get_br):
        """A run that died after mapping the instance: the re-run keeps the
        record and removes the build request it left behind."""
        get_mapping.return_value = objects.InstanceMapping(
            cell_mapping=objects.CellMapping(uuid=uuids.cell1))
        task = self.bound(instance_tasks.CreateRecord(name='create_record'))
        self.assertEqual(uuids.cell1, task.execute(
            self.ctxt, uuids.instance, [_selection().obj_to_primitive()],
            self.spec.obj_to_primitive(), None, None, 1))
        self.manager._map_instance_to_cell.assert_not_called()
        get_br.return_value.destroy.assert_called_once_with()
        get_br.side_effect = exception.BuildRequestNotFound(uuid='x')
        self.assertEqual(uuids.cell1, task.execute(
            self.ctxt, uuids.instance, [_selection().obj_to_primitive()],
            self.spec.obj_to_primitive(), None, None, 1))

    @mock.patch('nova.objects.BuildRequest.get_by_instance_uuid',
                side_effect=exception.BuildRequestNotFound(uuid='x'))
    @mock.patch('nova.objects.InstanceMapping.get_by_instance_uuid')
    def test_execute_build_request_gone(self, get_mapping, get_br):
        get_mapping.return_value = objects.InstanceMapping(cell_mapping=None)
        task = self.bound(instance_tasks.CreateRecord(name='create_record'))
        self.assertRaises(orc_exc.BuildRequestGone, task.execute, self.ctxt,
                          uuids.instance, [_selection().obj_to_primitive()],
                          self.spec.obj_to_primitive(), None, None, 1)

    @mock.patch('nova.objects.InstanceMapping.get_by_instance_uuid')
    def test_revert_after_host_failures_reports_max_retries(self,
                                                            get_mapping):
        get_mapping.return_value = objects.InstanceMapping(
            cell_mapping=objects.CellMapping(uuid=uuids.cell1,
                                             database_connection='fake://',
                                             transport_url='fake://'))
        task = self.bound(instance_tasks.CreateRecord(name='create_record'))
        task.revert(self.ctxt, uuids.instance, self.spec.obj_to_primitive(),
                    None, None, result=uuids.cell1,
                    flow_failures={'spawn': _failure(
                        test.TestingException('boom'))})
        args = self.manager._set_vm_state_and_notify.call_args[0]
        self.assertEqual({'vm_state': vm_states.ERROR, 'task_state': None},
                         args[3])
        self.assertIsInstance(args[4], exception.MaxRetriesExceeded)

    @mock.patch('nova.objects.InstanceMapping.get_by_instance_uuid')
    def test_revert_after_build_abort_reports_it(self, get_mapping):
        get_mapping.return_value = objects.InstanceMapping(
            cell_mapping=objects.CellMapping(uuid=uuids.cell1,
                                             database_connection='fake://',
                                             transport_url='fake://'))
        task = self.bound(instance_tasks.CreateRecord(name='create_record'))
        abort = exception.BuildAbortException(instance_uuid=uuids.instance,
                                              reason='bad image')
        task.revert(self.ctxt, uuids.instance, self.spec.obj_to_primitive(),
                    None, None, result=uuids.cell1,
                    flow_failures={'spawn': _failure(abort)})
        self.assertIn('bad image', str(
            self.manager._set_vm_state_and_notify.call_args[0][4]))

    @mock.patch('nova.objects.InstanceMapping.get_by_instance_uuid')
    def test_revert_after_the_server_was_deleted_writes_nothing(
            self, get_mapping):
        """Stock's build ends quietly on a server deleted meanwhile: no
        ERROR state, no fault on the record being deleted."""
        get_mapping.return_value = objects.InstanceMapping(
            cell_mapping=objects.CellMapping(uuid=uuids.cell1))
        task = self.bound(instance_tasks.CreateRecord(name='create_record'))
        for exc in (exception.InstanceNotFound(instance_id=uuids.instance),
                    exception.UnexpectedDeletingTaskStateError(
                        instance_uuid=uuids.instance, expected={},
                        actual={})):
            task.revert(self.ctxt, uuids.instance,
                        self.spec.obj_to_primitive(), None, None,
                        result=uuids.cell1,
                        flow_failures={'spawn': _failure(exc)})
        self.manager._set_vm_state_and_notify.assert_not_called()

    @mock.patch('nova.objects.InstanceMapping.get_by_instance_uuid')
    def test_revert_of_own_failure_is_left_to_bury(self, get_mapping):
        task = self.bound(instance_tasks.CreateRecord(name='create_record'))
        task.revert(self.ctxt, uuids.instance, self.spec.obj_to_primitive(),
                    None, None, result=_failure(test.TestingException()),
                    flow_failures={})
        get_mapping.assert_not_called()
        self.manager._set_vm_state_and_notify.assert_not_called()

    # ------------------------------ a resumed run: an earlier run's record
    def _cell1(self):
        return objects.CellMapping(uuid=uuids.cell1,
                                   database_connection='fake://',
                                   transport_url='fake://')

    def _earlier(self, vm_state=vm_states.BUILDING):
        return objects.Instance(uuid=uuids.instance, vm_state=vm_state)

    def _aborted(self):
        return _failure(orc_exc.JobAborted(flow_id=uuids.flow, reason='x'))

    @mock.patch('nova.objects.TagList.get_by_resource_id')
    @mock.patch('nova.objects.BlockDeviceMappingList.get_by_instance_uuid')
    @mock.patch('nova.objects.Instance.get_by_uuid')
    @mock.patch('nova.objects.HostMapping.get_by_host')
    @mock.patch('nova.objects.BuildRequest.get_by_instance_uuid',
                side_effect=exception.BuildRequestNotFound(uuid='x'))
    @mock.patch('nova.objects.InstanceMapping.get_by_instance_uuid')
    def test_execute_resumed_after_the_delete_destroys_the_record(
            self, get_mapping, get_br, get_host, get_instance, get_bdms,
            get_tags):
        """The user deleted the server before the earlier run's record was
        mapped: stock's cleanup for a build request gone destroys it."""
        self.run.resumed = True
        get_mapping.return_value = objects.InstanceMapping(cell_mapping=None)
        get_host.return_value = objects.HostMapping(
            cell_mapping=self._cell1())
        get_instance.return_value = earlier = self._earlier()
        task = self.bound(instance_tasks.CreateRecord(name='create_record'))
        self.assertRaises(orc_exc.BuildRequestGone, task.execute, self.ctxt,
                          uuids.instance, [_selection().obj_to_primitive()],
                          self.spec.obj_to_primitive(), None, None, 1)
        args = self.manager._delete_build_request.call_args[0]
        self.assertEqual(uuids.instance, args[1].instance_uuid)
        self.assertEqual((earlier, uuids.cell1, get_bdms.return_value,
                          get_tags.return_value),
                         (args[2], args[3].uuid, args[4], args[5]))

    @mock.patch('nova.objects.BuildRequest.get_by_instance_uuid')
    @mock.patch('nova.objects.Instance.get_by_uuid')
    @mock.patch('nova.objects.InstanceMapping.get_by_instance_uuid')
    def test_revert_of_an_aborted_resume_errors_the_mapped_record(
            self, get_mapping, get_instance, get_br):
        self.run.resumed = True
        get_mapping.return_value = objects.InstanceMapping(
            cell_mapping=self._cell1())
        get_instance.return_value = self._earlier()
        task = self.bound(instance_tasks.CreateRecord(name='create_record'))
        task.revert(self.ctxt, uuids.instance, self.spec.obj_to_primitive(),
                    None, None, result=self._aborted(), flow_failures={})
        get_br.return_value.destroy.assert_called_once_with()
        args = self.manager._set_vm_state_and_notify.call_args[0]
        self.assertEqual({'vm_state': vm_states.ERROR, 'task_state': None},
                         args[3])
        self.assertIsInstance(args[4], orc_exc.JobAborted)

    @mock.patch('nova.objects.Instance.get_by_uuid')
    @mock.patch('nova.objects.InstanceMapping.get_by_instance_uuid')
    def test_revert_of_a_failed_resume_leaves_a_record_in_error(
            self, get_mapping, get_instance):
        """Already in ERROR (the quota recheck's stock cleanup): no second
        fault."""
        self.run.resumed = True
        get_mapping.return_value = objects.InstanceMapping(
            cell_mapping=self._cell1())
        get_instance.return_value = self._earlier(vm_states.ERROR)
        task = self.bound(instance_tasks.CreateRecord(name='create_record'))
        task.revert(self.ctxt, uuids.instance, self.spec.obj_to_primitive(),
                    None, None, result=self._aborted(), flow_failures={})
        self.manager._set_vm_state_and_notify.assert_not_called()

    @mock.patch('nova.objects.BlockDeviceMappingList.get_by_instance_uuid')
    @mock.patch('nova.objects.InstanceAction.get_by_request_id')
    @mock.patch('nova.objects.BuildRequest.get_by_instance_uuid')
    @mock.patch('nova.objects.Instance.get_by_uuid')
    @mock.patch('nova.objects.HostMapping.get_by_host')
    @mock.patch('nova.objects.InstanceMapping.get_by_instance_uuid')
    def test_revert_of_an_aborted_resume_maps_and_errors_the_record(
            self, get_mapping, get_host, get_instance, get_br, get_action,
            get_bdms):
        """An unmapped record of the earlier run is mapped to its cell (so
        that nothing is buried in cell0), then put in ERROR."""
        self.run.resumed = True
        cell1 = self._cell1()
        get_mapping.side_effect = [
            objects.InstanceMapping(cell_mapping=None),
            objects.InstanceMapping(cell_mapping=cell1)]
        get_host.return_value = objects.HostMapping(cell_mapping=cell1)
        get_instance.return_value = earlier = self._earlier()
        self.manager._delete_build_request.return_value = True
        task = self.bound(instance_tasks.CreateRecord(name='create_record'))
        task.revert(self.ctxt, uuids.instance, self.spec.obj_to_primitive(),
                    None, None, host_list=[_selection().obj_to_primitive()],
                    result=self._aborted(), flow_failures={})
        self.manager._map_instance_to_cell.assert_called_once_with(
            self.ctxt, earlier, cell1)
        self.assertEqual(get_br.return_value,
                         self.manager._delete_build_request.call_args[0][1])
        self.assertIsInstance(
            self.manager._set_vm_state_and_notify.call_args[0][4],
            orc_exc.JobAborted)

    @mock.patch('nova.objects.Instance.get_by_uuid',
                side_effect=exception.InstanceNotFound(instance_id='x'))
    @mock.patch('nova.objects.HostMapping.get_by_host')
    @mock.patch('nova.objects.InstanceMapping.get_by_instance_uuid')
    def test_revert_of_a_failed_resume_without_a_record_is_left_to_bury(
            self, get_mapping, get_host, get_instance):
        self.run.resumed = True
        get_mapping.return_value = objects.InstanceMapping(cell_mapping=None)
        get_host.return_value = objects.HostMapping(
            cell_mapping=self._cell1())
        task = self.bound(instance_tasks.CreateRecord(name='create_record'))
        task.revert(self.ctxt, uuids.instance, self.spec.obj_to_primitive(),
                    None, None, host_list=[_selection().obj_to_primitive()],
                    result=self._aborted(), flow_failures={})
        self.manager._map_instance_to_cell.assert_not_called()
        self.manager._set_vm_state_and_notify.assert_not_called()


class HostTasksTest(TaskTestBase):

    def test_claim_host_execute_and_revert(self):
        task = self.bound(compute.ClaimHost(name='claim_host'))
        sel = _selection().obj_to_primitive()
        result = task.execute(self.ctxt, uuids.flow, uuids.instance,
                              uuids.cell1, sel, self.spec.obj_to_primitive(),
                              [sel])
        self.assertEqual({'host': 'host1', 'node': 'node1'}, result)
        kwargs = self.orc.compute_rpcapi.claim_resources.call_args[1]
        self.assertEqual({'flow_id': uuids.flow, 'atom': 'claim_host',
                          'token': 7, 'node': 'node1'}, kwargs['job'])
        task.revert(self.ctxt, uuids.flow, uuids.instance, uuids.cell1, sel,
                    result=_failure(test.TestingException('no room')))
        kwargs = self.orc.compute_rpcapi.abort_claim.call_args[1]
        self.assertIn('no room', kwargs['reason'])

    @mock.patch('nova.objects.Instance.save')
    def test_claim_host_on_alternate_takes_its_zone(self, save):
        # stock build_instances on a reschedule: the Selection's zone
        first = _selection().obj_to_primitive()
        sel = _selection(host='host2', node='node2', rp=uuids.rp2)
        sel.availability_zone = 'az2'
        self.instance.availability_zone = 'az1'
        task = self.bound(compute.ClaimHost(name='claim_host'))
        task.execute(self.ctxt, uuids.flow, uuids.instance, uuids.cell1,
                     sel.obj_to_primitive(), self.spec.obj_to_primitive(),
                     [first, sel.obj_to_primitive()])
        self.assertEqual('az2', self.instance.availability_zone)
        save.assert_called_once_with()
        # the first host keeps the zone the record was created with
        save.reset_mock()
        self.instance.availability_zone = 'az1'
        task.execute(self.ctxt, uuids.flow, uuids.instance, uuids.cell1,
                     first, self.spec.obj_to_primitive(), [first])
        self.assertEqual('az1', self.instance.availability_zone)
        save.assert_not_called()

    def test_claim_host_on_a_stock_compute(self):
        """A stock compute has no orc endpoint: its dispatcher answers
        UnsupportedVersion (a RemoteError over a real transport, the
        exception itself with the fake driver); nothing was claimed, so the
        revert sends nothing."""
        sel = _selection().obj_to_primitive()
        task = self.bound(compute.ClaimHost(name='claim_host'))
        for exc in (messaging.UnsupportedVersion('1.0'),
                    messaging.RemoteError('UnsupportedVersion', 'orc 1.0')):
            self.orc.compute_rpcapi.claim_resources.side_effect = exc
            result = task.execute(self.ctxt, uuids.flow, uuids.instance,
                                  uuids.cell1, sel,
                                  self.spec.obj_to_primitive(), [sel])
            self.assertEqual({'host': 'host1', 'node': 'node1',
                              'endpoint': 'stock'}, result)
            self.assertFalse(compute.on_orc_compute({'claim_host': result}))
            self.assertTrue(compute.on_stock_compute({'claim_host': result}))
            task.revert(self.ctxt, uuids.flow, uuids.instance, uuids.cell1,
                        sel, result=result, flow_failures={})
            self.orc.compute_rpcapi.abort_claim.assert_not_called()

    def test_claim_host_other_errors_are_not_a_stock_compute(self):
        sel = _selection().obj_to_primitive()
        task = self.bound(compute.ClaimHost(name='claim_host'))
        for exc in (messaging.RemoteError('NoValidHost', 'no room'),
                    messaging.MessagingTimeout('no answer'),
                    exception.ComputeResourcesUnavailable(reason='full')):
            self.orc.compute_rpcapi.claim_resources.side_effect = exc
            self.assertRaises(type(exc), task.execute, self.ctxt, uuids.flow,
                              uuids.instance, uuids.cell1, sel,
                              self.spec.obj_to_primitive(), [sel])

    def test_deciders_read_a_version_1_claim_as_an_orc_compute(self):
        claim = {'claim_host': {'host': 'host1', 'node': 'node1'}}
        self.assertTrue(compute.on_orc_compute(claim))
        self.assertFalse(compute.on_stock_compute(claim))

    def _stock_build(self, journaled=None):
        """The step on host2 (second attempt); ``journaled``: the progress
        details an earlier run committed (None: none)."""
        self.stub_out('nova.orc.tasks.compute.STOCK_BUILD_POLL_INTERVAL', 0)
        self.stub_out('nova.objects.BlockDeviceMappingList.'
                      'get_by_instance_uuid',
                      lambda *a, **k: objects.BlockDeviceMappingList())
        self.stub_out('nova.orc.tasks.base.cell_context',
                      lambda context, cell_uuid: context)
        task = self.bound(compute.BuildOnStockCompute(
            name='build_on_stock_compute'))
        self.progress = journaled
        storage = self.run.engine.storage
        storage.get_task_progress_details.side_effect = (
            lambda name: self.progress)
        self.journal_writes = []

        def set_task_progress(name, progress, details=None):
            # the journal commits the RUNNING atom with its details
            self.assertEqual('build_on_stock_compute', name)
            self.journal_writes.append(details)
            self.progress = {'at_progress': progress, 'details': details}
        storage.set_task_progress.side_effect = set_task_progress
        first = _selection().obj_to_primitive()
        sel = _selection(host='host2', node='node2', rp=uuids.rp2)
        third = _selection(host='host3', node='node3', rp=uuids.rp3)
        host_list = [first, sel.obj_to_primitive(), third.obj_to_primitive()]
        claim = {'host': 'host2', 'node': 'node2', 'endpoint': 'stock'}
        return lambda: task.execute(
            self.ctxt, uuids.flow, uuids.instance, uuids.cell1, claim,
            host_list[1], host_list, self.spec.obj_to_primitive(), {},
            objects.NetworkRequestList().obj_to_primitive())

    @mock.patch('nova.objects.Instance.get_by_uuid')
    def test_build_on_stock_compute_journals_casts_once_waits_out_errors(
            self, get_by_uuid):
        # a DB outage while the stock compute builds: waited out, never
        # raised (nothing may be reverted once the cast is sent)
        get_by_uuid.side_effect = [
            exception.NovaException('db down'),
            objects.Instance(uuid=uuids.instance,
                             vm_state=vm_states.BUILDING),
            objects.Instance(uuid=uuids.instance, vm_state=vm_states.ACTIVE)]
        cast = self.manager.compute_rpcapi.build_and_run_instance
        order = []
        cast.side_effect = lambda *a, **k: order.append('cast')
        self.run.ensure_owned.side_effect = lambda: order.append(
            ('owned', list(self.journal_writes)))
        result = self._stock_build()()
        self.assertEqual({'host': 'host2', 'node': 'node2',
                          'vm_state': 'active'}, result)
        # journaled first, then the claim asked, then the cast
        self.assertEqual([('owned', [{'cast_to': ['host2', 'node2']}]),
                          'cast'], order)
        kwargs = cast.call_args[1]
        self.assertEqual(('host2', 'node2'), (kwargs['host'], kwargs['node']))
        # the second attempt, after host1; host3 left for its reschedule
        self.assertEqual(2, kwargs['filter_properties']['retry'][
            'num_attempts'])
        self.assertEqual([['host1', 'node1'], ['host2', 'node2']],
                         kwargs['filter_properties']['retry']['hosts'])
        self.assertEqual(['host3'],
                         [s.service_host for s in kwargs['host_list']])
        self.assertEqual(['default'], kwargs['security_groups'])
        # a reschedule: attachments an earlier revert removed made again
        self.manager._validate_existing_attachment_ids.assert_called_once()

    @mock.patch('nova.objects.Instance.get_by_uuid')
    def test_build_on_stock_compute_resumed_after_journaling_only_waits(
            self, get_by_uuid):
        # whether or not the dead run's cast left: never a second one, and
        # nothing raised even with the instance's cell unreadable at first
        get_by_uuid.side_effect = [
            exception.NovaException('db down'),
            objects.Instance(uuid=uuids.instance, vm_state=vm_states.ACTIVE)]
        self.get_instance.side_effect = exception.NovaException('db down')
        result = self._stock_build(journaled={
            'at_progress': 0.5,
            'details': {'cast_to': ['host2', 'node2']}})()
        self.assertEqual('active', result['vm_state'])
        self.manager.compute_rpcapi.build_and_run_instance.assert_not_called()
        self.assertEqual([], self.journal_writes)

    @mock.patch('nova.objects.Instance.get_by_uuid')
    def test_build_on_stock_compute_record_of_another_host_casts(
            self, get_by_uuid):
        # an earlier attempt's record (on host1) is not this attempt's
        get_by_uuid.return_value = objects.Instance(
            uuid=uuids.instance, vm_state=vm_states.ACTIVE)
        self._stock_build(journaled={
            'at_progress': 0.5,
            'details': {'cast_to': ['host1', 'node1']}})()
        self.manager.compute_rpcapi.build_and_run_instance.assert_called_once()

    def test_build_on_stock_compute_not_journaled_does_not_cast(self):
        # another conductor claimed the job: the journal refuses the write
        execute = self._stock_build()
        self.run.engine.storage.set_task_progress.side_effect = (
            tf_exc.StorageFailure('fenced'))
        self.assertRaises(tf_exc.StorageFailure, execute)
        self.manager.compute_rpcapi.build_and_run_instance.assert_not_called()

    def test_build_on_stock_compute_aborted_before_the_cast(self):
        self.run.check_not_aborted.side_effect = orc_exc.JobAborted(
            flow_id=uuids.flow, reason='operator')
        self.assertRaises(orc_exc.JobAborted, self._stock_build())
        self.manager.compute_rpcapi.build_and_run_instance.assert_not_called()
        self.assertEqual([], self.journal_writes)

    def test_claim_host_revert_survives_a_failing_abort(self):
        self.orc.compute_rpcapi.abort_claim.side_effect = (
            exception.NovaException('boom'))
        task = self.bound(compute.ClaimHost(name='claim_host'))
        task.revert(self.ctxt, uuids.flow, uuids.instance, uuids.cell1,
                    _selection().obj_to_primitive(), result=None,
                    flow_failures={})
        job = self.orc.compute_rpcapi.abort_claim.call_args.kwargs['job']
        self.assertEqual('claim_host', job['atom'])
        self.assertEqual(_selection().nodename, job['node'])

    def test_claim_host_revert_fails_when_the_abort_is_not_answered(self):
        """An abort the host never answered is asked again (the revert
        fails; the job resumes it), not dropped: the flow must not move to
        another host while the abort may still land and clear the instance
        there. A lost claim too: the new owner undoes."""
        task = self.bound(compute.ClaimHost(name='claim_host'))
        for exc in (messaging.MessagingTimeout('no answer'),
                    orc_exc.ClaimLost(flow_id=uuids.flow),
                    orc_exc.StaleFencingToken(instance_uuid=uuids.instance,
                                              token=1, latest=2)):
            self.orc.compute_rpcapi.abort_claim.side_effect = exc
            self.assertRaises(type(exc), task.revert, self.ctxt, uuids.flow,
                              uuids.instance, uuids.cell1,
                              _selection().obj_to_primitive(), result=None,
                              flow_failures={})

    def test_networks_execute_and_revert(self):
        self.orc.compute_rpcapi.allocate_networks.return_value = '[]'
        task = self.bound(network.AllocateNetworks(name='networks'))
        claim = {'host': 'host1', 'node': 'node1'}
        self.assertEqual('[]', task.execute(
            self.ctxt, uuids.flow, uuids.instance, uuids.cell1, claim, None,
            self.spec.obj_to_primitive()))
        kwargs = self.orc.compute_rpcapi.allocate_networks.call_args[1]
        self.assertEqual(['default'], kwargs['security_groups'])
        task.revert(self.ctxt, uuids.flow, uuids.instance, uuids.cell1,
                    claim, None, result=None)
        self.orc.compute_rpcapi.deallocate_networks.assert_called_once()

    @mock.patch('nova.objects.BlockDeviceMappingList.get_by_instance_uuid')
    def test_block_devices_execute_and_revert(self, get_bdms):
        self.orc.compute_rpcapi.prep_block_devices.return_value = [uuids.v]
        task = self.bound(volume.PrepareBlockDevices(name='block_devices'))
        claim = {'host': 'host1', 'node': 'node1'}
        self.assertEqual([uuids.v], task.execute(
            self.ctxt, uuids.flow, uuids.instance, uuids.cell1, claim, {}))
        # attachments deleted by a previous host's revert are re-created
        self.manager._validate_existing_attachment_ids.assert_called_once_with(
            self.ctxt, self.instance, get_bdms.return_value)
        task.revert(self.ctxt, uuids.flow, uuids.instance, uuids.cell1,
                    claim, result=None)
        self.orc.compute_rpcapi.cleanup_block_devices.assert_called_once()

    @mock.patch('nova.objects.BlockDeviceMappingList.get_by_instance_uuid')
    def test_block_devices_of_an_instance_being_deleted(self, get_bdms):
        # its delete may have removed the attachments: none is re-created
        self.instance.task_state = 'deleting'
        task = self.bound(volume.PrepareBlockDevices(name='block_devices'))
        self.assertRaises(
            exception.UnexpectedDeletingTaskStateError, task.execute,
            self.ctxt, uuids.flow, uuids.instance, uuids.cell1,
            {'host': 'host1', 'node': 'node1'}, {})
        self.manager._validate_existing_attachment_ids.assert_not_called()
        self.orc.compute_rpcapi.prep_block_devices.assert_not_called()

    def test_spawn_execute_and_revert(self):
        task = self.bound(compute.Spawn(name='spawn'))
        claim = {'host': 'host1', 'node': 'node1'}
        self.assertEqual(claim, task.execute(
            self.ctxt, uuids.flow, uuids.instance, uuids.cell1, claim, {},
            '[]', [], 'secret', []))
        kwargs = self.orc.compute_rpcapi.spawn.call_args[1]
        self.assertEqual('secret', kwargs['admin_password'])
        task.revert(self.ctxt, uuids.flow, uuids.instance, uuids.cell1,
                    claim, network_info='[]', result=None)
        self.orc.compute_rpcapi.destroy_guest.assert_called_once()

    def test_reverts_skip_an_instance_deleted_meanwhile(self):
        self.get_instance.side_effect = exception.InstanceNotFound(
            instance_id=uuids.instance)
        claim = {'host': 'host1', 'node': 'node1'}
        self.bound(network.AllocateNetworks(name='networks')).revert(
            self.ctxt, uuids.flow, uuids.instance, uuids.cell1, claim, None,
            result=None)
        self.bound(volume.PrepareBlockDevices(name='block_devices')).revert(
            self.ctxt, uuids.flow, uuids.instance, uuids.cell1, claim,
            result=None)
        self.bound(compute.Spawn(name='spawn')).revert(
            self.ctxt, uuids.flow, uuids.instance, uuids.cell1, claim,
            result=None)
        with mock.patch.object(compute.LOG, 'exception') as log_exception:
            self.bound(compute.ClaimHost(name='claim_host')).revert(
                self.ctxt, uuids.flow, uuids.instance, uuids.cell1,
                _selection().obj_to_primitive(), result=None,
                flow_failures={})
        log_exception.assert_not_called()
        self.orc.compute_rpcapi.abort_claim.assert_not_called()
        self.orc.compute_rpcapi.deallocate_networks.assert_not_called()
        self.orc.compute_rpcapi.cleanup_block_devices.assert_not_called()
        self.orc.compute_rpcapi.destroy_guest.assert_not_called()

    def test_reverts_fail_visibly_on_other_errors(self):
        # a database outage must not turn a revert into a silent no-op
        self.get_instance.side_effect = exception.NovaException('db down')
        self.assertRaises(
            exception.NovaException,
            self.bound(network.AllocateNetworks(name='networks')).revert,
            self.ctxt, uuids.flow, uuids.instance, uuids.cell1,
            {'host': 'host1', 'node': 'node1'}, None, result=None)

    def test_finalize_execute(self):
        task = self.bound(compute.Finalize(name='finalize'))
        task.execute(self.ctxt, uuids.flow, uuids.instance, uuids.cell1,
                     {'host': 'host1', 'node': 'node1'}, '[]')
        args, kwargs = self.orc.compute_rpcapi.finish_build.call_args
        self.assertEqual('host1', args[1])
        self.assertEqual('node1', kwargs['node'])


class FlowFailureTest(test.NoDBTestCase):
    """The exception a revert reports, from a failure read back from the
    journal (a resumed revert: TaskFlow keeps type names and text only)."""

    @staticmethod
    def _journaled(exc):
        return tf_failure.Failure.from_dict(_failure(exc).to_dict())

    def test_nova_exception_keeps_its_class_and_message(self):
        failure = self._journaled(exception.NoValidHost(reason='all full'))
        self.assertIsNone(failure.exception)
        exc = base.flow_failure(None, {'schedule': failure})
        self.assertIsInstance(exc, exception.NoValidHost)
        self.assertEqual('No valid host was found. all full',
                         exc.format_message())
        self.assertIsNotNone(exc.__traceback__)

    def test_other_exception_is_its_text(self):
        failure = self._journaled(ValueError('bad value'))
        exc = base.flow_failure(None, {'schedule': failure})
        self.assertEqual(Exception, type(exc))
        self.assertEqual('bad value', str(exc))
