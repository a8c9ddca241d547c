"""Tasks acting on the instance record (API database and cell database).

They call the stock ``ComputeTaskManager`` helpers of nova-conductor
(``_bury_in_cell0``, ``_create_block_device_mapping``, ``_create_tags``,
``_map_instance_to_cell``, ``_delete_build_request``,
``_cleanup_build_artifacts``, ``_set_vm_state_and_notify``) so that records,
notifications and faults are exactly stock's.
"""

from oslo_log import log as logging
from taskflow.types import failure as tf_failure

from nova import availability_zones
from nova.compute import instance_actions
from nova.compute import vm_states
from nova.conductor import manager as conductor_manager
from nova import context as nova_context
from nova import exception
from nova import notifications
from nova import objects
from nova.orc import exception as orc_exc
from nova.orc.flows import names
from nova.orc.tasks import base

LOG = logging.getLogger(__name__)

#: the event stock ``ComputeTaskManager._create_instance_action_for_cell0``
#: records in the ``create`` action of an instance buried in cell0
#: (a functional test compares a resumed burial's events with stock's)
CELL0_CREATE_EVENT = 'conductor_schedule_and_build_instances'

#: how a build learns that its server was deleted meanwhile: stock's build
#: ends quietly on them (logged at info, no fault on the deleted record)
DELETED_DURING_BUILD = (exception.InstanceNotFound,
                        exception.UnexpectedDeletingTaskStateError,
                        orc_exc.BuildRequestGone)

#: failures after which stock reports MaxRetriesExceeded (a reschedulable
#: failure on the last alternate) rather than the failure itself
NOT_RESCHEDULED = (exception.BuildAbortException,
                   exception.InstanceNotFound,
                   exception.UnexpectedDeletingTaskStateError,
                   orc_exc.BuildRequestGone,
                   orc_exc.JobAborted,
                   orc_exc.StaleFencingToken,
                   orc_exc.ClaimLost,
                   orc_exc.ResourceLocked)


def alternate_claim_error(failures):
    """The failure of claiming an alternate host's resources with an
    error (placement refused the claim, not "resources gone", which is
    ``NoValidHost``), or None.

    Stock ``ComputeTaskManager.build_instances`` stops rescheduling on it
    and ends the build in ERROR with that error as the fault
    (``_cleanup_when_reschedule_fails``), trying no further alternate.

    :param failures: ``{atom name: taskflow Failure}``
    :returns: the Failure, or None
    """
    failure = (failures or {}).get(names.CLAIM_ALLOCATION)
    if failure is None or failure.check(exception.NoValidHost):
        return None
    return failure


def _instance_mapping(context, instance_uuid):
    """The instance's ``InstanceMapping``, or None once it is gone."""
    try:
        return objects.InstanceMapping.get_by_instance_uuid(
            context, instance_uuid)
    except exception.InstanceMappingNotFound:
        return None


def _request_spec(primitive, context):
    return base.hydrate(objects.RequestSpec, primitive, context)


def _bdms(primitive, context):
    if not primitive:
        return objects.BlockDeviceMappingList(context, objects=[])
    return base.hydrate(objects.BlockDeviceMappingList, primitive, context)


def _tags(primitive, context):
    return base.hydrate(objects.TagList, primitive, context)


