"""Tasks acting on the compute host, through the orc compute RPC endpoint.

Each calls one idempotent host-side step of
:class:`nova.orc.compute.manager.OrcComputeEndpoint` on the selected host,
keyed by flow and atom (``job``), which reuses the stock ``ComputeManager``
code for that step. A compute that still runs stock ``nova-compute`` (a
rolling upgrade, conductors first) has no such endpoint: :class:`ClaimHost`
finds out, and :class:`BuildOnStockCompute` builds there the stock way, as
one coarse step.
"""

import time

from oslo_log import log as logging
import oslo_messaging as messaging

from nova import availability_zones
from nova.compute import vm_states
import nova.conf
from nova import exception
from nova import objects
from nova.orc.compute import rpcapi as orc_rpcapi
from nova.orc import exception as orc_exc
from nova.orc import fencing
from nova.orc.tasks import base
from nova.scheduler import utils as scheduler_utils

CONF = nova.conf.CONF
LOG = logging.getLogger(__name__)

#: what :class:`ClaimHost` returns as ``endpoint`` for a stock compute
STOCK = 'stock'
#: seconds between two looks at the instance while a stock compute builds
STOCK_BUILD_POLL_INTERVAL = 1.0


#: errors of the claim's undo that fail :meth:`ClaimHost.revert` instead of
#: being logged: the host did not answer (the job asks again, up to
#: ``[orc] max_resumes`` times, then quarantines the flow: the instance in
#: ERROR, not rescheduled while the abort may still land), or this
#: conductor lost the job (its new owner undoes)
UNDO_NOT_DROPPED = (messaging.MessagingTimeout, orc_exc.ClaimLost,
                    orc_exc.StaleFencingToken)


def on_orc_compute(history):
    """Decider of the boot flow: the host steps run on the selected compute
    (it serves the orc endpoint; also a claim journaled by flow version 1,
    which knew no other kind).

    :param history: ``{atom name: result}`` of the deciding atom
        (``claim_host``)
    """
    return all(claim.get('endpoint') != STOCK for claim in history.values())


def on_stock_compute(history):
    """Decider of the boot flow: the selected compute runs stock
    ``nova-compute`` (see :func:`on_orc_compute`)."""
    return not on_orc_compute(history)


def _reason(result, flow_failures):
    exc = base.flow_failure(result, flow_failures)
    return '%s: %s' % (exc.__class__.__name__, exc)


