"""``OrcComputeManager``: the stock compute manager plus the orc endpoint.

The stock ``ComputeManager`` keeps serving every stock RPC (a stock
conductor, or ours for operations not yet orchestrated, works unchanged).
:class:`OrcComputeEndpoint` adds, in RPC namespace ``orc`` version 1.0, the
fine-grained host-side steps of the boot flow. Each step is the piece of
stock ``ComputeManager._do_build_and_run_instance`` /
``_build_and_run_instance`` / ``_build_resources`` it names, called through
the stock manager's own methods, so the instance, notifications, resource
tracker and instance-action records are what stock produces.

Every step and every undo runs through :func:`host_step`, the one place
that:

* takes stock's per-instance lock (``utils.synchronized(instance.uuid)``,
  the lock ``build_and_run_instance`` builds under and
  ``terminate_instance`` deletes under), so a delete sent to the host waits
  for the step in progress and then removes what it made; spawn also runs
  under the manager's build semaphore (``[DEFAULT] max_concurrent_builds``),
  as stock's build does;
* checks the fencing token ``job['token']``: a call (forward or undo) with
  a token lower than the highest seen for the instance is refused with
  :class:`~nova.orc.exception.StaleFencingToken`;
* keeps steps idempotent, keyed by ``job = {'flow_id', 'atom', 'token'}``: a
  repeated forward call (a resumed flow) returns the recorded result;
  records live in memory, so steps with lasting side effects also probe the
  real state before acting (``spawn`` the hypervisor, so a guest is never
  created twice; ``allocate_networks`` neutron, so a port is never created
  twice); an undo forgets the record and, once done, leaves a tombstone,
  so a late copy of the forward call (one its conductor gave up on, undid,
  and moved to another host from) is refused with
  :class:`~nova.orc.exception.StepUndone` instead of doing work nobody
  undoes, and a late copy of the undo is answered as done;
* keeps a graceful shutdown (stock's, compute RPC 6.5) waiting for the
  builds in progress here: the build of a flow on this host, from
  ``claim_resources`` to ``finish_build`` or ``abort_claim``, is one
  in-progress task named ``build_instance`` in the manager's tracker, as
  stock's build is (``_start_recorded_task`` in
  ``build_and_run_instance``); the steps themselves are not tracked one by
  one. The conductor sends every step after the claim to ``compute-alt``,
  the RPC server a compute shutting down keeps until that wait ends;
* handles a delete racing the build, as stock's build does: a forward step
  that finds its instance deleted or being deleted does nothing and raises
  ``InstanceNotFound`` / ``UnexpectedDeletingTaskStateError`` (the
  conductor does not reschedule on them); one that finds it so after doing
  its work undoes that work first; an undo that finds it so leaves the
  clean-up to the delete. These exceptions and a stale token are expected
  RPC outcomes (no ERROR traceback in the compute log).
"""

import collections
import contextlib
import functools
import inspect
import threading

from oslo_log import log as logging
import oslo_messaging as messaging

from nova.compute import manager as compute_manager
from nova.compute import task_states
from nova.compute import utils as compute_utils
from nova.compute import vm_states
from nova import context as nova_context
from nova import exception
from nova.i18n import _
from nova import manager as nova_manager
from nova.network import model as network_model
from nova import objects
from nova.objects import fields
from nova.orc.compute import rpcapi as orc_rpcapi
from nova.orc import exception as orc_exc
from nova import utils
from nova.virt import driver as virt_driver

LOG = logging.getLogger(__name__)

#: the instance-action event stock records around a build on the host
BUILD_EVENT = 'compute__do_build_and_run_instance'

#: spawn failures stock turns into BuildAbortException (no reschedule)
SPAWN_ABORTS = (exception.FlavorDiskTooSmall, exception.FlavorMemoryTooSmall,
                exception.ImageNotActive, exception.ImageUnacceptable,
                exception.InvalidDiskInfo, exception.InvalidDiskFormat,
                exception.CertificateValidationFailed,
                exception.VolumeEncryptionNotSupported,
                exception.InvalidInput, exception.RequestedVRamTooHigh)

#: recorded step results (and fencing tokens) kept per compute host
MAX_RECORDED_STEPS = 4096

#: stock's "the instance was deleted during its build" exceptions: stock's
#: build stops quietly on them, the conductor does not reschedule on them
#: (``nova.orc.tasks.instance.NOT_RESCHEDULED``)
INSTANCE_DELETED = (exception.InstanceNotFound,
                    exception.UnexpectedDeletingTaskStateError)

FORWARD = 'forward'
UNDO = 'undo'

#: steps whose failure stock reports with ``create.error`` carrying the
#: failure itself (``_build_and_run_instance``'s handlers)
BUILD_STEPS = ('claim_resources', 'allocate_networks', 'prep_block_devices',
               'spawn')

#: the step that starts a build's in-progress task on this host, and the
#: steps that end it (OrcComputeEndpoint._track_build): the build done, or
#: its claim undone
BUILD_START = 'claim_resources'
BUILD_ENDS = ('finish_build', 'abort_claim')