class BuryInCell0OnFailure(base.OrcTask):
    """Nothing on execute; on revert, give the request stock's end state.

    Revert (the flow failed before the instance record reached a cell: lock
    conflict, scheduling failure, no host mapping): stock
    ``ComputeTaskManager._bury_in_cell0`` - the instance is created in cell0
    in ERROR with a fault and a failed ``create`` action, its BDMs and tags
    kept there, the build request destroyed. If the user deleted the build
    request meanwhile, only the orphan instance mapping is removed (as stock
    does). When the record is already in a cell,
    :class:`CreateRecord`'s revert owns the end state and this does nothing.

    Idempotent: stock's burial is several commits (record, mapping, action,
    BDMs, tags, ERROR, build request); a revert resumed after an earlier
    run stopped among them (its conductor died, or a step failed) finds
    the record in cell0 and makes only what is missing
    (:meth:`_finish_burial`), rather than failing on a second record.
    """

    def execute(self):
        pass

    def revert(self, context, instance_uuid, request_spec,
               block_device_mapping, tags, flow_failures=None, **kwargs):
        mapping = _instance_mapping(context, instance_uuid)
        if mapping is None:
            return
        exc = base.flow_failure(None, flow_failures)
        if self.run.resumed:
            cell0 = objects.CellMapping.get_by_uuid(
                context, objects.CellMapping.CELL0_UUID)
            if mapping.cell_mapping is None or (
                    mapping.cell_mapping.uuid == cell0.uuid):
                with nova_context.target_cell(context, cell0) as cctxt:
                    try:
                        buried = objects.Instance.get_by_uuid(
                            cctxt, instance_uuid, expected_attrs=['flavor'])
                    except exception.InstanceNotFound:
                        buried = None
                if buried is not None:
                    self._finish_burial(
                        context, mapping, cell0, buried, exc,
                        _request_spec(request_spec, context),
                        _bdms(block_device_mapping, context),
                        _tags(tags, context))
                    return
        if mapping.cell_mapping is not None:
            return
        try:
            build_request = objects.BuildRequest.get_by_instance_uuid(
                context, instance_uuid)
        except exception.BuildRequestNotFound:
            LOG.debug('Build request deleted before scheduling ended; '
                      'removing the instance mapping',
                      instance_uuid=instance_uuid)
            mapping.destroy()
            return
        LOG.info('Burying instance in cell0 after %s',
                 exc.__class__.__name__, instance_uuid=instance_uuid)
        # stock buries from its except block: the failed event, the
        # action's 'Error' message and the fault details need exc_info
        orc_exc.call_handling(
            exc, self.manager._bury_in_cell0,
            context, _request_spec(request_spec, context), exc,
            build_requests=[build_request],
            block_device_mapping=_bdms(block_device_mapping, context),
            tags=_tags(tags, context))


    def _finish_burial(self, context, mapping, cell0, instance, exc, spec,
                       bdms, tags):
        """What stock ``_bury_in_cell0`` does after creating the record in
        cell0, each part only where an earlier run did not get to it: the
        mapping to cell0, the failed ``create`` action
        (``_create_instance_action_for_cell0``), BDMs, tags, ERROR with the
        fault (``_set_vm_state_and_notify``), the build request destroyed
        (the record destroyed if the user deleted it meanwhile, as stock).
        """
        uuid = instance.uuid
        LOG.info('Resumed revert: the instance is in cell0 already; '
                 'finishing its burial', instance_uuid=uuid)
        if mapping.cell_mapping is None:
            mapping.cell_mapping = cell0
            mapping.save()
        with nova_context.target_cell(context, cell0) as cctxt:
            action = objects.InstanceAction.get_by_request_id(
                cctxt, uuid, cctxt.request_id)
            if action is None:
                orc_exc.call_handling(
                    exc, self.manager._create_instance_action_for_cell0,
                    cctxt, instance, exc)
            else:
                self._finish_cell0_action(cctxt, action, uuid, exc)
            if bdms and not objects.BlockDeviceMappingList.\
                    get_by_instance_uuid(cctxt, uuid):
                self.manager._create_block_device_mapping(
                    cell0, instance.flavor, uuid, bdms)
            if tags and not objects.TagList.get_by_resource_id(cctxt, uuid):
                self.manager._create_tags(cctxt, uuid, tags)
            if instance.vm_state != vm_states.ERROR:
                orc_exc.call_handling(
                    exc, self.manager._set_vm_state_and_notify, cctxt, uuid,
                    'build_instances',
                    {'vm_state': vm_states.ERROR, 'task_state': None}, exc,
                    spec)
        try:
            objects.BuildRequest.get_by_instance_uuid(context, uuid).destroy()
        except exception.BuildRequestNotFound:
            if instance.vm_state == vm_states.ERROR:
                return  # the earlier run got that far
            # the user deleted it meanwhile: stock destroys the record
            with nova_context.target_cell(context, cell0):
                instance.destroy()

    def _finish_cell0_action(self, context, action, instance_uuid, exc):
        """The failed event of a ``create`` action an earlier run made in
        cell0 and stopped before finishing (stock
        ``_create_instance_action_for_cell0`` writes the action, then starts
        the event, then finishes it with the failure): each part that is
        missing, so the action says ``Error`` as stock's does.

        :param context: RequestContext targeted at cell0
        :param action: the ``InstanceAction`` found for the request
        :param exc: the exception that made the flow bury the instance
        """
        events = [e for e in objects.InstanceActionEventList.get_by_action(
            context, action.id) if e.event == CELL0_CREATE_EVENT]
        if events and events[0].finish_time is not None:
            return
        if not events:
            objects.InstanceActionEvent.event_start(
                context, instance_uuid, CELL0_CREATE_EVENT, want_result=False,
                host=self.manager.host)
        exc = orc_exc.with_traceback(exc)
        objects.InstanceActionEvent.event_finish_with_failure(
            context, instance_uuid, CELL0_CREATE_EVENT, exc_val=exc,
            exc_tb=exc.__traceback__, want_result=False)


