"""Tasks acting on the job board: flows that start other flows."""

import contextlib

from oslo_log import log as logging
from taskflow import states

import nova.conf

from nova import exception
from nova import objects
from nova.orc import exception as orc_exc
from nova.orc.flows import boot
from nova.orc.flows import names
from nova.orc.tasks import base
from nova.orc.tasks import locks
from nova.orc.tasks import network

CONF = nova.conf.CONF
LOG = logging.getLogger(__name__)


class PostBootFlows(base.OrcTask):
    """Journal and post one boot flow per instance of a multi-create request,
    with the host and alternates the group's scheduling chose for it
    (:mod:`nova.orc.flows.boot`, ``preselected_hosts``).

    Changes: a boot flow and its job for each instance that has none yet
    (a resumed job posts only the missing ones: the journal is probed by
    instance). A journaled boot flow that has not ended and has no job on
    the board gets its job posted again (the conductor that posted it may
    have died between journaling it and posting its job); a flow's second
    post posts nothing anyway (:meth:`nova.orc.jobboard.JobBoard.post`),
    but a job posted by a conductor of an earlier release has no marker
    to fail on, so the board is read first. An instance whose flow cannot
    be journaled (the database down) gets stock's failure end state on its
    own: its allocation deleted and its build request buried in cell0; one
    journaled whose job cannot be posted now (ZooKeeper down) is adopted
    by a conductor later; the others go on, so this task never fails.

    Revert: none (it does not fail; once journaled, each boot flow owns its
    instance).
    """

    def execute(self, context, instance_uuids, request_specs, host_lists,
                display_names, image, requested_networks,
                block_device_mapping, tags, num_instances, admin_password,
                injected_files):
        common = {names.IMAGE: image,
                  names.REQUESTED_NETWORKS: requested_networks,
                  names.BLOCK_DEVICE_MAPPING: block_device_mapping,
                  names.TAGS: tags, names.NUM_INSTANCES: num_instances}
        transient = {names.ADMIN_PASSWORD: admin_password,
                     names.INJECTED_FILES: injected_files}
        networks = network.requested_networks_obj(requested_networks, context)
        bdms = base.hydrate(objects.BlockDeviceMappingList,
                            block_device_mapping, context)
        with contextlib.closing(self.orc.backend.get_connection()) as conn:
            journaled = {}
            for uuid in instance_uuids:
                flows = conn.list_flows(instance_uuid=uuid, limit=1)
                if flows:
                    journaled[uuid] = flows[0]
            unended = self._unended(conn, journaled)
        flow_ids = []
        for uuid, spec, hosts, name in zip(instance_uuids, request_specs,
                                           host_lists, display_names):
            if uuid in unended:
                self._post_job(*unended[uuid])
                continue
            if uuid in journaled:
                LOG.info('Resumed flow: boot flow already posted',
                         instance_uuid=uuid)
                continue
            store = boot.instance_store(
                common, uuid, spec, hosts,
                locks.boot_lock_resources(uuid, networks, bdms))
            try:
                flow_ids.append(self.orc.post(context, boot, store,
                                              transient, uuid,
                                              display_name=name))
            except Exception as exc:
                LOG.exception('Could not start the boot flow',
                              instance_uuid=uuid)
                self._fail(context, uuid, spec, exc, block_device_mapping,
                           tags)
        # as stock's handler: done once the instance records exist
        for flow_id in flow_ids:
            self.orc.wait_for_handoff(flow_id, CONF.orc.handoff_timeout)

    def _unended(self, conn, journaled):
        """The journaled boot flows that have not ended and have no job on
        the board, ``{instance uuid: (FlowDetail, LogBook)}``; a flow
        quarantined (job removed on purpose) is not one of them. Asks the
        board only when there is such a flow (a resume)."""
        unended = {}
        pending = {uuid: flow for uuid, flow in journaled.items()
                   if flow['state'] not in (states.SUCCESS, states.REVERTED)
                   and not flow['meta'].get('quarantined')}
        on_board = ({job['flow_id'] for job in self.orc.board.list_jobs()}
                    if pending else set())
        for uuid, flow in pending.items():
            if flow['uuid'] in on_board:
                continue
            unended[uuid] = (
                conn.get_flow_details(flow['uuid'], lazy=True),
                conn.get_logbook(flow['logbook_uuid'], lazy=True))
        return unended

    def _post_job(self, flow_detail, book):
        """Post the job of a journaled boot flow unless it has one (as
        :meth:`nova.orc.engine.Orchestrator.post` would have); one that
        cannot be posted now is left to orphan adoption."""
        instance_uuid = flow_detail.meta['instance_uuid']
        try:
            posted = self.orc.post_job(flow_detail, book)
        except orc_exc.CoordinationUnavailable as e:
            LOG.error('Boot flow %s: its job could not be posted now (%s); '
                      'a conductor posts it once ZooKeeper answers',
                      flow_detail.uuid, e, instance_uuid=instance_uuid)
            return
        if posted:
            LOG.info('Resumed flow: boot flow %s was journaled but its job '
                     'was never posted; posted it', flow_detail.uuid,
                     instance_uuid=instance_uuid)

    def _fail(self, context, instance_uuid, spec, exc, block_device_mapping,
              tags):
        """Stock's end state for one instance whose flow could not start."""
        self.delete_allocations(context, instance_uuid)
        try:
            build_request = objects.BuildRequest.get_by_instance_uuid(
                context, instance_uuid)
        except exception.BuildRequestNotFound:
            return
        self.manager._bury_in_cell0(
            context, base.hydrate(objects.RequestSpec, spec, context), exc,
            build_requests=[build_request],
            block_device_mapping=base.hydrate(
                objects.BlockDeviceMappingList, block_device_mapping,
                context) or objects.BlockDeviceMappingList(objects=[]),
            tags=base.hydrate(objects.TagList, tags, context))
