"""The orchestrator: runs journaled flows with locks, inside nova-conductor.

One :class:`Orchestrator` per conductor process. It owns the coordination
backend (locks), the journal backend (TaskFlow persistence), the orc compute
RPC client and one executor shared by the parallel engines. For each
operation it creates a logbook and flow detail in the journal, loads the
flow built by the operation's factory into a TaskFlow engine, injects
secrets transiently (never journaled), records instance-action events
through :class:`nova.orc.events.InstanceActionListener`, runs it, and
releases the flow's locks when it has ended either way.
"""

import collections
import contextlib
import threading
import weakref

import futurist
from oslo_concurrency import processutils
from oslo_log import log as logging
from oslo_utils import uuidutils
import taskflow.engines
from taskflow.listeners import logging as tf_logging
from taskflow.persistence import models
from taskflow import states

import nova.conf
from nova.orc import coordination
from nova.orc.compute import rpcapi as orc_rpcapi
from nova.orc import events
from nova.orc.flows import boot
from nova.orc.flows import names
from nova.orc.persistence import backend as journal
from nova import utils

CONF = nova.conf.CONF
LOG = logging.getLogger(__name__)

#: RequestContext fields kept in the journal (to rebuild a context on
#: resume); the auth token and service catalog are never written
CONTEXT_FIELDS = ('user_id', 'project_id', 'domain_id', 'user_domain_id',
                  'project_domain_id', 'is_admin', 'read_only', 'roles',
                  'request_id', 'global_request_id', 'user_name',
                  'project_name', 'remote_address', 'timestamp')


#: flows run by this process, by ``(flow name, end state)`` (for tools and
#: tests proving that operations went through flows)
RUN_COUNTS = collections.Counter()


def journal_context(context):
    """The secret-free part of a ``RequestContext`` as a dict."""
    data = context.to_dict()
    return {k: data[k] for k in CONTEXT_FIELDS if k in data}


class Orchestrator:
    """Runs flows for one conductor.

    :param manager: the conductor's ``ComputeTaskManager`` (stock helpers
        the tasks call)
    :param coordinator: a :class:`nova.orc.coordination.Coordinator`;
        default from ``[orc] coordination_url``
    :param backend: a TaskFlow persistence backend; default
        :class:`nova.orc.persistence.backend.JournalBackend`
    """

    #: every live orchestrator of the process (tests stop them at clean-up)
    instances = weakref.WeakSet()

    def __init__(self, manager, coordinator=None, backend=None):
        self.instances.add(self)
        self.manager = manager
        self.backend = backend or journal.JournalBackend(
            deferred=boot.QUICK_ATOMS)
        self.coordinator = (coordinator or coordination.coordinator_from_conf(
            stale_owner=self.flow_ended))
        self.compute_rpcapi = orc_rpcapi.OrcComputeAPI()
        self._executor = None
        self._executor_lock = threading.Lock()
        self._started = False

    def start(self):
        """Connect to the coordination backend.

        :raises nova.orc.exception.CoordinationUnavailable: unreachable
        """
        if not self._started:
            self._warn_if_locks_are_not_shared()
            self.coordinator.start()
            self._started = True

    def _warn_if_locks_are_not_shared(self):
        """memory:// locks live in one process: with several conductor
        processes they would not exclude each other. Say so at start-up.

        :returns: True when it warned
        """
        if not isinstance(self.coordinator, coordination.MemoryCoordinator):
            return False
        workers = CONF.conductor.workers or processutils.get_worker_count()
        if workers <= 1:
            return False
        LOG.warning('[orc] coordination_url = %s keeps locks inside one '
                    'process, but [conductor] workers = %d: flows in '
                    'different workers will not see each other\'s locks. '
                    'Set [orc] coordination_url = zookeeper://... (or '
                    '[conductor] workers = 1).',
                    CONF.orc.coordination_url, workers)
        return True

    def stop(self):
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
        self.coordinator.stop()
        self._started = False

    def flow_ended(self, flow_id):
        """True when the journal says flow ``flow_id`` ended (SUCCESS or
        REVERTED): its locks are leftovers of a lost release. Unknown
        owners and failed flows keep their locks."""
        try:
            with contextlib.closing(self.backend.get_connection()) as conn:
                state = conn.flow_state(flow_id)
        except Exception:
            LOG.exception('Could not read the state of flow %s', flow_id)
            return False
        return state in (states.SUCCESS, states.REVERTED)

    def fencing_token(self, flow_id):
        """Token sent with host-side steps of ``flow_id``. One conductor
        per job: 0 until job claims hand out increasing tokens."""
        return 0

    @property
    def executor(self):
        """The executor shared by parallel engines (green threads when
        Nova runs monkey-patched with eventlet, threads otherwise)."""
        with self._executor_lock:
            if self._executor is None:
                if utils.concurrency_mode_threading():
                    self._executor = futurist.ThreadPoolExecutor(
                        max_workers=CONF.orc.max_workers)
                else:
                    self._executor = futurist.GreenThreadPoolExecutor(
                        max_workers=CONF.orc.max_workers)
            return self._executor

    def _engine_options(self):
        if CONF.orc.engine == 'parallel':
            return {'engine': 'parallel', 'executor': self.executor}
        return {'engine': 'serial'}

    def run_boot(self, context, instance_uuid, store, transient,
                 display_name=None):
        """Build one instance through the boot flow, journaled and locked.

        :param context: RequestContext of the create request
        :param instance_uuid: str
        :param store: persisted flow inputs, JSON-serialisable (see
            :func:`nova.orc.flows.boot.get_flow`)
        :param transient: inputs never journaled (``context``,
            ``admin_password``, ``injected_files``)
        :param display_name: server name, kept in the flow meta so that
            ``nova-orc flow show NAME`` finds it
        :returns: the flow detail uuid
        :raises: the failure that made the flow revert, after the revert
        """
        self.start()
        flow_id = uuidutils.generate_uuid()
        book = models.LogBook('%s-%s' % (boot.NAME, instance_uuid))
        flow_detail = models.FlowDetail(boot.NAME, flow_id)
        flow_detail.meta = {
            'operation': boot.NAME, 'factory': boot.FACTORY,
            'version': boot.VERSION, 'instance_uuid': instance_uuid,
            'display_name': display_name, 'conductor': CONF.host,
            'request_id': context.request_id,
            'context': journal_context(context)}
        book.add(flow_detail)
        with contextlib.closing(self.backend.get_connection()) as conn:
            conn.save_logbook(book)
        store = dict(store, **{names.FLOW_ID: flow_id})
        engine = taskflow.engines.load(
            boot.get_flow(self), store=store, flow_detail=flow_detail,
            book=book, backend=self.backend, **self._engine_options())
        engine.storage.inject(dict(transient, **{names.CONTEXT: context}),
                              transient=True)
        listener = events.InstanceActionListener(
            engine, context, instance_uuid, CONF.host)
        try:
            with listener, tf_logging.DynamicLoggingListener(engine, log=LOG):
                engine.run()
        finally:
            RUN_COUNTS[(boot.NAME, engine.storage.get_flow_state())] += 1
            self.coordinator.release(
                flow_id, [tuple(r) for r in store[names.LOCK_RESOURCES]])
        return flow_id
