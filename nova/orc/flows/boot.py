"""The boot flow (``run_instance``): one instance of a create-server request.

DESIGN section 2, as a TaskFlow graph::

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
(``nova.orc.flows.boot:get_flow``) and :data:`VERSION`.
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
VERSION = 1
FACTORY = 'nova.orc.flows.boot:get_flow'

#: atoms quick enough that the journal writes their states with the flow's
#: next write (see ``JournalBackend(deferred=...)``); the host steps that
#: can take minutes (networks, block devices, spawn) are not listed
QUICK_ATOMS = (names.BURY_ON_FAILURE, names.LOCK, names.SCHEDULE,
               names.CREATE_RECORD, names.HOST_RETRY, names.CLAIM_ALLOCATION,
               names.CLAIM_HOST, names.FINALIZE)


def get_flow(orchestrator):
    """Build the boot flow.

    :param orchestrator: :class:`nova.orc.engine.Orchestrator`, or None to
        only draw it
    :returns: a TaskFlow linear flow named ``boot``; it requires the store
        keys :data:`names.CONTEXT`, :data:`names.FLOW_ID`,
        :data:`names.INSTANCE_UUID`, :data:`names.REQUEST_SPEC`,
        :data:`names.IMAGE`, :data:`names.REQUESTED_NETWORKS`,
        :data:`names.BLOCK_DEVICE_MAPPING`, :data:`names.TAGS`,
        :data:`names.NUM_INSTANCES`, :data:`names.PRESELECTED_HOSTS`,
        :data:`names.LOCK_RESOURCES`, :data:`names.ADMIN_PASSWORD`,
        :data:`names.INJECTED_FILES`
    """
    orc = orchestrator
    host_steps = linear_flow.Flow(
        'host', retry=scheduler.HostRetry(
            names.HOST_RETRY, provides=names.SELECTION,
            rebind={'values': names.HOST_LIST}))
    host_steps.add(
        scheduler.ClaimAllocation(orc, name=names.CLAIM_ALLOCATION,
                                  provides=names.SPEC_WITH_MAPPING),
        compute.ClaimHost(orc, name=names.CLAIM_HOST, provides=names.CLAIM),
        unordered_flow.Flow('resources').add(
            network.AllocateNetworks(orc, name=names.NETWORKS,
                                     provides=names.NETWORK_INFO),
            volume.PrepareBlockDevices(orc, name=names.BLOCK_DEVICES_TASK,
                                       provides=names.BLOCK_DEVICES)),
        compute.Spawn(orc, name=names.SPAWN, provides=names.SPAWNED),
    )
    flow = linear_flow.Flow(NAME)
    flow.add(
        instance.BuryInCell0OnFailure(orc, name=names.BURY_ON_FAILURE),
        locks.LockResources(orc, name=names.LOCK),
        scheduler.Schedule(orc, name=names.SCHEDULE,
                           provides=names.HOST_LIST),
        instance.CreateRecord(orc, name=names.CREATE_RECORD,
                              provides=names.CELL_UUID),
        host_steps,
        compute.Finalize(orc, name=names.FINALIZE),
    )
    return flow
