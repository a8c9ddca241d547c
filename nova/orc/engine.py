"""The orchestrator: journaled flows run as jobs, inside nova-conductor.

One :class:`Orchestrator` per conductor process, generic over flows (a flow
module of :mod:`nova.orc.flows` gives ``NAME``, ``VERSION``,
``RESUMABLE_VERSIONS`` and the factory ``get_flow()``). It owns the
coordination backend (locks, session), the job board, the journal backend
(TaskFlow persistence), the orc compute RPC client and two executors: one
runs jobs (``[orc] max_workers`` at once), one the parallel steps inside
them.

How an operation runs (doc/source/architecture.rst, section 4):

1. :meth:`Orchestrator.post` (called from an RPC handler, which returns at
   once as stock's conductor does after its cast) writes the flow detail to
   the journal: the factory in TaskFlow's ``meta['factory']`` form, the
   flow's inputs (``meta['store']``) and the secret-free request context.
   Secrets stay in this process's memory. Then it posts a job naming the
   flow on the board (:meth:`Orchestrator.post_job`). A conductor that died
   in between left a journaled flow with no job: every
   :data:`ORPHAN_SCAN_INTERVAL` seconds one live conductor posts the job of
   such a flow (:meth:`Orchestrator.adopt_orphans`).
2. The conductor loop of every orchestrator watches the board and claims
   jobs: its own at once, others' when their poster is gone (a job left
   unclaimed by a dead conductor) or, with ``[orc] secret_key``, once it
   has seen them unclaimed for ``[orc] peer_claim_delay`` seconds (their
   poster is busy: every worker taken). The claim's fencing token goes with
   every host-side call of the run.
3. :meth:`Orchestrator._run_claimed` rebuilds the flow from the journal
   (``taskflow.engines.flow_from_detail``), binds the run to its tasks, and
   runs it: a resumed flow runs only the atoms that had not finished.
4. A flow that ended (SUCCESS or REVERTED) releases its locks and its job is
   consumed. A flow whose claim was lost (the session expired: another
   conductor takes over) is suspended and left alone. A flow that failed
   to revert (FAILURE) keeps its locks and goes back to the board: it is
   reverted again after :data:`FAILED_JOB_BACKOFF` seconds, and quarantined
   (job removed, locks kept, an error logged) past ``[orc] max_resumes``.
   A revert that failed only because a service was unreachable (the
   database, an endpoint: :data:`OUTAGE_ERRORS`) is tried again the same
   way but not counted: an outage is waited out.
5. A job resumed more than ``[orc] max_resumes`` times, or journaled by a
   flow version this conductor cannot resume, is aborted: its next task
   fails with :class:`nova.orc.exception.JobAborted` and the flow reverts to
   stock's end state with a fault that says why.
"""

import contextlib
import datetime
import threading
import time

import futurist
from keystoneauth1 import exceptions as ks_exc
from oslo_concurrency import processutils
from oslo_db import exception as db_exc
from oslo_log import log as logging
import oslo_messaging as messaging
from oslo_utils import timeutils
from oslo_utils import uuidutils
import taskflow.engines
from taskflow.listeners import logging as tf_logging
from taskflow.persistence import models
from taskflow import states
from taskflow.types import failure as tf_failure

from nova.compute import vm_states
from nova import context as nova_context
import nova.conf
from nova import exception
from nova import objects
from nova.orc import coordination
from nova.orc.compute import rpcapi as orc_rpcapi
from nova.orc import events
from nova.orc import exception as orc_exc
from nova.orc import fencing
from nova.orc import flows
from nova.orc.flows import names
from nova.orc import jobboard
from nova.orc.persistence import backend as journal
from nova.orc.persistence import secrets
from nova.orc.tasks import base as task_base
from nova.orc.tasks import instance as instance_tasks
from nova import utils

CONF = nova.conf.CONF
LOG = logging.getLogger(__name__)

#: RequestContext fields kept in the journal (to rebuild a context on
#: resume); the auth token and service catalog are never written
CONTEXT_FIELDS = ('user_id', 'project_id', 'domain_id', 'user_domain_id',
                  'project_domain_id', 'is_admin', 'read_only', 'roles',
                  'request_id', 'global_request_id', 'user_name',
                  'project_name', 'remote_address', 'timestamp')

#: seconds between two scans of the board when no watch fired (a job whose
#: poster died is found by the next scan)
JOB_SCAN_INTERVAL = 1.0

#: seconds before a job that ended in FAILURE (its revert failed) is tried
#: again by this conductor
FAILED_JOB_BACKOFF = 30.0
#: errors that say a service a revert needs could not be reached (the
#: database, an HTTP endpoint, Cinder, the message broker, ZooKeeper for
#: the fencing check), not that the revert is wrong: a revert failing only
#: with these is an outage, waited out (tried again every
#: :data:`FAILED_JOB_BACKOFF` seconds) and not counted against ``[orc]
#: max_resumes``. Not a compute that never answers an undo
#: (``MessagingTimeout`` after ``[orc] host_call_attempts`` calls): that
#: compute may be gone for good, so the undo is asked again up to
#: ``max_resumes`` times and the job then quarantined (the instance in
#: ERROR), never retried forever with the boot and its locks held
OUTAGE_ERRORS = (db_exc.DBConnectionError, ks_exc.ConnectFailure,
                 ks_exc.ConnectTimeout,
                 exception.CinderConnectionFailed,
                 messaging.MessageDeliveryFailure,
                 orc_exc.CoordinationUnavailable)
#: seconds between two looks, while an RPC handler waits for its flow's
#: handoff, at whether the flow runs here at all
HANDOFF_POLL_INTERVAL = 0.2
#: seconds between two attempts to tell, after a run, whether its claim is
#: still ours while ZooKeeper is unreachable
CLAIM_RECHECK_INTERVAL = 5.0
#: seconds between two scans of the journal for flows without a job (their
#: poster died between journaling them and posting the job)
ORPHAN_SCAN_INTERVAL = 60.0
#: seconds a journaled flow must be old before it can be taken for an
#: orphan, on top of its poster being gone
ORPHAN_MIN_AGE = 30.0

#: flow states after which a job is consumed and its locks released
ENDED = (states.SUCCESS, states.REVERTED)


def journal_context(context):
    """The secret-free part of a ``RequestContext`` as a dict."""
    data = context.to_dict()
    return {k: data[k] for k in CONTEXT_FIELDS if k in data}


