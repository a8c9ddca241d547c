"""Tasks acting on the scheduler and placement, and the reschedule retry."""

from oslo_log import log as logging
from oslo_serialization import jsonutils
from taskflow import retry
from taskflow.types import failure as tf_failure

from nova import exception
from nova import objects
from nova.orc import fencing
from nova.orc.tasks import base
from nova.orc.tasks import instance as instance_tasks
from nova.scheduler import utils as scheduler_utils

LOG = logging.getLogger(__name__)


class Schedule(base.OrcTask):
    """Pick a host and its alternates; the scheduler claims in placement.

    Changes: stock ``ComputeTaskManager._schedule_instances`` (server group
    set-up, ``select_destinations`` with alternates, up to
    ``[scheduler] max_attempts`` hosts): the first host's resources are
    allocated in placement for the instance. When the API request had
    several instances, the conductor scheduled them together (as stock) and
    passes this instance's hosts as ``preselected_hosts``.

    Returns the Selection primitives (:data:`names.HOST_LIST`).

    Idempotent: in a resumed job, allocations an earlier run of this task
    made (its result was lost with its conductor) are deleted before
    scheduling again, so that the scheduler never claims twice on the same
    consumer.

    Revert: delete the instance's allocations in placement (``force``).
    When this run failed, only where a claim may exist: in a resumed run
    (an abort stops it before it deletes the earlier run's claim) or with
    ``preselected_hosts`` (the group's scheduling claimed); a first run's
    failed scheduling claimed nothing.
    """

    def execute(self, context, instance_uuid, request_spec,
                preselected_hosts):
        if preselected_hosts:
            return preselected_hosts
        if self.run.resumed:
            client = self.manager.report_client
            if client.get_allocs_for_consumer(
                    context, instance_uuid).get('allocations'):
                LOG.info('Resumed flow: deleting the allocations of an '
                         'earlier scheduling before scheduling again',
                         instance_uuid=instance_uuid)
                self.delete_allocations(context, instance_uuid)
        spec = base.hydrate(objects.RequestSpec, request_spec, context)
        # the scheduler claims in placement, which knows no token
        fencing.check()
        host_lists = self.manager._schedule_instances(
            context, spec, [instance_uuid], return_alternates=True)
        return [s.obj_to_primitive() for s in host_lists[0]]

    def revert(self, context, instance_uuid, preselected_hosts=None,
               result=None, **kwargs):
        if (isinstance(result, tf_failure.Failure) and
                not self.run.resumed and not preselected_hosts):
            return
        self.delete_allocations(context, instance_uuid)


class ScheduleGroup(base.OrcTask):
    """Schedule every instance of a multi-create request at once.

    Changes: stock ``ComputeTaskManager._schedule_instances`` for all the
    instances (all fit or none: placement allocations for each, host and
    alternates each).

    Returns one list of Selection primitives per instance
    (:data:`names.HOST_LISTS`), in the order of ``instance_uuids``.

    Idempotent: in a resumed job, allocations an earlier run made (its
    result was lost with its conductor) are deleted before scheduling again.

    Revert: delete the allocations (``force``) of every instance that has
    no boot flow of its own yet (one that has holds its allocation: it is
    running, or ended with it); when this run failed, only if it is a
    resume (an earlier run's claims may be there: an abort stops the
    resumed run before it deletes them).
    """

    def execute(self, context, instance_uuids, request_specs):
        client = self.manager.report_client
        if self.run.resumed:
            for instance_uuid in instance_uuids:
                if client.get_allocs_for_consumer(
                        context, instance_uuid).get('allocations'):
                    LOG.info('Resumed flow: deleting the allocations of an '
                             'earlier scheduling', instance_uuid=instance_uuid)
                    self.delete_allocations(context, instance_uuid)
        spec = base.hydrate(objects.RequestSpec, request_specs[0], context)
        # the scheduler claims in placement, which knows no token
        fencing.check()
        host_lists = self.manager._schedule_instances(
            context, spec, instance_uuids, return_alternates=True)
        return [[s.obj_to_primitive() for s in host_list]
                for host_list in host_lists]

    def revert(self, context, instance_uuids, result=None, **kwargs):
        if isinstance(result, tf_failure.Failure) and not self.run.resumed:
            return
        posted = self.with_boot_flows(instance_uuids)
        for instance_uuid in instance_uuids:
            if instance_uuid in posted:
                # its boot flow holds the allocation now
                continue
            self.delete_allocations(context, instance_uuid)


class HostRetry(retry.ParameterizedForEach):
    """Try the selected host, then each alternate (stock reschedule).

    Provides the Selection primitive to try (:data:`names.SELECTION`).
    A failure stock would not reschedule (``BuildAbortException``, instance
    deleted, build request gone, lock conflict, stale fencing token, an
    error claiming an alternate's resources) reverts the whole flow at once
    (``REVERT_ALL``); others move on to the next
    alternate until the host list (``[scheduler] max_attempts`` long) is
    exhausted, then the whole flow reverts.
    """

    def on_failure(self, values, history, *args, **kwargs):
        failures = []
        if len(history):
            failures = [f for _name, f in history.outcomes_iter(index=-1)]
        for failure in failures:
            if failure.check(*instance_tasks.NOT_RESCHEDULED):
                LOG.info('Not rescheduling after %s',
                         failure.exception_str)
                return retry.REVERT_ALL
        claim_error = instance_tasks.alternate_claim_error(
            dict(history.outcomes_iter(index=-1)) if len(history) else {})
        if claim_error is not None:
            # stock build_instances: _cleanup_when_reschedule_fails, no
            # further alternate
            LOG.info('Not rescheduling: claiming the alternate failed: %s',
                     claim_error.exception_str)
            return retry.REVERT_ALL
        decision = super().on_failure(values=values, history=history)
        # no alternate left: the whole boot reverts (a plain REVERT would
        # stop at this subflow and leave the record and locks as they are)
        return retry.REVERT_ALL if decision == retry.REVERT else decision


class ClaimAllocation(base.OrcTask):
    """Hold the instance's placement allocation on the selected host.

    Changes: nothing when the instance's allocation is already against the
    selected compute node (first host: the scheduler allocated). For an
    alternate, claims its ``allocation_request`` (stock
    ``scheduler_utils.claim_resources``, as the reschedule path of stock
    ``build_instances`` does); an alternate whose resources are gone fails
    with ``NoValidHost`` and the retry moves on. Also maps request groups to
    providers (``fill_provider_mapping``).

    Returns the request spec primitive with its provider mapping.

    Revert: delete the instance's allocations (``force``), so the next
    alternate starts clean and a final failure leaves none.
    """

    def execute(self, context, instance_uuid, selection, request_spec):
        sel = base.hydrate(objects.Selection, selection, context)
        spec = base.hydrate(objects.RequestSpec, request_spec, context)
        client = self.manager.report_client
        allocs = client.get_allocs_for_consumer(
            context, instance_uuid).get('allocations') or {}
        if sel.compute_node_uuid not in allocs:
            if allocs:
                self.delete_allocations(context, instance_uuid)
            alloc_req = jsonutils.loads(sel.allocation_request)
            fencing.check()
            if not scheduler_utils.claim_resources(
                    context, client, spec, instance_uuid, alloc_req,
                    sel.allocation_request_version):
                raise exception.NoValidHost(
                    reason='resources of alternate host %s are gone' %
                    sel.service_host)
        scheduler_utils.fill_provider_mapping(spec, sel)
        return spec.obj_to_primitive()

    def revert(self, context, instance_uuid, **kwargs):
        self.delete_allocations(context, instance_uuid)
