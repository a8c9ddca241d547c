"""Tasks acting on the network service (neutron ports)."""

from oslo_log import log as logging

from nova import objects
from nova.orc.tasks import base

LOG = logging.getLogger(__name__)


def requested_networks_obj(primitive, context):
    """``NetworkRequestList`` from its journal primitive (None stays)."""
    return base.hydrate(objects.NetworkRequestList, primitive, context)


class AllocateNetworks(base.OrcTask):
    """Create or bind the instance's ports on the claimed host.

    Changes (stock ``_build_networks_for_instance``): task state NETWORKING,
    neutron ports created or updated and bound to the host (requested
    networks, security groups, QoS provider mapping), the network info cache.
    Runs on the host, before :class:`~nova.orc.tasks.volume.
    PrepareBlockDevices` (stock ``_build_resources``' order).

    Returns the network info as JSON (:data:`names.NETWORK_INFO`).

    Revert: unplug VIFs and deallocate: ports nova created are deleted,
    user ports unbound (stock ``_cleanup_allocated_networks``).
    """

    def execute(self, context, flow_id, instance_uuid, cell_uuid, claim,
                requested_networks, spec_with_mapping):
        cctxt, instance = base.get_instance(context, instance_uuid, cell_uuid)
        spec = base.hydrate(objects.RequestSpec, spec_with_mapping,
                            cctxt)
        security_groups = [s.identifier for s in spec.security_groups]
        return self.orc.compute_rpcapi.allocate_networks(
            cctxt, claim['host'], instance=instance,
            requested_networks=requested_networks_obj(requested_networks, cctxt),
            security_groups=security_groups,
            provider_mapping=spec.get_request_group_mapping(),
            job=self.job(flow_id, claim['node']))

    def revert(self, context, flow_id, instance_uuid, cell_uuid, claim,
               requested_networks, **kwargs):
        cctxt, instance = base.get_instance_for_revert(
            context, instance_uuid, cell_uuid, 'ports')
        if instance is None:
            return
        self.orc.compute_rpcapi.deallocate_networks(
            cctxt, claim['host'], instance=instance,
            requested_networks=requested_networks_obj(requested_networks,
                                                      cctxt),
            job=self.job(flow_id, claim['node']))
