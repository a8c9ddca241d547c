"""The boot flow (``run_instance``): one instance of a create-server request.

The architecture (doc/source/architecture.rst) section 2, as a TaskFlow
graph::

    bury_on_failure -> lock -> schedule -> create_record
      -> host (retry over the host list, [scheduler] max_attempts):
           claim_allocation -> claim_host -> (networks || block_devices)
           -> spawn
      -> finalize

A failure inside ``host`` reverts that host's steps (spawn, networks,
block devices, claim, allocation) and retries on the next alternate; a
non-reschedulable failure, or the last alternate failing, reverts the whole
flow to stock's end state (ERROR with a fault, or buried in cell0), with no
allocation, port or attachment left and the locks released.

:func:`get_flow` is the factory a resuming conductor calls by name
(``nova.orc.flows.boot.get_flow``), :data:`VERSION` and
:data:`RESUMABLE_VERSIONS`.
"""

from taskflow.patterns import linear_flow
from taskflow.patterns import unordered_flow

from nova.orc.flows import names
from nova.orc.tasks import compute
from nova.orc.tasks import instance
from nova.orc.tasks import locks
from nova.orc.tasks import network
from nova.orc.tasks import scheduler
from nova.orc.tasks import volume

NAME = names.BOOT
#: version of the flow this factory builds; journaled with each flow
VERSION = 1
#: journaled versions this factory can resume (same atom names and store
#: keys); a flow of another version is reverted, not misread
RESUMABLE_VERSIONS = (1,)
#: the RPC handler that posted the flow returns once this atom succeeded
#: (stock's schedule_and_build_instances returns once the instance record
#: exists and the build is cast)
HANDOFF_AFTER = names.CREATE_RECORD
#: transient inputs (never journaled)
SECRETS = (names.ADMIN_PASSWORD, names.INJECTED_FILES)
#: atoms that use :data:`SECRETS`: a flow resumed without them reverts
#: unless these have finished
SECRET_CONSUMERS = (names.SPAWN,)


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
    host_steps = linear_flow.Flow(
        'host', retry=scheduler.HostRetry(
            names.HOST_RETRY, provides=names.SELECTION,
            rebind={'values': names.HOST_LIST}))
    host_steps.add(
        scheduler.ClaimAllocation(name=names.CLAIM_ALLOCATION,
                                  provides=names.SPEC_WITH_MAPPING),
        compute.ClaimHost(name=names.CLAIM_HOST, provides=names.CLAIM),
        unordered_flow.Flow('resources').add(
            network.AllocateNetworks(name=names.NETWORKS,
                                     provides=names.NETWORK_INFO),
            volume.PrepareBlockDevices(name=names.BLOCK_DEVICES_TASK,
                                       provides=names.BLOCK_DEVICES)),
        compute.Spawn(name=names.SPAWN, provides=names.SPAWNED),
    )
    flow = linear_flow.Flow(NAME)
    flow.add(
        instance.BuryInCell0OnFailure(name=names.BURY_ON_FAILURE),
        locks.LockResources(name=names.LOCK),
        scheduler.Schedule(name=names.SCHEDULE,
                           provides=names.HOST_LIST),
        instance.CreateRecord(name=names.CREATE_RECORD,
                              provides=names.CELL_UUID),
        host_steps,
        compute.Finalize(name=names.FINALIZE),
    )
    return flow
