"""Tasks acting on the coordination backend (ZooKeeper or memory://)."""

from oslo_log import log as logging

from nova.orc import fencing
from nova.orc.tasks import base

LOG = logging.getLogger(__name__)


class LockResources(base.OrcTask):
    """Lock the instance and the resources the request names.

    Changes: creates lock nodes ``locks/<kind>/<id>`` owned by this flow
    (``flow_id``), all or nothing (one ZooKeeper transaction). A resource
    held by another flow fails the task with
    :class:`nova.orc.exception.ResourceLocked` (409) after
    ``[orc] lock_wait_timeout``.

    Fenced (:mod:`nova.orc.fencing`): neither runs for a conductor that
    lost its claim.

    Revert: release this flow's locks (only this flow's: a lock held by
    another flow is never touched). On success the locks stay until the
    whole flow ends; :class:`nova.orc.engine.Orchestrator` releases them.
    """

    def execute(self, flow_id, lock_resources):
        resources = [tuple(r) for r in lock_resources]
        # a conductor woken after its peer ended the flow (and released
        # its locks) must not take them again for the ended flow
        fencing.check()
        self.orc.coordinator.acquire(flow_id, resources)
        return [list(r) for r in resources]

    def revert(self, flow_id, lock_resources, **kwargs):
        fencing.check()
        self.orc.coordinator.release(
            flow_id, [tuple(r) for r in lock_resources])


def boot_lock_resources(instance_uuid, requested_networks=None,
                        block_device_mapping=None):
    """The resources a boot locks: ``[[kind, id], ...]``.

    :param instance_uuid: str
    :param requested_networks: ``NetworkRequestList`` or None (ports with
        a ``port_id`` are locked)
    :param block_device_mapping: list of ``BlockDeviceMapping`` (volumes with
        a ``volume_id`` are locked)
    """
    resources = [['instance', instance_uuid]]
    for request in requested_networks or []:
        if request.obj_attr_is_set('port_id') and request.port_id:
            resources.append(['port', request.port_id])
    for bdm in block_device_mapping or []:
        if bdm.obj_attr_is_set('volume_id') and bdm.volume_id:
            resources.append(['volume', bdm.volume_id])
    return resources
