"""Tasks acting on the block storage service (cinder attachments)."""

from oslo_log import log as logging

from nova.compute import task_states
from nova import exception
from nova import objects
from nova.orc.tasks import base

LOG = logging.getLogger(__name__)


class PrepareBlockDevices(base.OrcTask):
    """Attach the instance's volumes and build its driver block devices.

    Changes: attachments that a previous host's revert deleted are created
    again (stock conductor ``_validate_existing_attachment_ids``); on the
    host (stock ``_build_resources``): ``prepare_for_spawn``, default device
    names, task state BLOCK_DEVICE_MAPPING, volumes created from images or
    snapshots, attachments updated with the host connector and completed
    (``_prep_block_device``). Runs after
    :class:`~nova.orc.tasks.network.AllocateNetworks` (stock's order).

    Returns the attached volume ids (:data:`names.BLOCK_DEVICES`). Fails
    with ``UnexpectedDeletingTaskStateError`` (not rescheduled) when the
    instance is being deleted: its delete may already have removed the
    attachments, which must not be created again.

    Revert: on the host, disconnect and delete the attachments made for
    this attempt (stock ``_shutdown_instance`` volume clean-up before a
    reschedule); the volumes themselves stay with the BDMs.
    """

    def execute(self, context, flow_id, instance_uuid, cell_uuid, claim,
                image):
        cctxt, instance = base.get_instance(context, instance_uuid, cell_uuid)
        if instance.task_state == task_states.DELETING:
            raise exception.UnexpectedDeletingTaskStateError(
                instance_uuid=instance_uuid,
                expected={'task_state': 'not deleting'},
                actual={'task_state': instance.task_state})
        bdms = objects.BlockDeviceMappingList.get_by_instance_uuid(
            cctxt, instance_uuid)
        self.manager._validate_existing_attachment_ids(cctxt, instance, bdms)
        return self.orc.compute_rpcapi.prep_block_devices(
            cctxt, claim['host'], instance=instance, image=image,
            job=self.job(flow_id, claim['node']))

    def revert(self, context, flow_id, instance_uuid, cell_uuid, claim,
               **kwargs):
        cctxt, instance = base.get_instance_for_revert(
            context, instance_uuid, cell_uuid, 'volume attachments')
        if instance is None:
            return
        self.orc.compute_rpcapi.cleanup_block_devices(
            cctxt, claim['host'], instance=instance,
            job=self.job(flow_id, claim['node']))