class ClaimHost(base.OrcTask):
    """Claim the instance's resources in the host's resource tracker.

    Changes (stock ``_do_build_and_run_instance`` up to the claim): the
    instance goes BUILDING with no task state, ``compute__do_build_and_run_
    instance`` event starts, ``create.start`` notifications, a resource
    tracker claim on the node (host, node, NUMA, PCI), group policy check.

    On an alternate host (a reschedule) the instance first takes the
    availability zone of that host from its Selection, as stock
    ``ComputeTaskManager.build_instances`` does (no API database up-call:
    a cell conductor may have none).

    Returns ``{'host', 'node'}`` (:data:`names.CLAIM`), and ``'endpoint':
    'stock'`` when the host runs stock ``nova-compute``: it has no orc
    endpoint (:func:`nova.orc.compute.rpcapi.lacks_orc_endpoint`), nothing
    was claimed, and the flow takes :class:`BuildOnStockCompute` instead of
    the fine-grained host steps.

    Revert: on that host, abort the claim, count a build failure on the
    node, send ``create.error``, finish the event with the error and clear
    the instance's host and node (stock reschedule path). A host that does
    not answer fails the revert (:data:`UNDO_NOT_DROPPED`: the job asks
    again, then quarantines the flow): the flow does not move to another
    host while a late abort could still clear the instance there. Other
    errors of the abort are logged and the flow goes on (the host's
    periodic audit drops an orphan claim). Nothing when the instance was
    deleted meanwhile: its delete drops the claim.
    """

    def execute(self, context, flow_id, instance_uuid, cell_uuid, selection,
                spec_with_mapping, host_list):
        sel = base.hydrate(objects.Selection, selection, context)
        cctxt, instance = base.get_instance(context, instance_uuid, cell_uuid)
        if selection != host_list[0]:
            self._take_alternate_zone(instance, sel)
        claim = {'host': sel.service_host, 'node': sel.nodename}
        try:
            self.orc.compute_rpcapi.claim_resources(
                cctxt, sel.service_host, instance=instance,
                node=sel.nodename,
                limits=sel.limits.to_dict() if sel.limits else {},
                request_spec=base.hydrate(objects.RequestSpec,
                                          spec_with_mapping, cctxt),
                job=self.job(flow_id, sel.nodename))
        except Exception as exc:
            if not orc_rpcapi.lacks_orc_endpoint(exc):
                raise
            LOG.info('Compute %s runs stock nova-compute (no orc endpoint): '
                     'building there the stock way', sel.service_host,
                     instance_uuid=instance_uuid)
            claim['endpoint'] = STOCK
        return claim

    @staticmethod
    def _take_alternate_zone(instance, sel):
        """Stock ``build_instances`` on a reschedule: the instance's
        availability zone is the alternate's, from its Selection (v1.1
        field; without it, stock asks the API database)."""
        if 'availability_zone' in sel:
            zone = sel.availability_zone
        else:
            zone = availability_zones.get_host_availability_zone(
                instance._context, sel.service_host)
        if instance.availability_zone != zone:
            instance.availability_zone = zone
            instance.save()

    def revert(self, context, flow_id, instance_uuid, cell_uuid, selection,
               result=None, flow_failures=None, **kwargs):
        if isinstance(result, dict) and result.get('endpoint') == STOCK:
            return  # nothing was claimed on a stock compute
        sel = base.hydrate(objects.Selection, selection, context)
        try:
            cctxt, instance = base.get_instance_for_revert(
                context, instance_uuid, cell_uuid, 'claim')
            if instance is None:
                return
            self.orc.compute_rpcapi.abort_claim(
                cctxt, sel.service_host, instance=instance,
                node=sel.nodename, reason=_reason(result, flow_failures),
                job=self.job(flow_id, sel.nodename))
        except UNDO_NOT_DROPPED:
            raise
        except Exception:
            LOG.exception('Could not abort the claim on %s',
                          sel.service_host, instance_uuid=instance_uuid)


class Spawn(base.OrcTask):
    """Create the guest with the virt driver (long call with heartbeat).

    Changes (stock ``_build_and_run_instance``): task state SPAWNING,
    ``driver.spawn`` with the image, injected files, admin password (passed
    transiently, never journaled), network info and block device info.
    Idempotent: a guest that already exists on the host for this instance
    is not spawned again.

    Revert: destroy the guest on that host (``driver.destroy`` and
    ``failed_spawn_cleanup``), as stock does before rescheduling.
    """

    def execute(self, context, flow_id, instance_uuid, cell_uuid, claim,
                image, network_info, block_devices, admin_password,
                injected_files):
        cctxt, instance = base.get_instance(context, instance_uuid, cell_uuid)
        self.orc.compute_rpcapi.spawn(
            cctxt, claim['host'], instance=instance, node=claim['node'],
            image=image, injected_files=injected_files,
            admin_password=admin_password, network_info=network_info,
            job=self.job(flow_id, claim['node']))
        return dict(claim)

    def revert(self, context, flow_id, instance_uuid, cell_uuid, claim,
               network_info=None, **kwargs):
        cctxt, instance = base.get_instance_for_revert(
            context, instance_uuid, cell_uuid, 'guest')
        if instance is None:
            return
        self.orc.compute_rpcapi.destroy_guest(
            cctxt, claim['host'], instance=instance,
            network_info=network_info,
            job=self.job(flow_id, claim['node']))