def user_auth(context):
    """What a conductor resuming a flow needs to act as the user: the
    user's token and service catalog (``{'auth_token', 'service_catalog'}``),
    or None when the request came without a token. Sealed with the
    secrets, never journaled in clear."""
    if not context.auth_token:
        return None
    return {'auth_token': context.auth_token,
            'service_catalog': context.service_catalog}


def resumed_context(fields, auth=None):
    """A ``RequestContext`` for a flow resumed in another process.

    With ``auth`` (:func:`user_auth`, unsealed from the journal) it is the
    user's, token and roles as the request had them: Nova's clients send
    that token to neutron, cinder and glance, with Nova's own service token
    beside it when ``[service_user] send_service_user_token`` is set (as
    Nova does for long operations), which lets them accept a user token
    past its expiry. Without it, the context acts for the user's project
    with the service's own credentials, as Nova's periodic work does
    (``is_admin`` without a token makes Nova's neutron and cinder clients
    use the ``[neutron]`` / ``[cinder]`` service credentials).

    :param fields: the journaled :func:`journal_context` dict
    :param auth: dict from :func:`user_auth`, or None
    """
    context = nova_context.RequestContext.from_dict(dict(fields))
    if auth and auth.get('auth_token'):
        context.auth_token = auth['auth_token']
        context.service_catalog = auth.get('service_catalog') or []
    else:
        context.is_admin = True
    return context


def bind(flow, run):
    """Give every nova-orc task of ``flow`` (a TaskFlow flow, subflows
    included) the :class:`JobRun` it runs in."""
    for node, _data in flow.iter_nodes():
        if hasattr(node, 'iter_nodes'):
            bind(node, run)
        elif isinstance(node, task_base.OrcTask):
            node.bind(run)


def provided(flow, flow_detail, key):
    """The journaled value of ``key`` provided by an atom of ``flow`` that
    already succeeded in ``flow_detail``, or None (a resumed flow's
    instance cell, for instance)."""
    finished = {ad.name: ad.results for ad in flow_detail
                if ad.state == states.SUCCESS}
    for node, _data in flow.iter_nodes():
        if hasattr(node, 'iter_nodes'):
            value = provided(node, flow_detail, key)
            if value is not None:
                return value
        elif key in node.provides and node.name in finished:
            return finished[node.name]
    return None


class FlowLoggingListener(tf_logging.DynamicLoggingListener):
    """TaskFlow's logging listener, except for two ends that are no error
    of the task: a server deleted during its build (the task that found it
    out is logged at info without a traceback, as stock's build logs it:
    ``InstanceNotFound``, ``UnexpectedDeletingTaskStateError``,
    ``BuildRequestGone``), and a side effect refused because this
    conductor's claim is lost (``ClaimLost``: a warning, the flow's new
    owner goes on)."""

    def _task_receiver(self, state, details):
        result = details.get('result')
        if (isinstance(result, tf_failure.Failure) and
                result.check(*instance_tasks.DELETED_DURING_BUILD)):
            LOG.info("Task '%s' stopped: the server was deleted during its "
                     "build (%s)", details['task_name'],
                     result.exception_str)
            return
        if (isinstance(result, tf_failure.Failure) and
                result.check(orc_exc.ClaimLost)):
            LOG.warning("Task '%s' stopped before its next side effect: "
                        "%s", details['task_name'], result.exception_str)
            return
        super()._task_receiver(state, details)


class JobRun:
    """One run of a claimed job in this conductor: what its tasks need.

    :ivar orchestrator: the :class:`Orchestrator`
    :ivar claim: the :class:`nova.orc.jobboard.Claim`
    :ivar token: int fencing token sent with host-side calls
    :ivar abort_reason: str or None; set, the next task to start fails with
        :class:`nova.orc.exception.JobAborted` and the flow reverts
    :ivar engine: the TaskFlow engine, once built
    """

    def __init__(self, orchestrator, claim, abort_reason=None):
        self.orchestrator = orchestrator
        self.claim = claim
        self.token = claim.token
        self.abort_reason = abort_reason
        self.engine = None
        self.lost = False
        #: True when an earlier run of this job was claimed (a conductor
        #: died or gave it back): tasks probe for what it already did
        self.resumed = False

    def check_not_aborted(self):
        """:raises nova.orc.exception.JobAborted: when the job is aborted"""
        if self.abort_reason:
            raise orc_exc.JobAborted(flow_id=self.claim.flow_id,
                                     reason=self.abort_reason)

    def fence(self):
        """Right before a side effect of this run (every one passes
        through :func:`nova.orc.fencing.check`, the journal's writes
        through the lease given to ``claim_flow``): return only while the
        claim is surely still ours, by this conductor's coordination lease
        (:meth:`nova.orc.coordination.Coordinator.hold_lease`; an in-memory
        check while the lease is fresh). A run whose session ended is
        marked lost and suspended: it never acts again.

        :raises nova.orc.exception.ClaimLost: the claim's session ended
        :raises nova.orc.exception.CoordinationUnavailable: it cannot be
            told within ``[orc] coordination_outage_timeout``
        """
        if not self.lost:
            try:
                self.orchestrator.coordinator.hold_lease(self.claim.session)
                return
            except orc_exc.SessionLost as e:
                self.lost = True
                self.suspend('claim lost: %s' % e)
        raise orc_exc.ClaimLost(flow_id=self.claim.flow_id)

    def fence_in_transaction(self, connection):
        """Inside a task's database transaction, right before a write
        (after :meth:`fence`): on the journal's database, the flow's row
        must still hold this run's token, read with a share lock in the
        write's transaction, once per transaction
        (:func:`nova.orc.persistence.backend.fence_in_transaction`); on
        another database nothing more.

        :param connection: ``sqlalchemy.engine.Connection`` of the write
        :raises nova.orc.exception.ClaimLost: another conductor claimed
            the flow
        """
        try:
            journal.fence_in_transaction(connection, self.claim.flow_id,
                                         self.token)
        except journal.FlowFenced as e:
            self.lost = True
            self.suspend('claim lost: %s' % e)
            raise orc_exc.ClaimLost(flow_id=self.claim.flow_id)

    def journal_lease(self):
        """:meth:`fence` for the journal's writes of this run: a lost
        claim refuses the write as a fenced one
        (:class:`nova.orc.persistence.backend.FlowFenced`, a TaskFlow
        ``StorageFailure``: the engine stops without reverting)."""
        try:
            self.fence()
        except orc_exc.ClaimLost as e:
            raise journal.FlowFenced(self.claim.flow_id, self.token, None,
                                     reason=str(e))

    def ensure_owned(self):
        """Before a write that no fencing token guards (placement): the
        lease holds (:meth:`fence`) and the claim node is still ours,
        asked of the board now (a ZooKeeper read).

        :raises nova.orc.exception.ClaimLost: it is not
        :raises nova.orc.exception.CoordinationUnavailable: it cannot be
            told now
        """
        self.fence()
        if not self.orchestrator.board.still_owned(self.claim):
            self.lost = True
            raise orc_exc.ClaimLost(flow_id=self.claim.flow_id)

    def suspend(self, why):
        """Stop starting atoms (the claim is lost or the conductor stops);
        the atoms running finish, then the engine ends SUSPENDED."""
        LOG.warning('Suspending flow %s: %s', self.claim.flow_id, why)
        if self.engine is not None:
            self.engine.suspend()


