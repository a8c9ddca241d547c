"""``OrcConductorManager``: nova-conductor hosting the orchestrator.

A stock ``ConductorManager`` whose compute-task endpoint (RPC namespace
``compute_task``, same version) is :class:`OrcComputeTaskManager`: the
stock ``ComputeTaskManager`` with ``schedule_and_build_instances`` routed
into the boot flow (:mod:`nova.orc.flows.boot`), run as a job by the
orchestrator (:mod:`nova.orc.engine`). Every other compute-task method, and
every conductor method, is stock.
"""

from oslo_log import log as logging

from nova.conductor import manager as conductor_manager
import nova.conf
from nova.orc import conf as orc_conf
from nova.orc import engine
from nova.orc.flows import boot
from nova.orc.flows import boot_group
from nova.orc.flows import names
from nova.orc.tasks import locks

CONF = nova.conf.CONF
LOG = logging.getLogger(__name__)


def _primitive(obj):
    return obj.obj_to_primitive() if obj is not None else None


class OrcComputeTaskManager(conductor_manager.ComputeTaskManager):
    """Stock compute-task endpoint with the boot routed into flows.

    Raises ``oslo_config.cfg.ConfigFileValueError`` at construction on a
    bad ``[orc]`` value (service start-up fails naming the option).
    """

    def __init__(self):
        super().__init__()
        orc_conf.validate()
        self.orchestrator = engine.Orchestrator(self)

    @staticmethod
    def _needs_stock_path(request_specs, requested_networks):
        """Requests the boot flow does not cover yet go the stock way:
        Cyborg accelerators (flavor device profiles or port device
        profiles)."""
        flavor = request_specs[0].flavor
        if flavor.extra_specs.get('accel:device_profile'):
            return True
        return any(getattr(r, 'device_profile', None)
                   for r in requested_networks or [])

    def schedule_and_build_instances(self, context, build_requests,
                                     request_specs, image,
                                     admin_password, injected_files,
                                     requested_networks, block_device_mapping,
                                     tags=None):
        """Build each instance of a create request through the boot flow.

        Same RPC signature and end states as stock
        ``ComputeTaskManager.schedule_and_build_instances``. A request for
        several instances is scheduled once for all of them (as stock: all
        fit or none is built, and a scheduling failure buries them all in
        cell0) by the journaled flow :mod:`nova.orc.flows.boot_group`, which
        then posts one boot flow an instance with its host list.

        Returns once the instance records exist (the flow passed
        ``create_record``, or ``[orc] handoff_timeout`` seconds), as stock
        returns once it created them and cast the builds: the rest of each
        flow (host steps, spawn) runs on the job executor of the conductor
        (:class:`nova.orc.engine.Orchestrator`), not on the RPC thread.
        """
        if not CONF.orc.enabled or self._needs_stock_path(
                request_specs, requested_networks):
            return super().schedule_and_build_instances(
                context, build_requests, request_specs, image,
                admin_password, injected_files, requested_networks,
                block_device_mapping, tags=tags)
        transient = {names.ADMIN_PASSWORD: admin_password,
                     names.INJECTED_FILES: injected_files}
        common = {
            names.IMAGE: image,
            names.REQUESTED_NETWORKS: _primitive(requested_networks),
            names.BLOCK_DEVICE_MAPPING: _primitive(block_device_mapping),
            names.TAGS: _primitive(tags),
            names.NUM_INSTANCES: len(build_requests),
        }
        if len(request_specs) > 1:
            # scheduled together, as stock (all fit or none is built), in
            # a flow of its own that then posts one boot flow an instance
            store = dict(common, **{
                names.INSTANCE_UUIDS: [s.instance_uuid
                                       for s in request_specs],
                names.REQUEST_SPECS: [s.obj_to_primitive()
                                      for s in request_specs],
                names.DISPLAY_NAMES: [b.instance.display_name
                                      for b in build_requests]})
            try:
                flow_id = self.orchestrator.post(context, boot_group, store,
                                                 transient, None)
            except Exception as exc:
                LOG.exception('Could not start the scheduling flow of a '
                              'multi-create request')
                self._bury_in_cell0(
                    context, request_specs[0], exc,
                    build_requests=build_requests,
                    block_device_mapping=block_device_mapping, tags=tags)
                return
            self.orchestrator.wait_for_handoff(flow_id,
                                               CONF.orc.handoff_timeout)
            return
        build_request, spec = build_requests[0], request_specs[0]
        uuid = spec.instance_uuid
        store = boot.instance_store(
            common, uuid, spec.obj_to_primitive(), None,
            locks.boot_lock_resources(uuid, requested_networks,
                                      block_device_mapping))
        try:
            flow_id = self.orchestrator.post(
                context, boot, store, transient, uuid,
                display_name=build_request.instance.display_name)
        except Exception as exc:
            # journal or coordination unavailable: nothing runs, so the
            # request ends as stock's failures before a cell do
            LOG.exception('Could not start the boot flow',
                          instance_uuid=uuid)
            self._bury_in_cell0(
                context, spec, exc, build_requests=[build_request],
                block_device_mapping=block_device_mapping, tags=tags)
            return
        self.orchestrator.wait_for_handoff(flow_id, CONF.orc.handoff_timeout)


class OrcConductorManager(conductor_manager.ConductorManager):
    """Stock ``ConductorManager`` whose compute-task endpoint is
    :class:`OrcComputeTaskManager`. Started by ``nova-orc-conductor`` (or
    ``nova.service.Service.create(manager=...)``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.additional_endpoints.remove(self.compute_task_mgr)
        self.compute_task_mgr = OrcComputeTaskManager()
        self.additional_endpoints.append(self.compute_task_mgr)

    def init_host(self, service_ref):
        """Connect to the coordination backend before taking requests.

        :raises nova.orc.exception.CoordinationUnavailable: ZooKeeper
            unreachable at start-up
        """
        super().init_host(service_ref)
        self.compute_task_mgr.orchestrator.start()

    def set_shutdown_in_progress(self):
        """Stop claiming jobs (stock: the service stops taking requests)."""
        super().set_shutdown_in_progress()
        self.compute_task_mgr.orchestrator.drain()

    def graceful_shutdown(self, timeout):
        """Give the flows running here up to half of ``timeout`` seconds to
        end, then shut down as stock does
        (``ConductorManager.graceful_shutdown``), then suspend the flows
        still running: their jobs go back to the board for another
        conductor, their locks stay."""
        orchestrator = self.compute_task_mgr.orchestrator
        orchestrator.wait_for_runs(timeout / 2.0)
        super().graceful_shutdown(timeout)
        orchestrator.stop()