class Finalize(base.OrcTask):
    """Make the server ACTIVE (stock end of ``_build_and_run_instance``).

    Changes: power state, ``vm_state`` ACTIVE, ``task_state`` None,
    ``launched_at``, access IPs, scheduler instance info, build success on
    the node, ``create.end`` notifications, the
    ``compute__do_build_and_run_instance`` event finished.

    Revert: none (last step; if it fails, the earlier steps revert and the
    retry moves on, as a failure at the end of stock
    ``_build_and_run_instance`` reschedules).
    """

    def execute(self, context, flow_id, instance_uuid, cell_uuid, spawned,
                network_info):
        cctxt, instance = base.get_instance(context, instance_uuid, cell_uuid)
        self.orc.compute_rpcapi.finish_build(
            cctxt, spawned['host'], instance=instance, node=spawned['node'],
            network_info=network_info,
            job=self.job(flow_id, spawned['node']))


class BuildOnStockCompute(base.OrcTask):
    """Build on a compute that runs stock ``nova-compute``, the stock way,
    as one coarse step (a rolling upgrade: conductors first, computes one by
    one, as Nova's upgrade order says).

    Changes: casts stock ``ComputeAPI.build_and_run_instance`` with what
    stock ``ComputeTaskManager.schedule_and_build_instances`` sends (filter
    properties with the retry of the attempts made so far, legacy security
    group names, the cell's BDMs with attachments an earlier attempt's
    revert removed made again, the alternates left for the compute's own
    reschedule). The stock compute then claims, builds networks and
    volumes, spawns and ends the build; a failure there reschedules through
    stock ``build_instances``, as in a stock deployment. This step waits
    until the build ended (``vm_state`` no longer BUILDING, or the instance
    deleted), polling every :data:`STOCK_BUILD_POLL_INTERVAL` seconds for at
    most ``[DEFAULT] long_rpc_timeout`` seconds, so that the flow's instance
    lock covers the build; past that it leaves the build to the compute
    (logged) and ends, as a stock conductor that cast and forgot would.

    The cast is a side effect the journal records first: right before it,
    the step's progress details name the host (:data:`CAST_TO`), committed
    with the atom (the write-ahead rule; a conductor that lost the job
    cannot write it: ``FlowFenced``), then the job claim is asked of
    ZooKeeper. From that record on nothing is undone: the step
    never raises (lookups are retried within the bound) and an abort no
    longer stops it. Resumed with the record, it never casts again (a stock
    compute builds a second time on a second cast: its
    ``_do_build_and_run_instance`` accepts task state None) and only waits;
    without it, the first run never cast, and it casts.

    Returns ``{'host', 'node', 'vm_state'}`` (``vm_state`` None: deleted, or
    still building when the wait ended).

    Revert: nothing (it fails only before the cast: nothing was done on the
    host; the allocation's revert is ``claim_allocation``'s).
    """

    #: progress details key naming the ``[host, node]`` the cast went to
    CAST_TO = 'cast_to'

    def pre_execute(self):
        """Bind the run to this thread (fencing) but no abort check here:
        :meth:`execute` checks before the cast only (an abort cannot stop a
        build the compute already owns)."""
        fencing.enter(self.run)

    def execute(self, context, flow_id, instance_uuid, cell_uuid, claim,
                selection, host_list, spec_with_mapping, image,
                requested_networks, admin_password=None,
                injected_files=None):
        host, node = claim['host'], claim['node']
        if self._cast_journaled(host, node):
            LOG.info('Resumed: the build was cast to stock compute %s by an '
                     'earlier run; waiting for it, not casting again', host,
                     instance_uuid=instance_uuid)
        else:
            cctxt, instance = base.get_instance(context, instance_uuid,
                                                cell_uuid)
            self.run.check_not_aborted()
            self._journal_cast(host, node)
            self.run.ensure_owned()
            self._cast_build(cctxt, instance, selection, host_list,
                             spec_with_mapping, image, requested_networks,
                             admin_password, injected_files)
        return {'host': host, 'node': node,
                'vm_state': self._wait_for_build_end(context, cell_uuid,
                                                     instance_uuid)}

    def _cast_journaled(self, host, node):
        """Whether an earlier run of this attempt recorded its cast."""
        progress = self.run.engine.storage.get_task_progress_details(
            self.name) or {}
        return (progress.get('details') or {}).get(self.CAST_TO) == [host,
                                                                    node]

    def _journal_cast(self, host, node):
        """Record the cast in the journal before it is sent: the atom's
        progress details, committed at once (a RUNNING atom's write).

        :raises taskflow.exceptions.StorageFailure: not journaled (e.g.
            :class:`nova.orc.persistence.backend.FlowFenced`: another
            conductor claimed the job)
        """
        self.run.engine.storage.set_task_progress(
            self.name, 0.5, details={self.CAST_TO: [host, node]})

    def _cast_build(self, cctxt, instance, selection, host_list,
                    spec_with_mapping, image, requested_networks,
                    admin_password, injected_files):
        """Stock ``schedule_and_build_instances``' cast, for the Selection
        tried now (``host_list`` index: the attempts before it)."""
        attempt = host_list.index(selection)
        selections = [base.hydrate(objects.Selection, s, cctxt)
                      for s in host_list]
        sel, alternates = selections[attempt], selections[attempt + 1:]
        spec = base.hydrate(objects.RequestSpec, spec_with_mapping, cctxt)
        filter_props = spec.to_legacy_filter_properties_dict()
        scheduler_utils.populate_retry(filter_props, instance.uuid)
        if 'retry' in filter_props:
            filter_props['retry']['num_attempts'] += attempt
            filter_props['retry']['hosts'] = [
                [s.service_host, s.nodename] for s in selections[:attempt]]
        scheduler_utils.populate_filter_properties(filter_props, sel)
        bdms = objects.BlockDeviceMappingList.get_by_instance_uuid(
            cctxt, instance.uuid)
        if attempt:
            # stock build_instances on a reschedule: attachments an earlier
            # attempt's revert deleted are made again (in cinder: no token)
            fencing.check()
            self.manager._validate_existing_attachment_ids(
                cctxt, instance, bdms)
        LOG.info('Casting build_and_run_instance to stock compute %s',
                 sel.service_host, instance=instance)
        fencing.check()
        self.manager.compute_rpcapi.build_and_run_instance(
            cctxt, instance=instance, image=image, request_spec=spec,
            filter_properties=filter_props, admin_password=admin_password,
            injected_files=injected_files,
            requested_networks=base.hydrate(objects.NetworkRequestList,
                                            requested_networks, cctxt),
            security_groups=[s.identifier for s in spec.security_groups],
            block_device_mapping=bdms, host=sel.service_host,
            node=sel.nodename, limits=sel.limits, host_list=alternates,
            accel_uuids=[])

    @staticmethod
    def _wait_for_build_end(context, cell_uuid, instance_uuid):
        """The instance's ``vm_state`` once it is no longer BUILDING, None
        when deleted or still building after ``long_rpc_timeout``. Never
        raises: a DB outage is waited out within the bound."""
        deadline = time.monotonic() + CONF.long_rpc_timeout
        while True:
            try:
                cctxt = base.cell_context(context, cell_uuid)
                instance = objects.Instance.get_by_uuid(cctxt, instance_uuid)
                if instance.vm_state != vm_states.BUILDING:
                    return instance.vm_state
            except exception.InstanceNotFound:
                LOG.info('Instance deleted while a stock compute built it',
                         instance_uuid=instance_uuid)
                return None
            except Exception:
                LOG.warning('Cannot look at the instance a stock compute '
                            'builds; looking again', exc_info=True,
                            instance_uuid=instance_uuid)
            if time.monotonic() > deadline:
                LOG.error('A stock compute still builds the instance after '
                          '%s s (or never got the cast: the conductor that '
                          'sent it died right after journaling it); leaving '
                          'the build to it', CONF.long_rpc_timeout,
                          instance_uuid=instance_uuid)
                return None
            time.sleep(STOCK_BUILD_POLL_INTERVAL)
