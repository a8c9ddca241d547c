"""The boot flow (``run_instance``): one instance of a create-server request.

The architecture (doc/source/architecture.rst) section 2, as a TaskFlow
graph::

    bury_on_failure -> lock -> schedule -> create_record
      -> host (retry over the host list, [scheduler] max_attempts):
           claim_allocation -> claim_host
             orc compute:   -> networks -> block_devices -> spawn
                            -> finalize
             stock compute: -> build_on_stock_compute

``claim_host`` finds out whether the selected compute serves the orc
endpoint; TaskFlow deciders on its links run one branch and ignore the
other (a rolling upgrade: conductors first, computes one by one; a stock
compute builds the stock way, journaled as one coarse step).

A failure inside ``host`` reverts that host's steps (spawn, networks,
block devices, claim, allocation) and retries on the next alternate; a
non-reschedulable failure, or the last alternate failing, reverts the whole
flow to stock's end state (ERROR with a fault, or buried in cell0), with no
allocation, port or attachment left and the locks released.

:func:`get_flow` is the factory a resuming conductor calls by name
(``nova.orc.flows.boot.get_flow``), :data:`VERSION` and
:data:`RESUMABLE_VERSIONS`.
"""

from taskflow import deciders
from taskflow.patterns import graph_flow
from taskflow.patterns import linear_flow

from nova.orc.flows import names
from nova.orc.tasks import compute
from nova.orc.tasks import instance
from nova.orc.tasks import locks
from nova.orc.tasks import network
from nova.orc.tasks import scheduler
from nova.orc.tasks import volume

NAME = names.BOOT
#: version of the flow this factory builds; journaled with each flow.
#: 1: host steps for orc computes only; 2: a stock compute branch
#: (``build_on_stock_compute``)
VERSION = 2
#: journaled versions this factory can resume (same atom names and store
#: keys); a flow of another version is reverted, not misread. Version 1
#: has every atom of version 2 but ``build_on_stock_compute`` (TaskFlow adds
#: it to the journal as PENDING on resume) and its ``claim_host`` result
#: has no ``endpoint`` (read as an orc compute, all version 1 knew).
RESUMABLE_VERSIONS = (1, 2)
#: the RPC handler that posted the flow returns once this atom succeeded
#: (stock's schedule_and_build_instances returns once the instance record
#: exists and the build is cast)
HANDOFF_AFTER = names.CREATE_RECORD
#: transient inputs (never journaled)
SECRETS = (names.ADMIN_PASSWORD, names.INJECTED_FILES)
#: atoms that use :data:`SECRETS`, one per branch: a flow resumed without
#: them reverts unless one of these has finished
SECRET_CONSUMERS = (names.SPAWN, names.BUILD_ON_STOCK_COMPUTE)
#: atoms that call services as the user (neutron ports, cinder volumes and
#: attachments, the image download; a stock compute's whole build): a flow
#: resumed without the user's token reverts unless every one of them has
#: finished or was ignored
USER_AUTH_CONSUMERS = (names.NETWORKS, names.BLOCK_DEVICES_TASK,
                       names.SPAWN, names.BUILD_ON_STOCK_COMPUTE)


def instance_store(common, instance_uuid, request_spec, host_list,
                   lock_resources):
    """The persisted inputs of one instance's boot flow.

    :param common: dict of the request's inputs (:data:`names.IMAGE`,
        :data:`names.REQUESTED_NETWORKS`, :data:`names.BLOCK_DEVICE_MAPPING`,
        :data:`names.TAGS`, :data:`names.NUM_INSTANCES`), primitives
    :param request_spec: the instance's RequestSpec primitive
    :param host_list: Selection primitives scheduled for it (a multi-create
        request), or None (the flow schedules)
    :param lock_resources: ``[[kind, id], ...]``
    :returns: dict
    """
    return dict(common, **{
        names.INSTANCE_UUID: instance_uuid,
        names.REQUEST_SPEC: request_spec,
        names.PRESELECTED_HOSTS: host_list,
        names.LOCK_RESOURCES: lock_resources,
    })


def get_flow():
    """Build the boot flow (TaskFlow rebuilds it by this function's name,
    ``nova.orc.flows.boot.get_flow``, from a journaled flow detail).

    :returns: a TaskFlow linear flow named ``boot``; it requires the store
        keys :data:`names.CONTEXT`, :data:`names.FLOW_ID`,
        :data:`names.INSTANCE_UUID`, :data:`names.REQUEST_SPEC`,
        :data:`names.IMAGE`, :data:`names.REQUESTED_NETWORKS`,
        :data:`names.BLOCK_DEVICE_MAPPING`, :data:`names.TAGS`,
        :data:`names.NUM_INSTANCES`, :data:`names.PRESELECTED_HOSTS`,
        :data:`names.LOCK_RESOURCES`, :data:`names.ADMIN_PASSWORD`,
        :data:`names.INJECTED_FILES`
    """
    host_steps = graph_flow.Flow(
        'host', retry=scheduler.HostRetry(
            names.HOST_RETRY, provides=names.SELECTION,
            rebind={'values': names.HOST_LIST}))
    claim_allocation = scheduler.ClaimAllocation(
        name=names.CLAIM_ALLOCATION, provides=names.SPEC_WITH_MAPPING)
    claim_host = compute.ClaimHost(name=names.CLAIM_HOST,
                                   provides=names.CLAIM)
    networks = network.AllocateNetworks(name=names.NETWORKS,
                                        provides=names.NETWORK_INFO)
    block_devices = volume.PrepareBlockDevices(
        name=names.BLOCK_DEVICES_TASK, provides=names.BLOCK_DEVICES)
    spawn = compute.Spawn(name=names.SPAWN, provides=names.SPAWNED)
    finalize = compute.Finalize(name=names.FINALIZE)
    stock_build = compute.BuildOnStockCompute(
        name=names.BUILD_ON_STOCK_COMPUTE, provides=names.STOCK_BUILD)
    host_steps.add(claim_allocation, claim_host, networks, block_devices,
                   spawn, finalize, stock_build)
    host_steps.link(claim_allocation, claim_host)
    # the orc branch: networks, then block devices, then spawn, then
    # finalize (spawn and finalize ordered by what they provide); FLOW:
    # ignoring a branch ignores its successors in this subflow. Networks
    # before block devices: stock's _build_resources order, which clients
    # see in instance.update notifications (task states NETWORKING, then
    # BLOCK_DEVICE_MAPPING); both steps take stock's instance lock on the
    # compute, so sent together they ran one after the other anyway, in
    # either order
    for step in (networks, block_devices):
        host_steps.link(claim_host, step, decider=compute.on_orc_compute,
                        decider_depth=deciders.Depth.FLOW)
    host_steps.link(networks, block_devices)
    host_steps.link(claim_host, stock_build,
                    decider=compute.on_stock_compute,
                    decider_depth=deciders.Depth.FLOW)
    flow = linear_flow.Flow(NAME)
    flow.add(
        instance.BuryInCell0OnFailure(name=names.BURY_ON_FAILURE),
        locks.LockResources(name=names.LOCK),
        scheduler.Schedule(name=names.SCHEDULE,
                           provides=names.HOST_LIST),
        instance.CreateRecord(name=names.CREATE_RECORD,
                              provides=names.CELL_UUID),
        host_steps,
    )
    return flow
