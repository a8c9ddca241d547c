"""What every nova-orc task shares: the orchestrator handle and Nova lookups.

Tasks are TaskFlow :class:`taskflow.task.Task` subclasses. Their arguments
come from the flow's store and earlier results by name (see
:mod:`nova.orc.flows.names`); what they return is journaled, so it is always
a JSON-serialisable primitive. Every task docstring states what it changes
and its revert strategy.
"""

import contextlib
import copy
import threading

from oslo_log import log as logging
from oslo_utils import importutils
from taskflow import task
from taskflow.types import failure as tf_failure

from nova import context as nova_context
from nova import exception
from nova import objects
from nova.orc import exception as orc_exc
from nova.orc import fencing

LOG = logging.getLogger(__name__)

_cell_cache = {}
_cell_cache_lock = threading.Lock()


def cell_mapping(context, cell_uuid):
    """The ``CellMapping`` with ``cell_uuid`` (cached per process)."""
    with _cell_cache_lock:
        mapping = _cell_cache.get(cell_uuid)
    if mapping is None:
        mapping = objects.CellMapping.get_by_uuid(context, cell_uuid)
        with _cell_cache_lock:
            _cell_cache[cell_uuid] = mapping
    return mapping


def cell_context(context, cell_uuid):
    """A copy of ``context`` targeted at the cell database ``cell_uuid``."""
    cctxt = copy.copy(context)
    nova_context.set_target_cell(cctxt, cell_mapping(context, cell_uuid))
    return cctxt


#: what the compute side needs loaded on the instance it builds
INSTANCE_ATTRS = ['system_metadata', 'flavor', 'info_cache',
                  'security_groups', 'metadata', 'pci_requests',
                  'numa_topology', 'tags', 'device_metadata', 'trusted_certs',
                  'resources', 'ec2_ids', 'keypairs']


def get_instance(context, instance_uuid, cell_uuid):
    """Load the instance from its cell, with :data:`INSTANCE_ATTRS`.

    :returns: ``(cell_context, Instance)``
    :raises nova.exception.InstanceNotFound: deleted meanwhile
    """
    cctxt = cell_context(context, cell_uuid)
    instance = objects.Instance.get_by_uuid(cctxt, instance_uuid,
                                            expected_attrs=INSTANCE_ATTRS)
    return cctxt, instance


def get_instance_for_revert(context, instance_uuid, cell_uuid, what):
    """:func:`get_instance` for a revert: ``(None, None)`` when the instance
    was deleted meanwhile (its delete cleans ``what`` up); any other error
    propagates, so the revert fails visibly instead of leaking.

    :param what: str naming the resources, for the log
    """
    try:
        return get_instance(context, instance_uuid, cell_uuid)
    except exception.InstanceNotFound:
        LOG.info('Instance deleted during its build; its delete cleans up '
                 'the %s', what, instance_uuid=instance_uuid)
        return None, None


def hydrate(cls, primitive, context):
    """A Nova object from its journal primitive, bound to ``context``.

    :param cls: the ``NovaObject`` class (e.g. ``objects.RequestSpec``)
    :param primitive: ``obj_to_primitive()`` output, or None
    :returns: the object, or None for None
    """
    if primitive is None:
        return None
    return cls.obj_from_primitive(primitive, context=context)


def flow_failure(result, flow_failures):
    """The exception that makes the flow revert, for faults and messages.

    :param result: this task's result (a ``Failure`` when this task failed)
    :param flow_failures: ``{atom name: Failure}`` from TaskFlow
    :returns: an exception instance with a traceback (never None)
    """
    if isinstance(result, tf_failure.Failure):
        failures = [result]
    else:
        failures = list((flow_failures or {}).values())
    for failure in failures:
        if failure.exception is not None:
            return orc_exc.with_traceback(failure.exception)
    if failures:
        return orc_exc.with_traceback(_rebuilt(failures[0]))
    return orc_exc.with_traceback(Exception('flow reverted'))