class Orchestrator:
    """Runs journaled flows as jobs for one conductor.

    :param manager: the conductor's ``ComputeTaskManager`` (stock helpers
        the tasks call)
    :param coordinator: a :class:`nova.orc.coordination.Coordinator`;
        default from ``[orc] coordination_url``
    :param backend: a TaskFlow persistence backend; default
        :class:`nova.orc.persistence.backend.JournalBackend`
    """

    def __init__(self, manager, coordinator=None, backend=None):
        self.manager = manager
        self.backend = backend or journal.JournalBackend()
        self.coordinator = (coordinator or coordination.coordinator_from_conf(
            stale_owner=self.flow_ended))
        #: this process's claim owner name (unique per process)
        self.owner = jobboard.conductor_name(CONF.host)
        self.board = jobboard.board_from_coordinator(
            self.coordinator, self.owner, CONF.orc.coordination_url)
        self.board.on_abort = self._on_abort_request
        self.compute_rpcapi = orc_rpcapi.OrcComputeAPI()
        self._lock = threading.Lock()
        #: transient inputs (secrets, the user's context) of flows posted
        #: here and not yet started, by flow id
        self._transient = {}
        #: runs in progress here, by flow id
        self._runs = {}
        #: flow id -> Event set once a flow posted here passed its
        #: module's HANDOFF_AFTER atom (or its run ended)
        self._handoffs = {}
        #: flow id -> monotonic time before which a failed job is not
        #: claimed again by this conductor
        self._backoff = {}
        #: flow id -> monotonic time this conductor first saw its job
        #: unclaimed ([orc] peer_claim_delay)
        self._unclaimed_since = {}
        self._started = False
        self._stopping = threading.Event()
        self._loop = None
        self._job_executor = None
        self._task_executor = None

    # ---------------------------------------------------------- lifecycle
    def start(self):
        """Connect to the coordination backend and start taking jobs.

        :raises nova.orc.exception.CoordinationUnavailable: unreachable
        """
        with self._lock:
            if self._started:
                return
            self._warn_if_locks_are_not_shared()
            self._warn_if_resumes_cannot_act_as_the_user()
            fencing.install(
                idle_in_transaction_seconds=(
                    None if isinstance(self.coordinator,
                                       coordination.MemoryCoordinator)
                    else CONF.orc.zookeeper_session_timeout))
            self.coordinator.start()
            self.coordinator.add_session_listener(self._on_session_change)
            self.board.connect()
            self._stopping.clear()
            self._job_executor = self._executor(CONF.orc.max_workers)
            self._task_executor = self._executor(CONF.orc.max_workers)
            # a green thread when Nova runs monkey-patched
            self._loop = threading.Thread(
                target=self._conductor_loop, name='nova-orc-jobs',
                daemon=True)
            self._loop.start()
            self._started = True
        LOG.info('nova-orc conductor %s takes jobs (at most %d at once)',
                 self.owner, CONF.orc.max_workers)

    @staticmethod
    def _executor(size):
        """Green threads when Nova runs monkey-patched, threads otherwise."""
        if utils.concurrency_mode_threading():
            return futurist.ThreadPoolExecutor(max_workers=size)
        return futurist.GreenThreadPoolExecutor(max_workers=size)

    def _warn_if_resumes_cannot_act_as_the_user(self):
        """Without ``[orc] secret_key`` the user's token (and the admin
        password, injected files) live only in the memory of the conductor
        that took the request: a flow another conductor resumes before its
        calls as the user reverts. Say so at start-up.

        :returns: True when it warned
        """
        if CONF.orc.secret_key or not self.board.durable:
            return False
        LOG.warning('[orc] secret_key is not set: a flow resumed by another '
                    'conductor cannot act as the user (ports, volumes, the '
                    'image) nor spawn with the request\'s admin password; '
                    'such a flow reverts with a fault saying so. Set the '
                    'same [orc] secret_key on every conductor.')
        return True

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
        LOG.warning('[orc] coordination_url = %s keeps locks and jobs inside '
                    'one process, but [conductor] workers = %d: flows in '
                    'different workers will not see each other\'s locks and '
                    'no worker resumes another\'s flows. Set [orc] '
                    'coordination_url = zookeeper://... (or [conductor] '
                    'workers = 1).', CONF.orc.coordination_url, workers)
        return True

    def drain(self):
        """Stop claiming jobs; runs in progress go on."""
        self._stopping.set()
        self.board.changed.set()

    def wait_for_runs(self, timeout):
        """Wait up to ``timeout`` seconds for the runs in progress here to
        end; returns at once when there are none."""
        deadline = time.monotonic() + timeout
        while self._runs and time.monotonic() < deadline:
            time.sleep(0.1)

    def stop(self, timeout=0.0):
        """Stop taking jobs; wait up to ``timeout`` seconds for the runs in
        progress, then suspend the rest and give their jobs back to the
        board (another conductor, or this one restarted, resumes them).
        Locks stay: they belong to the jobs."""
        with self._lock:
            if not self._started:
                return
            self._started = False
        self.drain()
        self.wait_for_runs(timeout)
        for run in list(self._runs.values()):
            run.suspend('conductor %s stopping' % self.owner)
        self.wait_for_runs(10)
        for executor in (self._job_executor, self._task_executor):
            executor.shutdown(wait=False)
        self.board.close()
        self.coordinator.stop()

    def _on_session_change(self, state):
        """Coordination session events (kazoo's SUSPENDED/LOST/CONNECTED).
        A lost session took our claims with it: another conductor may
        already run these flows, so ours stop starting atoms (their host
        calls are fenced anyway)."""
        if state == 'lost':
            for run in list(self._runs.values()):
                run.lost = True
                run.suspend('coordination session lost: the job may be '
                            'claimed by another conductor')
            # handlers waiting for a run here to hand off stop waiting: the
            # flow goes on elsewhere
            with self._lock:
                handoffs = list(self._handoffs.values())
            for event in handoffs:
                event.set()
        elif state == 'connected':
            self.board.changed.set()

    def _on_abort_request(self, flow_id, reason):
        """An operator asked to abort a job (``nova-orc job abort``): a run
        of it here stops at its next task and reverts."""
        run = self._runs.get(flow_id)
        if run is not None:
            LOG.warning('Aborting flow %s at its next task: %s', flow_id,
                        reason)
            run.abort_reason = 'aborted by an operator: %s' % reason

    # ------------------------------------------------------------ posting
    def post(self, context, module, store, transient, instance_uuid,
             display_name=None):
        """Journal a flow and post its job; returns at once.

        A flow once journaled is never ended here: when its job cannot be
        posted (ZooKeeper unreachable past ``[orc]
        coordination_outage_timeout``, a session lost and none back in
        that time) it stays journaled and a conductor adopts it
        (:meth:`adopt_orphans`) once ZooKeeper answers: the request waits,
        it does not fail.

        :param context: RequestContext of the API request
        :param module: the flow module (e.g. :mod:`nova.orc.flows.boot`)
        :param store: the flow's persisted inputs, JSON-serialisable
        :param transient: inputs never journaled (secrets): dict
        :param instance_uuid: str
        :param display_name: server name (``nova-orc flow show NAME``)
        :returns: the flow id (flow detail uuid)
        :raises: a journal (database) error: nothing was journaled, nothing
            will run (the caller gives the request stock's failure end
            state); a coordination error at start-up
        """
        self.start()
        flow_id = uuidutils.generate_uuid()
        auth = user_auth(context)
        book = models.LogBook('%s-%s' % (module.NAME, instance_uuid))
        flow_detail = models.FlowDetail(module.NAME, flow_id)
        taskflow.engines.save_factory_details(flow_detail, module.get_flow,
                                              [], {})
        flow_detail.meta.update({
            'operation': module.NAME, 'version': module.VERSION,
            'instance_uuid': instance_uuid, 'display_name': display_name,
            'conductor': CONF.host, 'posted_by': self.owner,
            'request_id': context.request_id,
            'context': journal_context(context), 'claims': 0,
            'secrets_given': any(transient.values()),
            'user_auth_given': auth is not None,
            'sealed_secrets': secrets.seal(
                dict(transient, **{names.USER_AUTH: auth})),
            'store': dict(store, **{names.FLOW_ID: flow_id})})
        book.add(flow_detail)
        with contextlib.closing(self.backend.get_connection()) as conn:
            conn.save_logbook(book)
        with self._lock:
            self._transient[flow_id] = dict(transient,
                                            **{names.CONTEXT: context})
            self._handoffs[flow_id] = threading.Event()
        try:
            posted = self.post_job(flow_detail, book)
        except Exception as e:
            posted = False
            LOG.error('Flow %s (%s of instance %s) is journaled but its job '
                      'could not be posted (%s): a conductor posts it once '
                      'ZooKeeper answers (orphan adoption, every %d s)',
                      flow_id, module.NAME, instance_uuid, e,
                      ORPHAN_SCAN_INTERVAL)
        if not posted:
            # it runs elsewhere, or later: nothing of it to keep or wait for
            with self._lock:
                self._transient.pop(flow_id, None)
                self._handoffs.pop(flow_id, None)
        return flow_id

    def post_job(self, flow_detail, book):
        """Post the job of a journaled flow on the board, this conductor
        its poster (the one place a flow's job is posted from).

        :param flow_detail: the flow's ``FlowDetail`` (its meta names the
            operation and instance)
        :param book: the ``LogBook`` the flow detail is journaled in
        :returns: True when this call posted it, False when the flow has a
            job already (posted by another conductor, or by an earlier call
            whose answer was lost): one job per flow
        :raises nova.orc.exception.CoordinationUnavailable: board
            unreachable for ``[orc] coordination_outage_timeout``
        """
        meta = flow_detail.meta
        # from a task (a multi-create posting its instances' boots): only
        # while its run holds its claim
        fencing.check()
        return self.board.post(flow_detail.uuid, book, {
            'operation': meta['operation'],
            'instance_uuid': meta['instance_uuid'], 'book': book.uuid,
            'posted_by': self.owner,
            # who else may run it while its poster lives (_may_claim): a
            # conductor of a version that resumes it, able to unseal
            'version': meta.get('version'),
            'needs_secrets': bool(meta.get('secrets_given') or
                                  meta.get('user_auth_given')),
            'key_check': (secrets.key_check() if meta.get('sealed_secrets')
                          else None)},
            ended=lambda: self.flow_ended(flow_detail.uuid))

    def release_leftover_locks(self):
        """Release the locks of flows that ended (SUCCESS or REVERTED) but
        could not release them then (ZooKeeper unreachable as the flow
        ended: its result stands and its job is consumed). A later acquire
        of the same resource breaks such a lock anyway; this removes the
        ones nothing else would ask for again (a deleted server's).

        :returns: list of the flow ids whose locks were released
        """
        by_owner = {}
        for lock in self.coordinator.list_locks():
            by_owner.setdefault(lock.get('owner'), []).append(
                (lock['kind'], lock['id']))
        released = []
        for owner, resources in by_owner.items():
            if owner and self.flow_ended(owner):
                LOG.warning('Releasing %d lock(s) left by ended flow %s: %s',
                            len(resources), owner, resources)
                self.coordinator.release(owner, resources)
                released.append(owner)
        return released

    def adopt_orphans(self):
        """Post the jobs of journaled flows that have none: their poster
        died between journaling a flow and posting its job (an RPC handler,
        or a multi-create's ``post_boots``), or could not post it within
        ``[orc] coordination_outage_timeout`` (ZooKeeper unreachable), so
        nothing would ever run them and the server would stay in BUILD. A
        flow is an orphan when it has not ended, is not quarantined, is
        older than :data:`ORPHAN_MIN_AGE` seconds and no job names it,
        whether its poster lives or not: a poster still posting it races
        nothing, since a flow's second post posts nothing
        (:meth:`nova.orc.jobboard.JobBoard.post`). The conductor loop runs
        it every :data:`ORPHAN_SCAN_INTERVAL` seconds, in one conductor at
        a time (:meth:`nova.orc.jobboard.JobBoard.exclusive`); with
        ``memory://`` there is nothing to adopt from (one process).

        :returns: list of the flow ids whose job was posted
        """
        if not self.board.durable:
            return []
        with contextlib.closing(self.backend.get_connection()) as conn:
            cutoff = timeutils.utcnow() - datetime.timedelta(
                seconds=ORPHAN_MIN_AGE)
            candidates = [
                f for f in conn.list_flows(unended=True,
                                           created_before=cutoff)
                if not f['meta'].get('quarantined')]
            if not candidates:
                return []
            with_job = {job['flow_id']
                        for job in self.board.list_jobs()}
            adopted = []
            for flow in candidates:
                if flow['uuid'] in with_job:
                    continue
                # read again after the board: a flow that ended
                # meanwhile had its job consumed
                flow_detail = conn.get_flow_details(flow['uuid'],
                                                    lazy=True)
                if flow_detail.state in ENDED:
                    continue
                if self.post_job(flow_detail, conn.get_logbook(
                        flow['logbook_uuid'], lazy=True)):
                    LOG.warning('Flow %s (%s of instance %s) was journaled '
                                'but its job never posted (its conductor '
                                'died, or ZooKeeper was unreachable): '
                                'posted it', flow['uuid'], flow['name'],
                                flow['instance_uuid'])
                    adopted.append(flow['uuid'])
            return adopted

    def wait_for_handoff(self, flow_id, timeout):
        """Wait until flow ``flow_id`` (posted here) passed the atom after
        which stock's conductor would have returned (the module's
        ``HANDOFF_AFTER``: for a boot, the instance record created), or its
        run ended, or ``timeout`` seconds. An RPC handler returns then, as
        stock's ``schedule_and_build_instances`` returns once the records
        exist and the build is cast; the long steps (spawn) run on without
        it.

        :returns: True when the flow got there in time
        """
        with self._lock:
            event = self._handoffs.get(flow_id)
        if event is None:
            return True
        start = time.monotonic()
        deadline = start + timeout
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                if event.wait(min(remaining, HANDOFF_POLL_INTERVAL)):
                    return True
                if self._run_elsewhere(flow_id, start):
                    return False
        finally:
            with self._lock:
                self._handoffs.pop(flow_id, None)
                if CONF.orc.secret_key and flow_id not in self._runs:
                    # not running here as the handler returns: whoever
                    # runs it (here later, or a peer) unseals its secrets
                    self._transient.pop(flow_id, None)

    def _run_elsewhere(self, flow_id, posted_at):
        """Whether the job of flow ``flow_id``, posted here at
        ``posted_at`` (monotonic), is left to the other conductors: with
        ``[orc] secret_key``, once ``[orc] peer_claim_delay`` passed and it
        does not run here (every worker here busy, or a peer claimed it).
        Its transient inputs are dropped then (whoever runs it unseals them
        from the journal), so that the RPC thread waiting for its handoff
        is not held for a job this conductor may never run."""
        if not CONF.orc.secret_key or (
                time.monotonic() - posted_at < CONF.orc.peer_claim_delay):
            return False
        with self._lock:
            if flow_id in self._runs:
                return False
            self._transient.pop(flow_id, None)
        LOG.info('Flow %s is not running here after %.1f s (every worker '
                 'busy, or a peer took it): its RPC handler returns, '
                 'whoever runs it unseals its secrets', flow_id,
                 CONF.orc.peer_claim_delay)
        return True

    def _handed_off(self, flow_id):
        with self._lock:
            event = self._handoffs.get(flow_id)
        if event is not None:
            event.set()

    # ---------------------------------------------------- conductor loop
    def _conductor_loop(self):
        """Claim jobs while running: woken by the board, or every
        :data:`JOB_SCAN_INTERVAL` seconds; every
        :data:`ORPHAN_SCAN_INTERVAL` seconds, in one conductor at a time,
        adopt orphan flows and release the locks ended flows left."""
        last_orphan_scan = time.monotonic()
        while not self._stopping.is_set():
            self.board.changed.wait(JOB_SCAN_INTERVAL)
            self.board.changed.clear()
            if self._stopping.is_set():
                break
            try:
                if time.monotonic() - last_orphan_scan >= \
                        ORPHAN_SCAN_INTERVAL:
                    last_orphan_scan = time.monotonic()
                    with self.board.exclusive('leftovers') as mine:
                        if mine:
                            self.adopt_orphans()
                            self.release_leftover_locks()
                self._claim_jobs()
            except Exception:
                LOG.exception('nova-orc conductor %s: claiming jobs failed',
                              self.owner)
                self._stopping.wait(JOB_SCAN_INTERVAL)

    def _may_claim(self, job):
        """Whether this conductor may claim ``job`` now: a job of its
        own, or of a poster that is gone, at once; a live peer's job once
        this conductor has seen it unclaimed for ``[orc] peer_claim_delay``
        seconds (its poster is busy or slow), and only with ``[orc]
        secret_key`` (the request's secrets are unsealed here)."""
        flow_id, posted_by = self.board.job_identity(job)
        with self._lock:
            if flow_id in self._runs:
                return False
            if self._backoff.get(flow_id, 0) > time.monotonic():
                return False
            unclaimed_since = self._unclaimed_since.get(flow_id)
        if posted_by == self.owner or not self.board.is_alive(posted_by):
            return True
        if not CONF.orc.secret_key or unclaimed_since is None or (
                time.monotonic() - unclaimed_since <
                CONF.orc.peer_claim_delay):
            return False
        return self._can_run_a_peers_job(self.board.job_details(job))

    @staticmethod
    def _can_run_a_peers_job(details):
        """Whether a job a live peer posted can run here as well as there:
        its flow at a version this conductor resumes, and its sealed
        secrets sealed with this conductor's key (a rolling change of
        ``[orc] secret_key`` or of a flow's version must not turn a peer's
        boot into a revert). A job posted by a conductor that did not say
        (an older one) stays with its poster.

        :param details: dict, the job's details (:meth:`post_job`)
        """
        if 'needs_secrets' not in details:
            return False
        module = flows.FACTORIES.get(details.get('operation'))
        if module is None or (
                details.get('version') not in module.RESUMABLE_VERSIONS):
            return False
        return not details['needs_secrets'] or secrets.same_key(
            details.get('key_check'))

    def _claim_jobs(self):
        claimable = self.board.claimable()
        now = time.monotonic()
        flow_ids = {self.board.job_identity(job)[0] for job in claimable}
        with self._lock:
            self._unclaimed_since = {
                flow_id: self._unclaimed_since.get(flow_id, now)
                for flow_id in flow_ids}
        for job in claimable:
            if self._stopping.is_set():
                return
            with self._lock:
                if len(self._runs) >= CONF.orc.max_workers:
                    return
            if not self._may_claim(job):
                continue
            claim = self.board.claim(job)
            if claim is None:
                continue
            run = JobRun(self, claim)
            with self._lock:
                self._runs[claim.flow_id] = run
            if (claim.session is not None and
                    self.coordinator.session_id() != claim.session):
                # the session ended between the claim and now: the 'lost'
                # event found no run to stop; this one must not start
                run.lost = True
            self._job_executor.submit(self._run_job, run)

    def _run_job(self, run):
        flow_id = run.claim.flow_id
        try:
            self._run_claimed(run)
        except journal.FlowFenced as e:
            LOG.warning('Not running flow %s: another conductor claimed it '
                        'since (%s)', flow_id, e)
        except Exception:
            LOG.exception('Job of flow %s could not run; giving it back to '
                          'the board', flow_id)
            with self._lock:
                self._backoff[flow_id] = time.monotonic() + FAILED_JOB_BACKOFF
            self.board.abandon(run.claim)
        finally:
            # what the journal backend kept for this run (its lease holds
            # the run and its engine) goes with it, whatever happened
            self.backend.forget_flow(flow_id)
            with self._lock:
                self._runs.pop(flow_id, None)
                # secrets kept for a first run go with it, whatever
                # happened (a later run unseals them from the journal)
                self._transient.pop(flow_id, None)
            self._handed_off(flow_id)
            self.board.changed.set()

    # ---------------------------------------------------------- running
    def _run_claimed(self, run):
        """Load the claimed job's flow from the journal and run it."""
        flow_id = run.claim.flow_id
        if run.lost:
            # neither fence the journal nor count a resume with a claim
            # that went with its session
            LOG.warning('Not running flow %s: its claim went with a lost '
                        'coordination session', flow_id)
            return
        with contextlib.closing(self.backend.get_connection()) as conn:
            # fence the journal first: from now on a conductor that held an
            # earlier claim of this job cannot write it (FlowFenced), and
            # what we read below is all it wrote
            conn.claim_flow(flow_id, run.claim.token,
                            lease=run.journal_lease)
            flow_detail = conn.get_flow_details(flow_id)
            book = conn.get_logbook(run.claim.details['book'], lazy=True)
            meta = flow_detail.meta
            if flow_detail.state in ENDED:
                # ended, but its job was not consumed (died in between)
                self._finish(run, flow_detail.state, meta)
                return
            if meta.get('retry_after', 0) > time.time():
                # its revert failed recently: not yet
                self._give_back(run, until=meta['retry_after'])
                return
            meta['claims'] = meta.get('claims', 0) + 1
            meta['claimed_at'] = timeutils.utcnow().isoformat()
            meta['conductor'] = CONF.host
            run.resumed = meta['claims'] > 1
            run.abort_reason = self._abort_reason(flow_detail,
                                                  run.claim.details)
            failed_revert = flow_detail.state == states.FAILURE
            # FAILURE: its revert failed; an atom journaled REVERTING:
            # a conductor died while undoing it (a revert that kills its
            # conductor; the flow's own REVERTING state rides with a later
            # write)
            reverting = flow_detail.state in (
                states.FAILURE, states.REVERTING) or any(
                ad.state in (states.REVERTING, states.REVERT_FAILURE)
                for ad in flow_detail)
            if reverting and run.abort_reason:
                if not self._resumable_here(flow_detail):
                    # it cannot even be reverted by this conductor's
                    # flows: leave it to a conductor that can
                    LOG.warning('Flow %s failed to revert and %s: left to '
                                'another conductor', flow_id,
                                run.abort_reason)
                    self._give_back(run, until=time.time() +
                                    FAILED_JOB_BACKOFF)
                    return
                if self._resumes(meta, run.claim.details) > \
                        CONF.orc.max_resumes:
                    self._quarantine(run, conn, book, flow_detail)
                    return
                # an operator's abort of a flow whose revert failed (or
                # was under way): the revert is tried (again) now
            meta.pop('quarantined', None)
            # durable now (the claim count caps resumes): save_logbook
            # commits at once where update_flow_details of a claimed flow
            # waits for its next write
            book.add(flow_detail)
            conn.save_logbook(book)
        with self._lock:
            transient = self._transient.pop(flow_id, None)
        if transient is None:
            transient = self._unseal(run, flow_detail)
            auth = transient.get(names.USER_AUTH)
            context = resumed_context(meta['context'], auth)
            LOG.info('Resuming flow %s (%s of instance %s, claim %d) %s',
                     flow_id, flow_detail.name, meta['instance_uuid'],
                     meta['claims'],
                     "as user %s of project %s (the request's token)" % (
                         context.user_id, context.project_id) if auth else
                     'with service credentials for project %s' %
                     context.project_id)
        else:
            context = transient.pop(names.CONTEXT)
        module = flows.FACTORIES[flow_detail.name]
        flow = taskflow.engines.flow_from_detail(flow_detail)
        bind(flow, run)
        engine = taskflow.engines.load(
            flow, flow_detail=flow_detail, book=book, backend=self.backend,
            **self._engine_options())
        secret_inputs = {key: transient.get(key) for key in module.SECRETS}
        engine.storage.inject(dict(meta['store'], **secret_inputs,
                                   **{names.CONTEXT: context}),
                              transient=True)
        if failed_revert:
            self._retry_reverts(engine, flow_detail)
        handoff = getattr(module, 'HANDOFF_AFTER', None)
        if handoff:
            engine.atom_notifier.register(
                states.SUCCESS,
                lambda state, details: details.get('task_name') == handoff
                and self._handed_off(flow_id))
        run.engine = engine
        if run.lost or self._stopping.is_set():
            run.suspend('claimed while stopping')
        listener = events.InstanceActionListener(
            engine, context, meta['instance_uuid'], CONF.host,
            cell_uuid=provided(flow, flow_detail, names.CELL_UUID), run=run)
        try:
            with listener, FlowLoggingListener(engine, log=LOG):
                engine.run()
        except Exception as e:
            LOG.info('Flow %s (%s of instance %s) reverted: %s', flow_id,
                     flow_detail.name, meta['instance_uuid'], e)
        self._finish(run, engine.storage.get_flow_state(), meta)

    @staticmethod
    def _retry_reverts(engine, flow_detail):
        """A flow whose revert failed (FAILURE): its atoms whose revert
        failed revert again, then the rest of the revert goes on. (TaskFlow
        would otherwise call the flow REVERTED without retrying them.)"""
        LOG.warning('Flow %s failed to revert earlier: reverting again',
                    flow_detail.uuid)
        for atom_detail in flow_detail:
            if atom_detail.state == states.REVERT_FAILURE:
                engine.storage.set_atom_state(atom_detail.name,
                                              states.REVERTING)
        engine.storage.set_flow_state(states.RUNNING)

    def _give_back(self, run, until):
        """Abandon the job and leave it alone here until ``until`` (epoch
        seconds)."""
        with self._lock:
            self._backoff[run.claim.flow_id] = (
                time.monotonic() + max(0.0, until - time.time()))
        self.board.abandon(run.claim)

    def _quarantine(self, run, conn, book, flow_detail):
        """A flow whose revert keeps failing (or keeps killing the
        conductors running it): stop cycling it. Its job is removed, its
        locks stay (the resources are in an unknown state); ``nova-orc lock
        list`` shows them and ``nova-orc job resume`` tries again once the
        cause is fixed. An instance in a cell goes to ERROR with a fault
        that says so (:meth:`_fault_quarantined`): no server stays in BUILD
        with neither a live owner nor a fault."""
        LOG.error('Flow %s (%s of instance %s) failed to revert and %s: it '
                  'is quarantined (job removed, locks kept); see nova-orc '
                  'lock list and nova-orc job resume', flow_detail.uuid,
                  flow_detail.name, flow_detail.meta['instance_uuid'],
                  run.abort_reason)
        flow_detail.meta['quarantined'] = run.abort_reason
        # at once: update_flow_details of a claimed flow that has not
        # ended waits for the run's next write, which never comes
        book.add(flow_detail)
        conn.save_logbook(book)
        # before the job goes (an operator's resume hands it to another
        # conductor), and fenced as the run's tasks are
        fencing.enter(run)
        try:
            self._fault_quarantined(flow_detail, run.abort_reason)
        except Exception:
            LOG.exception('Flow %s is quarantined; its instance could not '
                          'be put in ERROR', flow_detail.uuid)
        finally:
            fencing.leave()
        self.board.consume(run.claim)

    def _fault_quarantined(self, flow_detail, reason):
        """ERROR and a :class:`nova.orc.exception.FlowQuarantined` fault
        for the quarantined flow's instance when it is in a cell (stock
        ``ComputeTaskManager._set_vm_state_and_notify``, as a failed
        build's end)."""
        meta = flow_detail.meta
        instance_uuid = meta.get('instance_uuid')
        if not instance_uuid:
            return  # a multi-create's scheduling flow: its boots have theirs
        context = resumed_context(meta['context'])
        try:
            mapping = objects.InstanceMapping.get_by_instance_uuid(
                context, instance_uuid)
        except exception.InstanceMappingNotFound:
            return
        if mapping.cell_mapping is None:
            return
        exc = orc_exc.FlowQuarantined(flow_id=flow_detail.uuid,
                                      reason=reason)
        spec = meta['store'].get(names.REQUEST_SPEC)
        with nova_context.target_cell(context, mapping.cell_mapping) as cctxt:
            orc_exc.call_handling(
                exc, self.manager._set_vm_state_and_notify, cctxt,
                instance_uuid, 'build_instances',
                {'vm_state': vm_states.ERROR, 'task_state': None}, exc,
                task_base.hydrate(objects.RequestSpec, spec, cctxt))

    @staticmethod
    def _resumable_here(flow_detail):
        """Whether this conductor has the flow's factory, at a version it
        can resume (the flow's journaled version)."""
        module = flows.FACTORIES.get(flow_detail.name)
        return (module is not None and
                flow_detail.meta.get('version') in module.RESUMABLE_VERSIONS)

    @staticmethod
    def _resumes(meta, details):
        """Automatic resumes of a flow so far: its claims after the first,
        less those before an operator's ``nova-orc job resume`` (which
        posts the job with ``claims_before_operator_resume``: a fresh
        budget of ``[orc] max_resumes``) and those after a revert that
        failed only because a service was unreachable (``outages``: an
        outage is waited out, not counted, :meth:`_failed_in_outage`)."""
        before_resume = (
            int(details.get('claims_before_operator_resume') or 0) -
            int(details.get('outages_before_operator_resume') or 0))
        return meta['claims'] - 1 - meta.get('outages', 0) - before_resume

    def _abort_reason(self, flow_detail, details):
        """Why a claimed job must not go on (str), or None.

        :param details: the job's details (dict)
        """
        meta = flow_detail.meta
        requested = self.board.abort_requested(flow_detail.uuid)
        if requested:
            return 'aborted by an operator: %s' % requested
        module = flows.FACTORIES.get(flow_detail.name)
        if module is None:
            return 'no flow named %r in this conductor' % flow_detail.name
        if not self._resumable_here(flow_detail):
            return ('journaled by %s flow version %s; this conductor runs '
                    'version %s and resumes only %s' % (
                        flow_detail.name, meta.get('version'), module.VERSION,
                        list(module.RESUMABLE_VERSIONS)))
        resumes = self._resumes(meta, details)
        if resumes > CONF.orc.max_resumes:
            return ('resumed %d times, more than [orc] max_resumes = %d: '
                    'the job is quarantined and reverted' % (
                        resumes, CONF.orc.max_resumes))
        return None

    @staticmethod
    def _unseal(run, flow_detail):
        """The secrets of a flow resumed here, from its sealed copy
        (:mod:`nova.orc.persistence.secrets`): the module's ``SECRETS``
        and the user's token (:data:`names.USER_AUTH`). When they cannot
        be had and an atom that needs them has not finished, the run is
        aborted with the reason; returns ``{}`` then."""
        meta = flow_detail.meta
        module = flows.FACTORIES[flow_detail.name]
        journaled = {ad.name: ad.state for ad in flow_detail}
        if not journaled:
            # it never ran (an adopted flow whose poster died, or a poster
            # whose secrets went with it): every consumer is to come
            journaled = dict.fromkeys(
                module.SECRET_CONSUMERS +
                getattr(module, 'USER_AUTH_CONSUMERS', ()), states.PENDING)
        needs = []
        if meta.get('secrets_given'):
            # the consumers are alternatives (one per branch of the flow):
            # none needs them once one has succeeded; a consumer ignored
            # (the branch not taken) or absent from the journal (an older
            # flow version) needs nothing
            consumers = [a for a in module.SECRET_CONSUMERS
                         if a in journaled]
            pending = [] if any(journaled[a] == states.SUCCESS
                                for a in consumers) else [
                a for a in consumers if journaled[a] != states.IGNORE]
            needs.append(('the secrets of the request (%s)' %
                          ', '.join(module.SECRETS), pending))
        if meta.get('user_auth_given'):
            # every one of them calls services as the user
            pending = [a for a in getattr(module, 'USER_AUTH_CONSUMERS', ())
                       if a in journaled and journaled[a] not in
                       (states.SUCCESS, states.IGNORE)]
            needs.append(("the user's token", pending))
        if not needs:
            return {}
        reason = None
        if meta.get('sealed_secrets'):
            try:
                return secrets.unseal(meta['sealed_secrets'])
            except ValueError as e:
                reason = str(e)
        else:
            reason = ('they were not sealed into the journal ([orc] '
                      'secret_key unset when the request came)')
        for what, pending in needs:
            if pending and not run.abort_reason:
                run.abort_reason = (
                    '%s, needed by %s, cannot be recovered by the conductor '
                    'resuming the flow: %s' % (what, ', '.join(pending),
                                               reason))
        return {}

    def _engine_options(self):
        if CONF.orc.engine == 'parallel':
            return {'engine': 'parallel', 'executor': self._task_executor}
        return {'engine': 'serial'}

    def _finish(self, run, state, meta):
        """After a run: release locks and consume the job when the flow
        ended; otherwise give the job back (or leave it, claim lost)."""
        flow_id = run.claim.flow_id
        if state in ENDED:
            resources = [tuple(r) for r in meta['store'].get(
                names.LOCK_RESOURCES, ())]
            try:
                self.coordinator.release(flow_id, resources)
            except orc_exc.CoordinationUnavailable as e:
                # the flow's result stands; a later acquire breaks these
                # locks since the journal says the flow ended
                LOG.warning('Flow %s ended %s but its locks could not be '
                            'released now: %s', flow_id, state, e)
            self.board.consume(run.claim)
            return
        if run.lost or not self._still_owned(run):
            LOG.warning('Flow %s stopped in state %s after its claim was '
                        'lost; its new owner goes on', flow_id, state)
            return
        if state != states.SUSPENDED:
            meta['retry_after'] = time.time() + FAILED_JOB_BACKOFF
            try:
                with contextlib.closing(
                        self.backend.get_connection()) as conn:
                    # fenced as the run's own writes were (committing
                    # FAILURE ended this backend's claim of the flow): a
                    # conductor that claimed the job since wins
                    conn.claim_flow(flow_id, run.claim.token,
                                    lease=run.journal_lease)
                    flow_detail = conn.get_flow_details(flow_id)
                    outage = self._failed_in_outage(flow_detail)
                    if outage:
                        meta['outages'] = meta.get('outages', 0) + 1
                    flow_detail.meta = meta
                    conn.update_flow_details(flow_detail)
            except Exception:
                outage = None
                LOG.exception('Could not journal the retry time of flow %s',
                              flow_id)
            if outage:
                LOG.warning('Flow %s ended %s: its revert could not reach '
                            '%s; the outage is waited out (not counted '
                            'against [orc] max_resumes): its locks stay and '
                            'its job is tried again in %d s', flow_id,
                            state, outage, FAILED_JOB_BACKOFF)
            else:
                LOG.error('Flow %s ended %s (a revert failed): its locks '
                          'stay and its job goes back to the board, to be '
                          'reverted again in %d s', flow_id, state,
                          FAILED_JOB_BACKOFF)
            self._give_back(run, until=meta['retry_after'])
            return
        self.board.abandon(run.claim)

    @staticmethod
    def _failed_in_outage(flow_detail):
        """What a flow whose revert failed could not reach, when each of
        its failed reverts failed with one of :data:`OUTAGE_ERRORS`.

        :param flow_detail: the flow's ``FlowDetail``, atoms loaded
        :returns: str, the errors' names (e.g. ``'DBConnectionError'``);
            None when a revert failed for another reason (or none did)
        """
        failures = [ad.revert_failure for ad in flow_detail
                    if ad.state == states.REVERT_FAILURE and
                    ad.revert_failure is not None]
        matched = [f.check(*OUTAGE_ERRORS) for f in failures]
        if not matched or None in matched:
            return None
        return ', '.join(sorted({cls.__name__ for cls in matched}))

    def _still_owned(self, run):
        """Whether ``run``'s claim is still ours, ZooKeeper outages waited
        out: a claim that cannot be told is neither acted on nor dropped
        (dropped, the job would stay claimed by our live session and no
        conductor would ever run it again). False when the conductor
        stops meanwhile."""
        while True:
            try:
                return self.board.still_owned(run.claim)
            except orc_exc.CoordinationUnavailable as e:
                LOG.warning('Cannot tell whether the claim of flow %s is '
                            'still ours (%s); asking again in %.0f s',
                            run.claim.flow_id, e, CLAIM_RECHECK_INTERVAL)
            if self._stopping.wait(CLAIM_RECHECK_INTERVAL):
                return False

    # ------------------------------------------------------------- queries
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
        return state in ENDED