#: how a build attempt on this host failed, for :meth:`OrcComputeEndpoint.
#: abort_claim`: ``create.error`` sent, the failure counts against the node
NOTIFIED = 'notified'
#: ``create.error`` sent; a group policy violation, which stock reschedules
#: without counting it against the node (``RESCHEDULED_BY_POLICY``)
BY_POLICY = 'by_policy'
#: no ``create.error``: stock fails before its handlers (device tagging,
#: trusted certificates, PCI mapping); counts against the node
SILENT = 'silent'


def _deleted(context, instance):
    """The stock exception saying that ``instance`` is deleted or being
    deleted (``task_state`` DELETING), read from the database; None when it
    is neither.

    :param instance: ``Instance`` as the conductor sent it
    :returns: an ``InstanceNotFound`` or ``UnexpectedDeletingTaskStateError``
        instance (not raised), or None
    """
    try:
        current = objects.Instance.get_by_uuid(context, instance.uuid,
                                               expected_attrs=[])
    except exception.InstanceNotFound as e:
        return e
    if current.task_state == task_states.DELETING:
        return exception.UnexpectedDeletingTaskStateError(
            instance_uuid=instance.uuid,
            expected={'task_state': instance.task_state},
            actual={'task_state': current.task_state})
    return None


def _attempt_key(job):
    """The key of one attempt of a flow's step on this host: flow, atom and
    node (``job['node']``; a reschedule to another node of the same host,
    e.g. ironic, is another attempt; absent from an older conductor's
    calls)."""
    return (job['flow_id'], job['atom'], job.get('node'))


def host_step(kind, undo=None, build=False):
    """Decorator of every :class:`OrcComputeEndpoint` RPC method.

    The decorated method is called as ``method(context, instance, ...,
    job)`` (oslo.messaging passes keywords) and runs, in this order:

    1. under stock's per-instance lock: ``utils.synchronized(instance.uuid)``
       exactly as ``ComputeManager.build_and_run_instance`` and
       ``terminate_instance`` take it (same name, same process-wide
       semaphore), so the step and a delete on this host never overlap;
    2. fencing: ``job['token']`` lower than the highest token seen for the
       instance raises :class:`~nova.orc.exception.StaleFencingToken`,
       for forward and undo calls alike; otherwise it becomes the highest;
    3. forward steps (``kind`` :data:`FORWARD`): an instance deleted or
       being deleted raises ``InstanceNotFound`` /
       ``UnexpectedDeletingTaskStateError`` without doing anything; a step
       whose undo ran here for the same attempt with a token not lower
       raises :class:`~nova.orc.exception.StepUndone`; a
       recorded result for ``(job['flow_id'], job['atom'])`` is returned
       as is; otherwise the method runs (``build``: under the manager's
       ``_build_semaphore``, as stock's build) and its result is recorded.
       If the method raised one of those two exceptions, or the instance is
       deleted or being deleted once it returned, ``undo`` runs and the
       exception is raised (nothing recorded);
    4. undo steps (``kind`` :data:`UNDO`): the record of the forward step
       is forgotten; a copy of an undo that already ran here for the same
       attempt with a token not lower is answered as done; an instance
       deleted or being deleted is left to its delete (stock
       ``terminate_instance`` removes guest, ports, attachments and claim
       under this lock; touching the instance now would, e.g., clear the
       host that delete needs); otherwise the method runs. Either way the
       attempt's tombstone is left once the undo is done (none when it
       raised: a later copy tries again).

    Deletion and stale-token outcomes are logged here (info, warning) and
    marked as expected exceptions, so the RPC server does not log them as
    errors.

    :param kind: :data:`FORWARD` or :data:`UNDO`
    :param undo: forward steps: name of the endpoint method that undoes the
        step's work, called as ``undo(context, instance, **arguments)``
        with the step's other arguments; None: nothing to undo
    :param build: run the method under ``manager._build_semaphore``
    """
    def decorator(fn):
        signature = inspect.signature(fn)

        def wrapper(self, *args, **kwargs):
            arguments = signature.bind(self, *args, **kwargs).arguments
            instance = arguments['instance']

            @utils.synchronized(instance.uuid)
            def locked():
                return self._run_step(fn, kind, undo, build, arguments)
            return locked()

        # the build, not each step, is the in-progress task a graceful
        # shutdown waits for (OrcComputeEndpoint._track_build)
        return nova_manager.skip_automatic_rpc_tracking(
            functools.wraps(fn)(messaging.expected_exceptions(
                orc_exc.StaleFencingToken, orc_exc.StepUndone,
                *INSTANCE_DELETED)(wrapper)))
    return decorator