def _rebuilt(failure):
    """The exception of a journaled failure (a resumed flow's: TaskFlow
    keeps its type names and text, not the object): a Nova exception is
    rebuilt as its own class with its message, so that its fault reads as
    stock's (``NoValidHost``'s text, its code); anything else as an
    ``Exception`` with the text."""
    for name in failure:  # its type names, most derived first
        try:
            cls = importutils.import_class(name)
        except (ImportError, ValueError, AttributeError):
            continue
        if isinstance(cls, type) and issubclass(cls,
                                                exception.NovaException):
            return cls(message=failure.exception_str)
        break
    return Exception(failure.exception_str)


class OrcTask(task.Task):
    """A TaskFlow task of a nova-orc flow.

    Tasks are built by flow factories without any live object (so that a
    conductor can rebuild a journaled flow by its factory name, TaskFlow's
    ``flow_from_detail``); before an engine runs them the orchestrator binds
    the run (:meth:`bind`), which gives the task the conductor's
    orchestrator (``.orc``: ``.manager``, ``.coordinator``,
    ``.compute_rpcapi``) and the job's claim (fencing token, abort reason).
    """

    def __init__(self, name=None, provides=None, requires=None,
                 rebind=None, inject=None):
        super().__init__(name=name, provides=provides, requires=requires,
                         rebind=rebind, inject=inject)
        self.run = None

    def bind(self, run):
        """Attach the job run (:class:`nova.orc.engine.JobRun`)."""
        self.run = run

    @property
    def orc(self):
        """The orchestrator of the conductor running this task."""
        return self.run.orchestrator

    @property
    def manager(self):
        """The conductor's ``ComputeTaskManager`` (stock helpers)."""
        return self.orc.manager

    def pre_execute(self):
        """Bind the run to this thread (every side effect of the task is
        fenced by the run's lease from now on, :mod:`nova.orc.fencing`),
        then refuse to start a task of an aborted job
        (:class:`nova.orc.exception.JobAborted`): the flow reverts."""
        fencing.enter(self.run)
        self.run.check_not_aborted()

    def post_execute(self):
        """Unbind the run from this thread (TaskFlow calls it whatever
        :meth:`execute` did)."""
        fencing.leave()

    def pre_revert(self):
        """Bind the run to this thread: the undo is fenced as the execute
        was."""
        fencing.enter(self.run)

    def post_revert(self):
        """Unbind the run from this thread."""
        fencing.leave()

    def delete_allocations(self, context, consumer_uuid):
        """Delete the consumer's placement allocations (``force``: whatever
        their generation; stock ``delete_allocation_for_instance``), only
        while the job's claim is still this conductor's, asked of ZooKeeper
        right before: placement knows no fencing token, and a conductor
        that lost the job (paused past its session) must not delete the
        allocation of the conductor that took the job over.

        :param consumer_uuid: str, the instance uuid
        :raises nova.orc.exception.ClaimLost: the claim is lost
        :raises nova.orc.exception.CoordinationUnavailable: it cannot be
            told now
        """
        self.run.ensure_owned()
        fencing.check()
        self.manager.report_client.delete_allocation_for_instance(
            context, consumer_uuid, force=True)

    def with_boot_flows(self, instance_uuids):
        """The instances of a multi-create request that have a boot flow of
        their own in the journal (posted by ``post_boots``): from then on
        their allocation, records and end state are that flow's business,
        not the group flow's, even when the group flow reverts.

        :param instance_uuids: list of str
        :returns: set of str
        """
        # here, not at the top: the flows package imports the tasks
        from nova.orc.flows import names
        with contextlib.closing(self.orc.backend.get_connection()) as conn:
            return {uuid for uuid in instance_uuids
                    if any(flow['name'] == names.BOOT for flow in
                           conn.list_flows(instance_uuid=uuid))}

    def job(self, flow_id, node):
        """The idempotency and fencing key sent to host-side steps:
        ``{'flow_id', 'atom', 'token', 'node'}``; ``token`` is the job
        claim's fencing token (int); ``node``, the compute node of the
        attempt (str), tells the attempts on one host apart (the compute's
        undo tombstones)."""
        return {'flow_id': flow_id, 'atom': self.name,
                'token': self.run.token, 'node': node}