class BuryGroupInCell0OnFailure(base.OrcTask):
    """Nothing on execute; on revert, stock's end state for a multi-create
    request whose scheduling failed.

    Revert (the group's scheduling failed: ``NoValidHost``, a conductor
    that cannot reach the scheduler): stock
    ``ComputeTaskManager._bury_in_cell0`` for every instance of the request
    whose build request still exists and that has no boot flow of its own
    yet (one that has gets its end state from that flow) - created in cell0
    in ERROR with a fault and a failed ``create`` action, the build
    requests destroyed.
    Instances whose build request the user deleted meanwhile lose their
    orphan instance mapping (as :class:`BuryInCell0OnFailure`).
    """

    def execute(self):
        pass

    def revert(self, context, instance_uuids, request_specs,
               block_device_mapping, tags, flow_failures=None, **kwargs):
        exc = base.flow_failure(None, flow_failures)
        build_requests = []
        posted = self.with_boot_flows(instance_uuids)
        for instance_uuid in instance_uuids:
            if instance_uuid in posted:
                # its boot flow gives it its end state
                continue
            mapping = _instance_mapping(context, instance_uuid)
            if mapping is None or mapping.cell_mapping is not None:
                continue
            try:
                build_requests.append(objects.BuildRequest.get_by_instance_uuid(
                    context, instance_uuid))
            except exception.BuildRequestNotFound:
                mapping.destroy()
        if not build_requests:
            return
        LOG.info('Burying %d instances of a multi-create request in cell0 '
                 'after %s', len(build_requests), exc.__class__.__name__)
        orc_exc.call_handling(
            exc, self.manager._bury_in_cell0,
            context, _request_spec(request_specs[0], context), exc,
            build_requests=build_requests,
            block_device_mapping=_bdms(block_device_mapping, context),
            tags=_tags(tags, context))


