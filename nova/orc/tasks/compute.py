"""Tasks acting on the compute host, through the orc compute RPC endpoint.

Each calls one idempotent host-side step of
:class:`nova.orc.compute.manager.OrcComputeEndpoint` on the selected host,
keyed by flow and atom (``job``), which reuses the stock ``ComputeManager``
code for that step.
"""

from oslo_log import log as logging

from nova import availability_zones
from nova import objects
from nova.orc.tasks import base

LOG = logging.getLogger(__name__)


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

    Returns ``{'host', 'node'}`` (:data:`names.CLAIM`).

    Revert: on that host, abort the claim, count a build failure on the
    node, send ``create.error``, finish the event with the error and clear
    the instance's host and node (stock reschedule path). Best effort when
    the host is unreachable (its periodic audit drops orphan claims).
    Nothing when the instance was deleted meanwhile: its delete drops the
    claim.
    """

    def execute(self, context, flow_id, instance_uuid, cell_uuid, selection,
                spec_with_mapping, host_list):
        sel = base.hydrate(objects.Selection, selection, context)
        cctxt, instance = base.get_instance(context, instance_uuid, cell_uuid)
        if selection != host_list[0]:
            self._take_alternate_zone(instance, sel)
        self.orc.compute_rpcapi.claim_resources(
            cctxt, sel.service_host, instance=instance, node=sel.nodename,
            limits=sel.limits.to_dict() if sel.limits else {},
            request_spec=base.hydrate(objects.RequestSpec,
                                      spec_with_mapping, cctxt),
            job=self.job(flow_id))
        return {'host': sel.service_host, 'node': sel.nodename}

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
        sel = base.hydrate(objects.Selection, selection, context)
        try:
            cctxt, instance = base.get_instance_for_revert(
                context, instance_uuid, cell_uuid, 'claim')
            if instance is None:
                return
            self.orc.compute_rpcapi.abort_claim(
                cctxt, sel.service_host, instance=instance,
                node=sel.nodename, reason=_reason(result, flow_failures),
                job=self.job(flow_id))
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
            job=self.job(flow_id))
        return dict(claim)

    def revert(self, context, flow_id, instance_uuid, cell_uuid, claim,
               network_info=None, **kwargs):
        cctxt, instance = base.get_instance_for_revert(
            context, instance_uuid, cell_uuid, 'guest')
        if instance is None:
            return
        self.orc.compute_rpcapi.destroy_guest(
            cctxt, claim['host'], instance=instance,
            network_info=network_info, job=self.job(flow_id))


class Finalize(base.OrcTask):
    """Make the server ACTIVE (stock end of ``_build_and_run_instance``).

    Changes: power state, ``vm_state`` ACTIVE, ``task_state`` None,
    ``launched_at``, access IPs, scheduler instance info, build success on
    the node, ``create.end`` notifications, the
    ``compute__do_build_and_run_instance`` event finished.

    Revert: none (last step; if it fails, the earlier steps revert).
    """

    def execute(self, context, flow_id, instance_uuid, cell_uuid, spawned,
                network_info):
        cctxt, instance = base.get_instance(context, instance_uuid, cell_uuid)
        self.orc.compute_rpcapi.finish_build(
            cctxt, spawned['host'], instance=instance, node=spawned['node'],
            network_info=network_info, job=self.job(flow_id))