class OrcComputeEndpoint:
    """RPC endpoint ``orc`` 1.0 of a compute host: boot steps of a flow.

    :param manager: the host's :class:`OrcComputeManager`
    """

    target = messaging.Target(namespace=orc_rpcapi.NAMESPACE,
                              version=orc_rpcapi.VERSION)

    def __init__(self, manager):
        self.manager = manager
        self._lock = threading.Lock()
        self._recorded = collections.OrderedDict()
        self._tokens = collections.OrderedDict()
        #: (flow id, atom, node) -> token of the undo that ran here: the
        #: tombstones :meth:`_check_not_undone` refuses late steps with
        self._undone = collections.OrderedDict()
        #: flow id -> how its build attempt on this host failed
        #: (:data:`NOTIFIED`, :data:`BY_POLICY`, :data:`SILENT`)
        self._failures = collections.OrderedDict()
        #: flow id -> (instance uuid, key of its ``build_instance`` task
        #: in the manager's in-progress tracker)
        self._builds = {}

    # --------------------------------------- fencing, idempotency, deletes
    def _check_token(self, instance, job):
        token = int(job.get('token') or 0)
        with self._lock:
            latest = self._tokens.get(instance.uuid, 0)
            if token < latest:
                LOG.warning('Refusing a call with fencing token %d (latest '
                            '%d) from flow %s: its conductor lost the job',
                            token, latest, job.get('flow_id'),
                            instance=instance)
                raise orc_exc.StaleFencingToken(
                    instance_uuid=instance.uuid, token=token, latest=latest)
            self._tokens[instance.uuid] = token
            self._tokens.move_to_end(instance.uuid)
            while len(self._tokens) > MAX_RECORDED_STEPS:
                self._tokens.popitem(last=False)

    def _recorded_result(self, job):
        with self._lock:
            return self._recorded.get((job['flow_id'], job['atom']))

    def _record(self, job, result):
        with self._lock:
            self._recorded[(job['flow_id'], job['atom'])] = result
            while len(self._recorded) > MAX_RECORDED_STEPS:
                self._recorded.popitem(last=False)
        return result

    def _forget(self, job):
        with self._lock:
            self._recorded.pop((job['flow_id'], job['atom']), None)

    def _undone_for(self, job):
        """The token of the undo that ran here for the attempt of ``job``
        when it covers this call (a token not greater than the undo's: a
        late copy, not a resumed flow), else None."""
        with self._lock:
            undone = self._undone.get(_attempt_key(job))
        if undone is not None and int(job.get('token') or 0) <= undone:
            return undone
        return None

    def _leave_tombstone(self, job):
        """An undo done: late copies of the forward step, and of the undo
        itself, with this token or a lower one are refused or answered as
        done (:meth:`_undone_for`)."""
        with self._lock:
            self._undone[_attempt_key(job)] = int(job.get('token') or 0)
            self._undone.move_to_end(_attempt_key(job))
            while len(self._undone) > MAX_RECORDED_STEPS:
                self._undone.popitem(last=False)

    def _check_not_undone(self, instance, job):
        """Refuse a forward step whose undo already ran here for the same
        attempt (flow, atom, node) with a token as great or greater: a late
        copy of a call the conductor gave up on (its request queued behind
        busy RPC threads, or sent to topic ``compute`` while the undo went to
        ``compute-alt``). A resumed flow, whose token is greater, may do the
        step again.

        :raises nova.orc.exception.StepUndone:
        """
        undone = self._undone_for(job)
        if undone is not None:
            token = int(job.get('token') or 0)
            LOG.warning('Refusing step %s of flow %s (token %d): its undo ran '
                        'here already (token %d); a late call', job['atom'],
                        job['flow_id'], token, undone, instance=instance)
            raise orc_exc.StepUndone(
                instance_uuid=instance.uuid, atom=job['atom'],
                flow_id=job['flow_id'], node=job.get('node'), token=token,
                undone=undone)

    def _failed(self, job, how):
        """Remember how the build attempt of flow ``job['flow_id']`` failed
        here (the first failure wins: parallel steps may both fail).

        :returns: True when this is the first failure recorded
        """
        with self._lock:
            if job['flow_id'] in self._failures:
                return False
            self._failures[job['flow_id']] = how
            while len(self._failures) > MAX_RECORDED_STEPS:
                self._failures.popitem(last=False)
        return True

    def _notify_create_error(self, context, instance, job, fault,
                             how=NOTIFIED):
        """Stock's ``create.error`` notifications (legacy and versioned)
        for a build failure, as ``_build_and_run_instance`` sends them: the
        fault is the failure itself. Call it from the ``except`` block
        handling ``fault`` (the versioned payload names the raising frame).
        Once per build attempt; :meth:`abort_claim` then sends none.

        :param fault: the exception
        :param how: :data:`NOTIFIED` or :data:`BY_POLICY`
        """
        if not self._failed(job, how):
            return
        self._send_create_error(context, instance, fault)

    def _send_create_error(self, context, instance, fault):
        """The legacy and the versioned ``create.error`` notification of
        ``fault``, as stock's ``_build_and_run_instance`` sends them."""
        mgr = self.manager
        bdms = objects.BlockDeviceMappingList.get_by_instance_uuid(
            context, instance.uuid)
        mgr._notify_about_instance_usage(context, instance, 'create.error',
                                         fault=fault)
        compute_utils.notify_about_instance_create(
            context, instance, mgr.host,
            phase=fields.NotificationPhase.ERROR, exception=fault,
            bdms=bdms)

    # ------------------------------------------------ graceful shutdown
    def _track_build(self, context, instance, job):
        """Start the in-progress task of the build of flow
        ``job['flow_id']`` on this host, named ``build_instance`` as stock's
        (``ComputeManager.build_and_run_instance`` records its build so);
        nothing when it is tracked already (a resumed flow)."""
        with self._lock:
            if job['flow_id'] in self._builds:
                return
            key = self.manager._record_task_start(
                'build_instance', instance.uuid, context.request_id)
            self._builds[job['flow_id']] = (instance.uuid, key)

    def _end_build(self, job, failed):
        """End the in-progress task of flow ``job['flow_id']``'s build
        here, if one is tracked.

        :param failed: bool, how the manager's tracker logs it
        """
        with self._lock:
            entry = self._builds.pop(job['flow_id'], None)
        if entry is not None:
            self.manager._record_task_end(entry[1], failed=failed)

    def end_builds_of_deleted_instances(self, context):
        """End the tracked builds whose instance is deleted or being
        deleted: their flow stops without another step here (its delete
        cleans up), so a graceful shutdown must not wait for them.

        :param context: an admin ``RequestContext``
        :returns: int, how many builds were ended
        """
        with self._lock:
            builds = list(self._builds.items())
        ended = 0
        for flow_id, (instance_uuid, _key) in builds:
            instance = objects.Instance(uuid=instance_uuid, task_state=None)
            if _deleted(context, instance) is not None:
                self._end_build({'flow_id': flow_id}, failed=True)
                ended += 1
        return ended

    def _run_step(self, fn, kind, undo, build, arguments):
        """Body of :func:`host_step`, under the instance lock: fencing,
        then the step, inside the span of the build's in-progress task
        (started by ``claim_resources``; ended by ``finish_build``,
        ``abort_claim``, a failed claim or a deleted instance)."""
        step = fn.__name__
        job = arguments['job']
        self._check_token(arguments['instance'], job)
        if kind == FORWARD:
            # before the build's tracking: a refused late claim must neither
            # start a tracked build nor end the one of another attempt
            self._check_not_undone(arguments['instance'], job)
        if step == BUILD_START and self._recorded_result(job) is None:
            # (a recorded claim is done: its build is tracked still, or
            # ended by finish_build; a late copy must not track it again)
            self._track_build(arguments['context'], arguments['instance'],
                              job)
        try:
            result = self._run_fenced_step(fn, step, kind, undo, build,
                                           arguments)
        except INSTANCE_DELETED:
            self._end_build(job, failed=True)
            raise
        except Exception:
            # a failed claim or undo of the claim ends the build here; a
            # failed later step is followed by the flow's abort_claim
            if step == BUILD_START or kind == UNDO and step in BUILD_ENDS:
                self._end_build(job, failed=True)
            raise
        if step in BUILD_ENDS:
            self._end_build(job, failed=kind == UNDO)
        return result

    def _run_fenced_step(self, fn, step, kind, undo, build, arguments):
        """The step once its token passed: undo, or forward with the
        delete checks and the idempotency record (:func:`host_step`)."""
        context = arguments['context']
        instance = arguments['instance']
        job = arguments['job']
        if kind == UNDO:
            self._forget(job)
            undone = self._undone_for(job)
            if undone is not None:
                # a copy of an undo that ran (a call the conductor timed
                # out on and sent again; its first copy still queued):
                # done, not again (stock's abort would clear the host of
                # the instance's next attempt, and count the failure twice)
                LOG.info('%s: done here already (token %d); not again',
                         step, undone, instance=instance)
                return None
            if _deleted(context, instance) is not None:
                LOG.info('%s: instance deleted or being deleted; its delete '
                         'cleans up, nothing to undo here', step,
                         instance=instance)
                self._leave_tombstone(job)
                return None
            result = fn(**arguments)
            self._leave_tombstone(job)
            return result

        gone = _deleted(context, instance)
        if gone is not None:
            LOG.info('%s: instance deleted or being deleted; nothing done',
                     step, instance=instance)
            raise gone
        done = self._recorded_result(job)
        if done is not None:
            return done
        semaphore = (self.manager._build_semaphore if build
                     else contextlib.nullcontext())
        try:
            with semaphore:
                result = fn(**arguments)
        except INSTANCE_DELETED as e:
            gone = e
        except orc_exc.StaleFencingToken:
            raise
        except Exception as e:
            if step in BUILD_STEPS:
                self._notify_create_error(context, instance, job, e)
            raise
        else:
            gone = _deleted(context, instance)
            if gone is None:
                return self._record(job, result)
        LOG.info('%s: instance deleted or being deleted during the step; '
                 '%s', step, 'undoing what it did' if undo else
                 'its delete removes the rest', instance=instance)
        if undo is not None:
            others = {k: v for k, v in arguments.items()
                      if k not in ('self', 'context', 'instance', 'job')}
            try:
                getattr(self, undo)(context, instance, **others)
            except Exception:
                LOG.exception('%s: could not undo the step of a deleted '
                              'instance', step, instance=instance)
        raise gone

    # ------------------------------------------------------------ claim
    @host_step(FORWARD, undo='_drop_claim')
    def claim_resources(self, context, instance, node, limits, request_spec,
                        job):
        """Resource-tracker claim for the build (stock
        ``_do_build_and_run_instance`` and the start of
        ``_build_and_run_instance``).

        :returns: ``{'host', 'node'}``
        :raises ComputeResourcesUnavailable: the node cannot fit it
            (reschedulable); ``BuildAbortException``: request unsupported;
            ``InstanceNotFound`` / ``UnexpectedDeletingTaskStateError``:
            deleted meanwhile (see :func:`host_step`)
        """
        mgr = self.manager
        instance.vm_state = vm_states.BUILDING
        instance.task_state = None
        instance.save(expected_task_state=(task_states.SCHEDULING, None))
        objects.InstanceActionEvent.event_start(
            context, instance.uuid, BUILD_EVENT, want_result=False,
            host=mgr.host)
        bdms = objects.BlockDeviceMappingList.get_by_instance_uuid(
            context, instance.uuid)
        image = request_spec.image if 'image' in request_spec else None
        mgr._notify_about_instance_usage(
            context, instance, 'create.start',
            extra_usage_info={'image_name': image.name if image and
                              'name' in image else None})
        compute_utils.notify_about_instance_create(
            context, instance, mgr.host,
            phase=fields.NotificationPhase.START, bdms=bdms)
        instance.system_metadata.update(
            {'boot_roles': ','.join(context.roles)})
        requested_networks = (request_spec.requested_networks
                              if 'requested_networks' in request_spec
                              else None)
        try:
            # stock checks these before its handlers: no create.error
            mgr._check_device_tagging(requested_networks, bdms)
            mgr._check_trusted_certs(instance)
            provider_mapping = mgr._get_request_group_mapping(request_spec)
            if provider_mapping:
                try:
                    compute_utils.\
                        update_pci_request_with_placement_allocations(
                            context, mgr.reportclient,
                            instance.pci_requests.requests, provider_mapping)
                except (exception.AmbiguousResourceProviderForPCIRequest,
                        exception.UnexpectedResourceProviderNameForPCIRequest
                        ) as e:
                    raise exception.BuildAbortException(
                        reason=str(e), instance_uuid=instance.uuid)
        except exception.BuildAbortException:
            self._failed(job, SILENT)
            raise
        allocs = mgr.reportclient.get_allocations_for_consumer(
            context, instance.uuid)
        mgr.rt.instance_claim(context, instance, node, allocs, limits)
        # the claim's assigned resources (vPMEM namespaces...) are set on
        # the instance after its last save in instance_claim: stock saves
        # them with the same object in _build_and_run_instance; here the
        # object ends with this step, and a delete releases only what the
        # record lists
        instance.save()
        hints = mgr._get_scheduler_hints({}, request_spec)
        try:
            mgr._validate_instance_group_policy(context, instance, hints)
        except exception.GroupAffinityViolation as e:
            # stock _build_and_run_instance: create.error with the
            # violation, then a reschedule by policy, which does not count
            # as a failed build of this node
            LOG.exception('Failed to build and run instance',
                          instance=instance)
            self._notify_create_error(context, instance, job, e,
                                      how=BY_POLICY)
            raise exception.RescheduledByPolicyException(
                instance_uuid=instance.uuid, reason=str(e))
        return {'host': mgr.host, 'node': node}

    def _drop_claim(self, context, instance, node, **kwargs):
        # the claim of an instance deleted during claim_resources: drop its
        # usage as stock's delete does (_complete_deletion ->
        # _update_resource_tracker); the host stays set on the record, which
        # a delete queued behind this step needs (Instance.destroy checks it)
        instance.vm_state = vm_states.DELETED
        self.manager._update_resource_tracker(context, instance)

    @host_step(UNDO)
    def abort_claim(self, context, instance, node, reason, job):
        """Undo :meth:`claim_resources` (stock reschedule clean-up):
        drop the claim, count a failed build on the node (not for a group
        policy violation: stock's ``RESCHEDULED_BY_POLICY``), finish the
        build event with the error, clear host and node, task state back to
        SCHEDULING. ``create.error`` was sent by the step that failed here
        (:meth:`_notify_create_error`); when the failure was not this
        host's (the conductor's), it is sent now with a
        ``RescheduledException`` giving ``reason``."""
        mgr = self.manager
        with self._lock:
            how = self._failures.pop(job['flow_id'], None)
        if instance.host == mgr.host:
            mgr.rt.abort_instance_claim(context, instance, node)
        if how is None:
            self._send_create_error(
                context, instance,
                orc_exc.with_traceback(exception.RescheduledException(
                    instance_uuid=instance.uuid, reason=reason)))
        try:
            objects.InstanceActionEvent.event_finish_with_failure(
                context, instance.uuid, BUILD_EVENT, exc_val=reason,
                exc_tb=reason, want_result=False)
        except (exception.InstanceActionNotFound,
                exception.InstanceActionEventNotFound):
            pass
        if how != BY_POLICY:
            mgr._build_failed(node)
        mgr._nil_out_instance_obj_host_and_node(instance)
        instance.task_state = task_states.SCHEDULING
        try:
            instance.save()
        except exception.InstanceNotFound:
            pass

    # --------------------------------------------------------- networks
    @host_step(FORWARD, undo='_deallocate_networks')
    def allocate_networks(self, context, instance, requested_networks,
                          security_groups, provider_mapping, job):
        """Allocate and bind ports (stock ``_allocate_network`` and
        ``_allocate_network_async``, with its retries).

        Idempotent without its record too: ports an earlier run bound to
        the instance are released first
        (:meth:`_release_ports_of_an_earlier_run`).

        :returns: network info JSON
        :raises BuildAbortException: allocation failed (stock does not
            reschedule network failures); ``InstanceNotFound`` /
            ``UnexpectedDeletingTaskStateError``: deleted meanwhile (its
            ports are deallocated first)
        """
        mgr = self.manager
        instance.vm_state = vm_states.BUILDING
        instance.task_state = task_states.NETWORKING
        instance.save(expected_task_state=[
            None, task_states.BLOCK_DEVICE_MAPPING])
        try:
            self._release_ports_of_an_earlier_run(context, instance,
                                                  requested_networks)
            nw_info = mgr._allocate_network_async(
                context, instance, requested_networks, security_groups,
                provider_mapping, None)
        except (exception.InstanceNotFound,
                exception.UnexpectedDeletingTaskStateError):
            raise
        except exception.NoMoreFixedIps as e:
            # stock _build_resources' words, case by case
            LOG.warning('No more fixed IP to be allocated',
                        instance=instance)
            raise exception.BuildAbortException(
                instance_uuid=instance.uuid,
                reason=_('Failed to allocate the network(s) with error %s, '
                         'not rescheduling.') % e.format_message())
        except Exception:
            LOG.exception('Failed to allocate network(s)', instance=instance)
            raise exception.BuildAbortException(
                instance_uuid=instance.uuid,
                reason=_('Failed to allocate the network(s), not '
                         'rescheduling.'))
        # no save here (stock saves the instance at the next task state,
        # so that no extra instance.update notification goes out)
        return nw_info.json()

    def _release_ports_of_an_earlier_run(self, context, instance,
                                         requested_networks):
        """Probe neutron before allocating: converge, never add a second port.

        This runs only when this host has no record of the step (see
        :func:`host_step`): a first run, or a re-run the record cannot
        answer, i.e. a resumed flow whose compute restarted since the first
        run (records live in memory), or a first run on another host whose
        revert could not deallocate. Ports already bound to the instance
        (``device_id``) are an earlier run's, made for a request the journal
        does not know was served; they are deallocated as stock's failed
        build does (``ComputeManager._deallocate_network``: ports nova
        created are deleted, the user's requested ports unbound), so the
        allocation that follows leaves one port per requested network, and a
        requested port is bound again instead of failing with ``PortInUse``.
        No guest uses them yet: spawn runs only after this step succeeded.

        :param instance: ``Instance``
        :param requested_networks: ``NetworkRequestList`` or None; nothing
            is probed for ``none`` (no network requested)
        """
        if requested_networks and requested_networks.no_allocate:
            return
        ports = self.manager.network_api.list_ports(
            context, device_id=instance.uuid).get('ports', [])
        if not ports:
            return
        LOG.info('Found %d port(s) of an earlier run of this step bound to '
                 'the instance (%s): deallocating them before allocating '
                 'again', len(ports), ', '.join(p['id'] for p in ports),
                 instance=instance)
        self.manager._deallocate_network(context, instance, requested_networks)

    def _deallocate_networks(self, context, instance, requested_networks,
                             **kwargs):
        # ports of an instance deleted during allocate_networks (no guest
        # yet, so no VIF to unplug): stock _deallocate_network deletes the
        # ports nova created and unbinds the others, found by device id
        self.manager._deallocate_network(context, instance,
                                         requested_networks)

    @host_step(UNDO)
    def deallocate_networks(self, context, instance, requested_networks,
                            job):
        """Unplug VIFs and deallocate ports (stock
        ``_cleanup_allocated_networks``)."""
        self.manager._cleanup_allocated_networks(
            context, instance, requested_networks)

    # ---------------------------------------------------- block devices
    @host_step(FORWARD, undo='_delete_attachments')
    def prep_block_devices(self, context, instance, image, job):
        """Attach volumes (stock ``_build_resources`` block-device part
        and ``_prep_block_device``).

        :returns: list of attached volume ids
        :raises BuildAbortException: stock's non-reschedulable BDM errors;
            ``InstanceNotFound`` / ``UnexpectedDeletingTaskStateError``:
            deleted meanwhile (its attachments are deleted first)
        """
        mgr = self.manager
        bdms = objects.BlockDeviceMappingList.get_by_instance_uuid(
            context, instance.uuid)
        try:
            mgr.driver.prepare_for_spawn(instance)
            mgr._default_block_device_names(
                instance, objects.ImageMeta.from_dict(image), bdms)
            instance.vm_state = vm_states.BUILDING
            instance.task_state = task_states.BLOCK_DEVICE_MAPPING
            instance.save()
            mgr._prep_block_device(context, instance, bdms)
        except (exception.InstanceNotFound,
                exception.UnexpectedDeletingTaskStateError,
                exception.ComputeResourcesUnavailable):
            raise
        except (exception.UnexpectedTaskStateError,
                exception.InstanceUnacceptable,
                exception.OverQuota, exception.InvalidBDM) as e:
            raise exception.BuildAbortException(
                instance_uuid=instance.uuid, reason=e.format_message())
        except Exception:
            LOG.exception('Failure prepping block device', instance=instance)
            raise exception.BuildAbortException(
                instance_uuid=instance.uuid,
                reason=_('Failure prepping block device.'))
        return [bdm.volume_id for bdm in bdms if bdm.is_volume]

    @host_step(UNDO)
    def cleanup_block_devices(self, context, instance, job):
        """Delete this host's volume attachments (the volume part of stock
        ``_shutdown_instance``); missing ones are ignored."""
        self._delete_attachments(context, instance)

    def _delete_attachments(self, context, instance, **kwargs):
        mgr = self.manager
        bdms = objects.BlockDeviceMappingList.get_by_instance_uuid(
            context, instance.uuid)
        for bdm in bdms:
            if not (bdm.is_volume and bdm.attachment_id):
                continue
            try:
                mgr.volume_api.attachment_delete(context, bdm.attachment_id)
            except (exception.VolumeAttachmentNotFound,
                    exception.VolumeNotFound):
                pass
            except Exception as e:
                LOG.warning('Could not delete attachment %s of volume %s: %s',
                            bdm.attachment_id, bdm.volume_id, e,
                            instance=instance)

    # ------------------------------------------------------------ spawn
    @host_step(FORWARD, undo='_destroy_guest', build=True)
    def spawn(self, context, instance, node, image, injected_files,
              admin_password, network_info, job):
        """Create the guest (stock ``_build_and_run_instance`` spawn part).

        Idempotent: returns at once when the step is recorded or the
        hypervisor already has the guest. Runs under the build semaphore.

        :raises BuildAbortException: stock's non-reschedulable failures
            (image, flavor, disk checks); ``InstanceNotFound`` /
            ``UnexpectedDeletingTaskStateError``: deleted meanwhile (a guest
            it created is destroyed first); any other error is
            reschedulable
        """
        mgr = self.manager
        if mgr.driver.instance_exists(instance):
            LOG.info('Guest already exists: not spawning again',
                     instance=instance)
            return True
        image_meta = objects.ImageMeta.from_dict(image)
        nw_info = network_model.NetworkInfo.hydrate(network_info or '[]')
        bdms = objects.BlockDeviceMappingList.get_by_instance_uuid(
            context, instance.uuid)
        block_device_info = virt_driver.get_block_device_info(instance, bdms)
        instance.vm_state = vm_states.BUILDING
        instance.task_state = task_states.SPAWNING
        instance.save(expected_task_state=[task_states.BLOCK_DEVICE_MAPPING,
                                           task_states.NETWORKING])
        allocs = mgr.reportclient.get_allocations_for_consumer(
            context, instance.uuid)
        try:
            mgr.driver.spawn(context, instance, image_meta,
                             mgr._decode_files(injected_files),
                             admin_password, allocs, network_info=nw_info,
                             block_device_info=block_device_info,
                             accel_info=[])
        except SPAWN_ABORTS as e:
            # stock: create.error with the driver's error, then the abort
            self._notify_create_error(context, instance, job, e)
            raise exception.BuildAbortException(
                instance_uuid=instance.uuid, reason=e.format_message())
        return True

    @host_step(UNDO)
    def destroy_guest(self, context, instance, network_info, job):
        """Destroy a failed guest (stock ``_shutdown_instance`` driver
        part and ``failed_spawn_cleanup``)."""
        self._destroy_guest(context, instance, network_info)

    def _destroy_guest(self, context, instance, network_info, **kwargs):
        mgr = self.manager
        nw_info = network_model.NetworkInfo.hydrate(network_info or '[]')
        bdms = objects.BlockDeviceMappingList.get_by_instance_uuid(
            context, instance.uuid)
        block_device_info = virt_driver.get_block_device_info(instance, bdms)
        try:
            mgr.driver.destroy(context, instance, nw_info, block_device_info)
        except exception.InstanceNotFound:
            pass
        mgr.driver.failed_spawn_cleanup(instance)

    # ----------------------------------------------------------- finish
    @host_step(FORWARD, undo='_cleanup_deleted_build')
    def finish_build(self, context, instance, node, network_info, job):
        """ACTIVE (stock end of ``_build_and_run_instance`` and of
        ``_locked_do_build_and_run_instance``): power state, launched_at,
        access IPs, scheduler info, ``create.end``, event finished, build
        success counted on the node.

        Idempotent without its record (a compute restarted after an
        earlier run of it, whose result the conductor never journaled): an
        instance found ACTIVE, with no task, on this host, with its guest,
        was finished by that run, and nothing is done again.

        :raises InstanceNotFound, UnexpectedDeletingTaskStateError: deleted
            meanwhile, after stock's clean-up of a build whose instance
            disappeared (VIFs unplugged, ports deallocated); the guest is the
            delete's (``terminate_instance`` waits for this step, then
            destroys it)
        """
        mgr = self.manager
        if self._finished_earlier(context, instance):
            LOG.info('finish_build: the instance is ACTIVE on this host with '
                     'its guest: an earlier run of this step finished it',
                     instance=instance)
            return True
        nw_info = network_model.NetworkInfo.hydrate(network_info or '[]')
        instance.system_metadata.pop('network_allocated', None)
        self._set_access_ips(instance, nw_info)
        mgr._update_instance_after_spawn(instance)
        instance.save(expected_task_state=task_states.SPAWNING)
        mgr._update_scheduler_instance_info(context, instance)
        bdms = objects.BlockDeviceMappingList.get_by_instance_uuid(
            context, instance.uuid)
        mgr._notify_about_instance_usage(
            context, instance, 'create.end',
            extra_usage_info={'message': _('Success')}, network_info=nw_info)
        compute_utils.notify_about_instance_create(
            context, instance, mgr.host,
            phase=fields.NotificationPhase.END, bdms=bdms)
        objects.InstanceActionEvent.event_finish(
            context, instance.uuid, BUILD_EVENT, want_result=False)
        mgr._build_succeeded(node)
        return True

    def _finished_earlier(self, context, instance):
        """Whether the instance, as the database has it now, is ACTIVE with
        no task state on this host and the hypervisor has its guest."""
        current = objects.Instance.get_by_uuid(context, instance.uuid)
        return (current.vm_state == vm_states.ACTIVE and
                current.task_state is None and
                current.host == self.manager.host and
                self.manager.driver.instance_exists(current))

    def _cleanup_deleted_build(self, context, instance, **kwargs):
        # the instance was deleted while the build finished: stock
        # _do_build_and_run_instance ("Instance disappeared during build")
        # unplugs the VIFs and deallocates the ports
        # (_cleanup_allocated_networks, requested networks as stock's
        # delete gives them: ports the user brought are unbound, not
        # deleted); the guest is the delete's, waiting for this lock
        LOG.debug('Instance disappeared during build.', instance=instance)
        self.manager._cleanup_allocated_networks(context, instance, None)

    @staticmethod
    def _set_access_ips(instance, nw_info):
        # stock _build_and_run_instance: [DEFAULT]
        # default_access_ip_network_name picks the access IPs
        name = compute_manager.CONF.default_access_ip_network_name
        if not name or instance.access_ip_v4 or instance.access_ip_v6:
            return
        for vif in nw_info:
            if vif['network']['label'] == name:
                for ip in vif.fixed_ips():
                    if not instance.access_ip_v4 and ip['version'] == 4:
                        instance.access_ip_v4 = ip['address']
                    if not instance.access_ip_v6 and ip['version'] == 6:
                        instance.access_ip_v6 = ip['address']
                break


class OrcComputeManager(compute_manager.ComputeManager):
    """Stock ``ComputeManager`` serving also :class:`OrcComputeEndpoint`.

    Started by ``nova-orc-compute`` (or by any harness through
    ``nova.service.Service.create(manager=...)``).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.orc_endpoint = OrcComputeEndpoint(self)
        self.additional_endpoints.append(self.orc_endpoint)

    def graceful_shutdown(self, timeout):
        """Stock graceful shutdown (``ComputeManager.graceful_shutdown``:
        wait up to ``timeout`` seconds less its clean-up reserve for the
        tasks in progress, then ``cleanup_host``), once the tracked builds
        of instances deleted meanwhile are ended (no step of theirs comes
        back here).

        :param timeout: seconds (``[DEFAULT] manager_shutdown_timeout``)
        """
        ended = self.orc_endpoint.end_builds_of_deleted_instances(
            nova_context.get_admin_context())
        if ended:
            LOG.info('Graceful shutdown: %d build(s) of deleted instances '
                     'no longer waited for', ended)
        super().graceful_shutdown(timeout)