class CreateRecord(base.OrcTask):
    """Create the instance in the chosen host's cell, as stock does.

    Changes (stock ``schedule_and_build_instances`` for one instance): the
    instance row in the cell of the first selected host (availability zone
    of that host), the quota recheck, the BUILDING state-update notification,
    the ``create`` instance action, BDMs, tags, the instance mapping to the
    cell, and the build request deleted.

    Idempotent (a resumed job re-runs it when its conductor died before
    journaling the result): when the instance mapping already points to a
    cell it only removes a build request left behind and returns that cell;
    otherwise the instance record, the action and the BDMs an earlier run
    created in the cell are found and kept instead of created again. If the
    user deleted the server before such a record was mapped (the API could
    not see it), the record is destroyed as stock destroys it when the
    build request is gone (``_delete_build_request``).

    Returns the cell uuid (:data:`names.CELL_UUID`).

    Revert: the instance goes to ERROR with a fault and a notification
    (stock ``_set_vm_state_and_notify``), ``task_state`` None. If the
    failure came before the mapping was updated (quota recheck), stock
    ``_cleanup_build_artifacts`` finishes the record first (BDMs, tags,
    mapping, build request). A reschedulable failure on the last host is
    reported as stock reports it: ``MaxRetriesExceeded``; an error claiming
    an alternate's resources as itself (:func:`alternate_claim_error`). When this task's
    resumed run failed (an abort stops it before its probes), a record an
    earlier run created goes to ERROR the same way, finished and mapped
    first if it was not mapped yet, so that no second record is buried in
    cell0 (:meth:`_earlier_record_left`).
    """

    def execute(self, context, instance_uuid, host_list, request_spec,
                block_device_mapping, tags, num_instances):
        mapping = objects.InstanceMapping.get_by_instance_uuid(
            context, instance_uuid)
        if mapping.cell_mapping is not None:
            self._drop_build_request(context, instance_uuid)
            return mapping.cell_mapping.uuid
        host = base.hydrate(objects.Selection, host_list[0], context)
        cell = self._cell(context, host_list)
        # probed first: the user may have deleted the server since the
        # earlier run created its record, which the API cannot see
        earlier = self._earlier_record(context, cell, instance_uuid)
        try:
            build_request = objects.BuildRequest.get_by_instance_uuid(
                context, instance_uuid)
        except exception.BuildRequestNotFound:
            if earlier is not None:
                self._destroy_deleted(context, earlier, cell)
            raise orc_exc.BuildRequestGone(instance_uuid=instance_uuid)
        spec = _request_spec(request_spec, context)
        instance = build_request.get_new_instance(context)
        instance.availability_zone = (
            availability_zones.get_host_availability_zone(
                context, host.service_host))
        if earlier is None:
            with conductor_manager.obj_target_cell(instance, cell):
                instance.create()
        else:
            instance = earlier
        self._recheck_quota(context, instance, spec, num_instances,
                            build_request, block_device_mapping, tags, cell)
        bdms = _bdms(block_device_mapping, context)
        with nova_context.target_cell(context, cell) as cctxt:
            if earlier is None:
                notifications.send_update_with_states(
                    cctxt, instance, None, vm_states.BUILDING, None, None,
                    service='conductor')
                objects.InstanceAction.action_start(
                    cctxt, instance.uuid, instance_actions.CREATE,
                    want_result=False)
                instance_bdms = self.manager._create_block_device_mapping(
                    cell, instance.flavor, instance.uuid, bdms)
            else:
                instance_bdms = self._bdms_and_action(
                    cctxt, instance, cell, bdms)
            instance_tags = self.manager._create_tags(
                cctxt, instance.uuid, _tags(tags, context))
        self.manager._map_instance_to_cell(context, instance, cell)
        if not self.manager._delete_build_request(
                context, build_request, instance, cell, instance_bdms,
                instance_tags):
            raise orc_exc.BuildRequestGone(instance_uuid=instance_uuid)
        return cell.uuid

    @staticmethod
    def _cell(context, host_list):
        """The ``CellMapping`` of the first selected host."""
        host = base.hydrate(objects.Selection, host_list[0], context)
        return objects.HostMapping.get_by_host(
            context, host.service_host).cell_mapping

    def _destroy_deleted(self, context, instance, cell):
        """The user deleted the server (its build request) after an
        earlier run created ``instance`` in ``cell`` and before it mapped it
        there, so the API could not see the record: stock's end for that
        race (``_delete_build_request`` finding the build request gone):
        the instance, its BDMs and tags destroyed, with the delete
        notifications."""
        with nova_context.target_cell(context, cell) as cctxt:
            bdms = objects.BlockDeviceMappingList.get_by_instance_uuid(
                cctxt, instance.uuid)
            tags = objects.TagList.get_by_resource_id(cctxt, instance.uuid)
        LOG.info('Resumed flow: the server was deleted before its record '
                 'was mapped to cell %s; destroying the record', cell.uuid,
                 instance_uuid=instance.uuid)
        # its row is gone: stock's destroy of it fails and stock cleans up
        gone = objects.BuildRequest(context, instance_uuid=instance.uuid)
        self.manager._delete_build_request(context, gone, instance, cell,
                                           bdms, tags)

    def _earlier_record_left(self, context, instance_uuid, host_list,
                             block_device_mapping, tags):
        """For the revert of a resumed run that failed (an abort stops it
        before its probes): True when an earlier run's record is in a cell
        for the revert to put in ERROR. An unmapped one is finished first
        as :meth:`execute` would have (action, BDMs, tags, mapping, build
        request deleted), so that :class:`BuryInCell0OnFailure` sees it in
        its cell and makes no second record in cell0; one whose build
        request the user deleted is destroyed as stock does (False)."""
        mapping = _instance_mapping(context, instance_uuid)
        if mapping is None:
            return False
        if mapping.cell_mapping is not None:
            earlier = self._earlier_record(context, mapping.cell_mapping,
                                           instance_uuid)
            if earlier is None or earlier.vm_state == vm_states.ERROR:
                # deleted meanwhile, or finished in ERROR already (the
                # quota recheck's stock cleanup)
                return False
            self._drop_build_request(context, instance_uuid)
            return True
        if not host_list:
            return False
        cell = self._cell(context, host_list)
        earlier = self._earlier_record(context, cell, instance_uuid)
        if earlier is None:
            # it never reached a cell: BuryInCell0OnFailure's case
            return False
        try:
            build_request = objects.BuildRequest.get_by_instance_uuid(
                context, instance_uuid)
        except exception.BuildRequestNotFound:
            self._destroy_deleted(context, earlier, cell)
            return False
        with nova_context.target_cell(context, cell) as cctxt:
            instance_bdms = self._bdms_and_action(
                cctxt, earlier, cell, _bdms(block_device_mapping, context))
            instance_tags = self.manager._create_tags(
                cctxt, earlier.uuid, _tags(tags, context))
        self.manager._map_instance_to_cell(context, earlier, cell)
        return self.manager._delete_build_request(
            context, build_request, earlier, cell, instance_bdms,
            instance_tags)

    def _earlier_record(self, context, cell, instance_uuid):
        """The instance an earlier run of this task created in ``cell``
        before its conductor died, or None (always None on a first run:
        no query)."""
        if not self.run.resumed:
            return None
        with nova_context.target_cell(context, cell) as cctxt:
            try:
                instance = objects.Instance.get_by_uuid(cctxt, instance_uuid)
            except exception.InstanceNotFound:
                return None
        LOG.info('Resumed flow: the instance record exists in cell %s; '
                 'keeping it', cell.uuid, instance_uuid=instance_uuid)
        return instance

    def _bdms_and_action(self, cctxt, instance, cell, bdms):
        """The ``create`` action and BDMs of an instance an earlier run
        created: made now only where that run did not get to them."""
        if objects.InstanceAction.get_by_request_id(
                cctxt, instance.uuid, cctxt.request_id) is None:
            objects.InstanceAction.action_start(
                cctxt, instance.uuid, instance_actions.CREATE,
                want_result=False)
        existing = objects.BlockDeviceMappingList.get_by_instance_uuid(
            cctxt, instance.uuid)
        if existing:
            return existing
        return self.manager._create_block_device_mapping(
            cell, instance.flavor, instance.uuid, bdms)

    @staticmethod
    def _drop_build_request(context, instance_uuid):
        """A build request left behind by a run that died after mapping the
        instance to its cell (stock deletes it right after)."""
        try:
            objects.BuildRequest.get_by_instance_uuid(
                context, instance_uuid).destroy()
        except exception.BuildRequestNotFound:
            return
        LOG.info('Resumed flow: deleted the build request an earlier run '
                 'left behind', instance_uuid=instance_uuid)

    def _recheck_quota(self, context, instance, spec, num_instances,
                       build_request, block_device_mapping, tags, cell):
        try:
            self.manager._recheck_quota(
                context, instance.flavor, spec, num_instances,
                project_id=instance.project_id, user_id=instance.user_id)
        except Exception as exc:
            # stock: finish the record in ERROR so the user sees why
            self.manager._cleanup_build_artifacts(
                context, exc, [instance], [build_request], [spec],
                _bdms(block_device_mapping, context), _tags(tags, context),
                {instance.uuid: cell})
            raise

    def revert(self, context, instance_uuid, request_spec,
               block_device_mapping, tags, host_list=None, result=None,
               flow_failures=None, **kwargs):
        if isinstance(result, tf_failure.Failure) and not (
                self.run.resumed and self._earlier_record_left(
                    context, instance_uuid, host_list, block_device_mapping,
                    tags)):
            # this task failed: before the record reached a cell
            # (BuryInCell0OnFailure's case), in the quota recheck (stock
            # cleanup already put it in ERROR) or the build request is gone
            # (on a resume: and no earlier run's record is left)
            return
        exc = base.flow_failure(result, flow_failures)
        if isinstance(exc, DELETED_DURING_BUILD):
            # the server's delete owns its end: no ERROR, no fault
            LOG.info('Build stopped: the server was deleted during it',
                     instance_uuid=instance_uuid)
            return
        mapping = _instance_mapping(context, instance_uuid)
        if mapping is None or mapping.cell_mapping is None:
            # not created in a cell (or created and never mapped: the
            # quota recheck path already finished it): BuryInCell0OnFailure
            return
        claim_error = alternate_claim_error(flow_failures)
        # stock records these faults from its except blocks (details: the
        # traceback); MaxRetriesExceeded is built outside one (no details)
        handled = True
        if claim_error is not None and claim_error.exception is not None:
            # stock: the alternate's claim error itself, no MaxRetries
            exc = orc_exc.with_traceback(claim_error.exception)
        elif not isinstance(exc, NOT_RESCHEDULED):
            handled = False
            # stock ComputeTaskManager.build_instances' words (the
            # exception adds "Exceeded maximum number of retries.")
            exc = orc_exc.with_traceback(exception.MaxRetriesExceeded(reason=(
                'Exhausted all hosts available for retrying build failures '
                'for instance %s.' % instance_uuid)))
        with nova_context.target_cell(context, mapping.cell_mapping) as cctxt:
            args = (cctxt, instance_uuid, 'build_instances',
                    {'vm_state': vm_states.ERROR, 'task_state': None},
                    exc, _request_spec(request_spec, context))
            try:
                if handled:
                    orc_exc.call_handling(
                        exc, self.manager._set_vm_state_and_notify, *args)
                else:
                    self.manager._set_vm_state_and_notify(*args)
            except exception.InstanceNotFound:
                LOG.debug('Instance deleted during its build',
                          instance_uuid=instance_uuid)
