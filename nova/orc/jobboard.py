"""Job boards: one job per flow run, claimed by one conductor at a time.

Architecture (doc/source/architecture.rst) section 4. A *job* names a journaled flow (its flow detail uuid); a
conductor *claims* it before running the flow and *consumes* it when the
flow has ended (SUCCESS or REVERTED). The claim is tied to the claiming
conductor's coordination session: when that conductor dies its claim
vanishes with the session and another conductor claims the job and resumes
the flow from the journal. Locks are not claims: they belong to the job and
stay until the flow ends (:mod:`nova.orc.coordination`).

Two boards with one contract:

* :class:`ZooKeeperJobBoard` wraps TaskFlow's ZooKeeper job board
  (``taskflow.jobs.backends.impl_zookeeper``): jobs are persistent sequence
  nodes under ``<chroot>/jobs``, a claim is the job's ephemeral ``.lock``
  node created by the claimer's kazoo session (the coordinator's own
  client, so locks, claims and liveness share one session). The claim
  node's creation zxid is the **fencing token**: ZooKeeper's zxids only
  grow, so a later claim of the same job always carries a larger token.
  One children watch on the jobs folder tells which jobs have no claim
  node, so finding claimable work costs no read per job.
* :class:`MemoryJobBoard` is the in-process twin for ``memory://`` (one
  conductor process: no failover, the same code path).

Claim owners are unique per process (``host:pid:uuid``), never the bare host
name: two conductor workers of one host must not consume each other's
claims.
"""

import contextlib
import functools
import itertools
import os
import threading

from kazoo import exceptions as kazoo_exc
from kazoo.protocol import paths as kazoo_paths
from kazoo.recipe import watchers
from oslo_log import log as logging
from oslo_serialization import jsonutils
from oslo_utils import uuidutils
from taskflow import exceptions as tf_exc
from taskflow.jobs.backends import impl_zookeeper
from taskflow.jobs import base as tf_jobs_base
from taskflow.utils import misc as tf_misc

from nova.orc import coordination
from nova.orc import exception as orc_exc

LOG = logging.getLogger(__name__)

#: suffix TaskFlow gives a job's claim node
LOCK_POSTFIX = impl_zookeeper.ZookeeperJobBoard.LOCK_POSTFIX


def conductor_name(host):
    """The claim owner name of this process: ``host:pid:random``."""
    return '%s:%d:%s' % (host, os.getpid(), uuidutils.generate_uuid()[:8])


class Claim:
    """A job this conductor holds.

    :ivar flow_id: str, the flow detail uuid the job runs
    :ivar token: int, the fencing token (increases with every claim)
    :ivar details: dict, the job details posted with it
    :ivar session: the coordination session id the claim belongs to
        (ZooKeeper), or None
    """

    def __init__(self, job, flow_id, token, details, session=None):
        self.job = job
        self.flow_id = flow_id
        self.token = token
        self.details = details
        self.session = session


class JobBoard:
    """What both boards implement. All methods are thread-safe.

    :param owner: str, this conductor's claim owner name
        (:func:`conductor_name`)
    """

    #: jobs outlive the process that posted them (conductors of other
    #: processes see them): a conductor may adopt a dead one's flows
    durable = False

    def __init__(self, owner):
        self.owner = owner
        #: set when there may be claimable work (a post, a claim released)
        self.changed = threading.Event()

    @contextlib.contextmanager
    def exclusive(self, name):
        """Try to be the only conductor doing ``name`` now (e.g. a scan
        every conductor runs, that one at a time is enough to run); does
        not wait.

        :param name: str
        :returns: a context manager giving True when this conductor holds
            it until the block ends, False when another does
        """
        yield True

    def connect(self, as_conductor=True):
        """Start watching the board.

        :param as_conductor: register this process as a live conductor
            (False for operator tools that only read or mark jobs)
        :raises nova.orc.exception.CoordinationUnavailable:
        """

    def close(self):
        """Stop watching; claims held stay until consumed or the session
        ends."""

    def post(self, flow_id, book, details, ended=None):
        """Post the job of the flow ``flow_id`` of logbook ``book``, unless
        the flow has one: exactly one job per flow, whoever posts it and
        however often (a poster retrying after a lost answer, an adopter,
        ``nova-orc job resume``).

        :param details: JSON-serialisable dict (no secrets: it is stored in
            ZooKeeper); ``flow_id`` is added
        :param ended: ``callable() -> bool``, True when the flow has ended:
            asked when the flow had a job that is gone (consumed), so that
            a poster that was paused since journaling the flow does not
            post a second job for a flow that ran and ended meanwhile
        :returns: True when this call posted the job, False when the flow
            had one already
        :raises nova.orc.exception.CoordinationUnavailable: not posted
            within ``[orc] coordination_outage_timeout``
        """
        raise NotImplementedError()

    def claimable(self):
        """Jobs without a claim: a list of opaque job handles."""
        raise NotImplementedError()

    def job_identity(self, job):
        """``(flow_id, posted_by)`` of a job handle (from its details)."""
        details = self.job_details(job)
        return details.get('flow_id'), details.get('posted_by')

    def job_details(self, job):
        """The details a job was posted with (a dict) of a job handle."""
        raise NotImplementedError()

    def is_alive(self, owner):
        """True while the conductor ``owner`` (a claim owner name) is
        connected to this board."""
        raise NotImplementedError()

    def claim(self, job):
        """Claim ``job`` for this conductor.

        :returns: a :class:`Claim`, or None when another conductor claimed
            it first or it was consumed meanwhile
        """
        raise NotImplementedError()

    def still_owned(self, claim):
        """True while ``claim`` is still this conductor's (its claim node
        exists with the same token, in this conductor's current session).

        :raises nova.orc.exception.CoordinationUnavailable: it cannot be
            told (ZooKeeper unreachable for ``[orc]
            coordination_outage_timeout``)
        """
        raise NotImplementedError()

    def consume(self, claim):
        """Remove the job (its flow ended). Does nothing, with a warning,
        when the claim is no longer this conductor's."""
        raise NotImplementedError()

    def abandon(self, claim):
        """Give the job back to the board (another conductor may claim it).
        Does nothing when the claim is no longer ours."""
        raise NotImplementedError()

    def list_jobs(self):
        """Every job: dicts ``flow_id, details, owner, token`` (owner and
        token None when unclaimed)."""
        raise NotImplementedError()

    def request_abort(self, flow_id, reason):
        """Ask whichever conductor runs (or will run) the job of flow
        ``flow_id`` to abort it: its next task fails with ``JobAborted``
        and the flow reverts. The request stays until the job is consumed.

        :param reason: str, for the fault and the logs
        """
        raise NotImplementedError()

    def abort_requested(self, flow_id):
        """The reason an abort was requested for ``flow_id``, or None."""
        raise NotImplementedError()

    #: ``callable(flow_id, reason)`` set by the orchestrator: called when an
    #: abort is requested while this process may run the job
    on_abort = None


class MemoryJobBoard(JobBoard):
    """In-process board (``memory://``); boards of one process with the same
    URL share their jobs, as conductors share one ZooKeeper."""

    _boards = {}
    _boards_lock = threading.Lock()
    _tokens = itertools.count(1)

    def __init__(self, owner, url='memory://'):
        super().__init__(owner)
        with self._boards_lock:
            self._shared = self._boards.setdefault(
                url, {'jobs': {}, 'lock': threading.Lock(), 'boards': [],
                      'aborts': {}})

    @classmethod
    def reset(cls):
        """Forget every in-process job (tests)."""
        with cls._boards_lock:
            for shared in cls._boards.values():
                shared['jobs'].clear()
                shared['aborts'].clear()

    def connect(self, as_conductor=True):
        if as_conductor:
            with self._boards_lock:
                if self not in self._shared['boards']:
                    self._shared['boards'].append(self)

    def _notify_all(self):
        for board in list(self._shared['boards']):
            board.changed.set()

    def close(self):
        with self._boards_lock:
            if self in self._shared['boards']:
                self._shared['boards'].remove(self)

    def post(self, flow_id, book, details, ended=None):
        details = dict(details, flow_id=flow_id)
        with self._shared['lock']:
            if flow_id in self._shared['jobs']:
                return False
            self._shared['jobs'][flow_id] = {
                'details': details, 'owner': None, 'token': None}
        self._notify_all()
        return True

    def claimable(self):
        with self._shared['lock']:
            return [fid for fid, job in self._shared['jobs'].items()
                    if job['owner'] is None]

    def job_details(self, job):
        with self._shared['lock']:
            record = self._shared['jobs'].get(job) or {'details': {}}
            return dict(record['details'])

    def is_alive(self, owner):
        return any(b.owner == owner for b in list(self._shared['boards']))

    def claim(self, job):
        with self._shared['lock']:
            record = self._shared['jobs'].get(job)
            if record is None or record['owner'] is not None:
                return None
            record['owner'] = self.owner
            record['token'] = next(self._tokens)
            return Claim(job, job, record['token'], dict(record['details']))

    def _owned(self, claim):
        record = self._shared['jobs'].get(claim.flow_id)
        return (record is not None and record['owner'] == self.owner and
                record['token'] == claim.token)

    def still_owned(self, claim):
        with self._shared['lock']:
            return self._owned(claim)

    def consume(self, claim):
        with self._shared['lock']:
            if self._owned(claim):
                del self._shared['jobs'][claim.flow_id]
                self._shared['aborts'].pop(claim.flow_id, None)
                return
        LOG.warning('Not consuming job of flow %s: no longer ours',
                    claim.flow_id)

    def abandon(self, claim):
        with self._shared['lock']:
            if self._owned(claim):
                record = self._shared['jobs'][claim.flow_id]
                record['owner'] = record['token'] = None
        self._notify_all()

    def list_jobs(self):
        with self._shared['lock']:
            return [dict(flow_id=fid, details=dict(job['details']),
                         owner=job['owner'], token=job['token'])
                    for fid, job in sorted(self._shared['jobs'].items())]

    def request_abort(self, flow_id, reason):
        with self._shared['lock']:
            self._shared['aborts'][flow_id] = reason
        for board in list(self._shared['boards']):
            if board.on_abort is not None:
                board.on_abort(flow_id, reason)

    def abort_requested(self, flow_id):
        with self._shared['lock']:
            return self._shared['aborts'].get(flow_id)


class ZooKeeperJobBoard(JobBoard):
    """TaskFlow's ZooKeeper job board on the coordinator's kazoo session.

    :param owner: claim owner name
    :param coordinator: a started
        :class:`nova.orc.coordination.ZooKeeperCoordinator`; the board lives
        at ``<its base>/jobs`` (TaskFlow keeps its trash folder beside it,
        ``<base>/.trash``: one board per chroot)
    """

    durable = True

    @contextlib.contextmanager
    def exclusive(self, name):
        """An ephemeral node ``<chroot>/holders/<name>`` of this
        conductor's session (gone with a dead holder's session), created
        without waiting for a holder; every ZooKeeper call bounded by
        ``[orc] coordination_outage_timeout`` (unreachable: not held); see
        :meth:`JobBoard.exclusive`. (Not ``<chroot>/exclusive/<name>``:
        kazoo's Lock recipe, which earlier releases used there, leaves a
        persistent node at that path.)"""
        path = '%s/holders/%s' % (self.coordinator.base, name)
        try:
            held = self.coordinator.retrying(self._create_exclusive, path)
        except orc_exc.CoordinationUnavailable as e:
            LOG.info('Could not try the %s lock: %s', name, e)
            held = False
        try:
            yield held
        finally:
            if held:
                try:
                    self.coordinator.retrying(self._delete_quietly, path)
                except orc_exc.CoordinationUnavailable as e:
                    # its node goes with our session at the latest
                    LOG.info('Could not release the %s lock: %s', name, e)

    def _create_exclusive(self, path):
        """True when this conductor's session holds the node now: created
        here, or found created by this session (a create whose answer was
        lost and that was asked again, or a release that failed)."""
        wait, client = self.coordinator.wait, self.coordinator.client
        try:
            wait(client.create_async(path, self.owner.encode('utf-8'),
                                     ephemeral=True, makepath=True))
        except kazoo_exc.NodeExistsError:
            try:
                data, stat = wait(client.get_async(path))
            except kazoo_exc.NoNodeError:
                return False  # released meanwhile: next time
            return (data == self.owner.encode('utf-8') and
                    stat.ephemeralOwner == self.coordinator.session_id())
        return True

    def __init__(self, owner, coordinator):
        super().__init__(owner)
        self.coordinator = coordinator
        self.path = coordinator.base + '/jobs'
        #: one ephemeral node per connected conductor (liveness of posters)
        self.conductors_path = coordinator.base + '/conductors'
        #: one node per job an operator asked to abort (data: the reason)
        self.aborts_path = coordinator.base + '/aborts'
        #: one node per flow that has a job (``posted/<flow id>``), created
        #: in one transaction with the job's node: a flow's second post
        #: fails on it (:meth:`post`)
        self.posted_path = coordinator.base + '/posted'
        self._aborts = set()
        #: claim owner names of the live conductors, from a children watch
        #: (None until the watch fired: ask ZooKeeper)
        self._alive = None
        self._board = None
        self._watch = None
        self._unclaimed = set()
        self._lock = threading.Lock()

    def connect(self, as_conductor=True):
        if self._board is not None:
            return
        client = self.coordinator.client
        board = impl_zookeeper.ZookeeperJobBoard(
            'nova-orc', {'path': self.path,
                         # kazoo's server version check needs the 'envi'
                         # four-letter command, off on ZooKeeper 3.5+
                         'check_compatible': False},
            client=client, emit_notifications=False)
        try:
            board.connect()
        except tf_exc.JobFailure as e:
            raise orc_exc.CoordinationUnavailable(
                reason='job board %s: %s' % (self.path, e))
        self._board = board
        self.coordinator.retrying(client.ensure_path, self.aborts_path)
        self.coordinator.retrying(client.ensure_path, self.posted_path)
        if not as_conductor:
            return
        self._register()
        self.coordinator.add_session_listener(self._on_session_change)
        self._watch = watchers.ChildrenWatch(client, self.path,
                                             self._on_children)
        watchers.ChildrenWatch(client, self.conductors_path,
                               self._on_conductors)
        watchers.ChildrenWatch(client, self.aborts_path, self._on_aborts)

    def _register(self):
        """This conductor's liveness node (ephemeral: gone with the
        session); a connection lost meanwhile is waited out within ``[orc]
        coordination_outage_timeout``.

        :raises nova.orc.exception.CoordinationUnavailable: ZooKeeper
            still unreachable then
        """
        self.coordinator.retrying(self._register_once)

    def _register_once(self):
        client = self.coordinator.client
        client.ensure_path(self.conductors_path)
        try:
            client.create('%s/%s' % (self.conductors_path, self.owner),
                          ephemeral=True)
        except kazoo_exc.NodeExistsError:
            pass

    def _on_session_change(self, state):
        if state == 'connected' and self._board is not None:
            # a new session after a lost one: liveness node again
            try:
                self._register()
            except Exception:
                LOG.exception('Could not register conductor %s', self.owner)

    def _on_aborts(self, children):
        """Abort requests: tell the orchestrator about new ones. Runs on
        kazoo's event thread, so it only sends the reads; each answer
        calls the orchestrator (:meth:`_abort_read`), never blocking."""
        new = set(children) - self._aborts
        self._aborts = set(children)
        for flow_id in new:
            self.coordinator.client.get_async(
                '%s/%s' % (self.aborts_path, flow_id)).rawlink(
                    functools.partial(self._abort_read, flow_id))
        return self._board is not None

    def _abort_read(self, flow_id, async_result):
        """The answer to the read of an abort request (kazoo's thread)."""
        try:
            data, _stat = async_result.get(block=False)
        except Exception as e:
            # gone already (its job consumed), or the connection dropped:
            # the run's next claim reads the request again
            LOG.debug('Abort request of flow %s not read: %r', flow_id, e)
            return
        if self.on_abort is not None:
            self.on_abort(flow_id,
                          data.decode('utf-8') or 'aborted by an operator')

    def _on_conductors(self, children):
        """A conductor came or went: jobs it posted may be ours to run."""
        self._alive = frozenset(children)
        self.changed.set()
        return self._board is not None

    def _on_children(self, children):
        """Jobs folder changed: remember which jobs have no claim node and
        wake the conductor when there is one. Runs on kazoo's thread."""
        children = set(children)
        unclaimed = {c for c in children if not c.endswith(LOCK_POSTFIX) and
                     c + LOCK_POSTFIX not in children}
        with self._lock:
            self._unclaimed = unclaimed
        if unclaimed:
            self.changed.set()
        return self._board is not None

    def close(self):
        board, self._board = self._board, None
        if board is not None:
            try:
                # bounded: a conductor stopping during an outage must not
                # hang (its liveness node goes with its session anyway)
                self.coordinator.retrying(
                    self._delete_quietly,
                    '%s/%s' % (self.conductors_path, self.owner))
            except Exception as e:
                LOG.info('Liveness node of %s left to its session: %s',
                         self.owner, e)
            board.close()

    def post(self, flow_id, book, details, ended=None):
        """See :meth:`JobBoard.post`. The job's node is TaskFlow's (a
        sequence node ``<chroot>/jobs/job<N>`` holding TaskFlow's posting,
        which every conductor's TaskFlow board reads); it is created in
        one transaction with ``<chroot>/posted/<flow id>``, so that a
        flow's second post fails as a whole. A lost connection or session
        is waited out (the next session posts) within ``[orc]
        coordination_outage_timeout``; a post whose answer was lost is
        found done when asked again.

        A ``posted`` node left by a job consumed just before its conductor
        died (:meth:`consume` deletes it after the job) is recognised (no
        job on the board names the flow) and replaced, by a compare-and-set
        of its version in the job's transaction (of concurrent posters one
        wins), unless ``ended()`` says the flow ended.
        """
        details = dict(details, flow_id=flow_id)
        job_uuid = uuidutils.generate_uuid()
        posting = tf_jobs_base.format_posting(
            job_uuid, '%s-%s' % (details.get('operation', 'flow'), flow_id),
            book=book, details=details)
        data = tf_misc.binary_encode(jsonutils.dumps(posting))
        return self.coordinator.retrying(self._post_once, flow_id, data,
                                         ended, job_uuid)

    def _post_once(self, flow_id, data, ended=None, job_uuid=None,
                   attempts=3, stale_version=None):
        client = self.coordinator.client
        marker = '%s/%s' % (self.posted_path, flow_id)
        # the marker names the job it was made with: a post asked again
        # after its answer was lost finds its own job (True), not another's
        marker_data = (job_uuid or '').encode('ascii')
        txn = client.transaction()
        if stale_version is None:
            txn.create(marker, marker_data)
        else:
            # a marker that outlived its job is taken over by a
            # compare-and-set of its version in the job's transaction: of
            # posters that all found it stale, one wins (a delete, then a
            # create, would let two of them make a job each)
            txn.set_data(marker, marker_data, version=stale_version)
        txn.create(kazoo_paths.join(
            self.path, impl_zookeeper.ZookeeperJobBoard.JOB_PREFIX), data,
            sequence=True)
        failed = coordination._failed_op(
            self.coordinator.wait(txn.commit_async()))
        if failed is None:
            self.changed.set()
            return True
        index, cause = failed
        replace = None
        if index == 0 and isinstance(cause, (kazoo_exc.NodeExistsError,
                                             kazoo_exc.BadVersionError)):
            try:
                existing, stat = self.coordinator.wait(
                    client.get_async(marker))
            except kazoo_exc.NoNodeError:
                existing, stat = None, None
            if job_uuid and existing == marker_data:
                return True  # ours: the first attempt's answer was lost
            if flow_id in self._flows_with_job():
                LOG.info('Flow %s has its job already: not posted again',
                         flow_id)
                return False
            if ended is not None and ended():
                LOG.info('Flow %s ran and ended: not posted again', flow_id)
                return False
            if stat is not None:
                LOG.warning('Flow %s: its posted marker outlived its job; '
                            'replacing it', flow_id)
                replace = stat.version
        elif isinstance(cause, kazoo_exc.NoNodeError):
            # the board's folders were removed meanwhile (tests, operators),
            # or the stale marker was (a consume): created again
            self.coordinator.wait(client.ensure_path_async(self.posted_path))
            self.coordinator.wait(client.ensure_path_async(self.path))
        if attempts > 1 and isinstance(cause, (kazoo_exc.NodeExistsError,
                                               kazoo_exc.NoNodeError,
                                               kazoo_exc.BadVersionError)):
            return self._post_once(flow_id, data, ended, job_uuid,
                                   attempts - 1, stale_version=replace)
        raise orc_exc.CoordinationUnavailable(
            reason='job board %s: posting flow %s failed: %r' % (
                self.path, flow_id, cause))

    def _flows_with_job(self):
        """The flow ids named by the jobs on the board, read from
        ZooKeeper now (not from TaskFlow's copy, which is empty while its
        board thinks the session lost): one read per job."""
        wait, client = self.coordinator.wait, self.coordinator.client
        prefix = impl_zookeeper.ZookeeperJobBoard.JOB_PREFIX
        flows = set()
        for name in wait(client.get_children_async(self.path)):
            if not name.startswith(prefix) or name.endswith(LOCK_POSTFIX):
                continue
            try:
                data, _stat = wait(client.get_async(
                    '%s/%s' % (self.path, name)))
            except kazoo_exc.NoNodeError:
                continue
            try:
                posting = jsonutils.loads(data)
                flows.add(posting['details']['flow_id'])
            except (ValueError, TypeError, KeyError):
                continue
        return flows

    def claimable(self):
        with self._lock:
            unclaimed = set(self._unclaimed)
        if not unclaimed:
            return []
        jobs = self._known_jobs()
        if not unclaimed <= set(jobs):
            # posted since TaskFlow's board last read the folder (posts
            # are ours, not its): read them now rather than at its watch
            try:
                jobs = self._known_jobs(ensure_fresh=True)
            except tf_exc.JobFailure as e:
                LOG.info('Could not read the new jobs yet: %s', e)
        return [job for name, job in jobs.items() if name in unclaimed]

    def _known_jobs(self, ensure_fresh=False):
        """TaskFlow's board's job objects, by node name: what its
        ``iterjobs`` iterates over, fetched by the same function
        (``ZookeeperJobBoard._fetch_jobs``: its in-memory jobs, the folder
        read again first with ``ensure_fresh``).

        Not ``iterjobs`` itself: its iterator asks ZooKeeper the state of
        every job it yields (``job.state``: a sync and two reads each), so
        a scan cost three requests per job on the board, at every wake of
        the claim loop: O(jobs in flight) per boot. Which jobs are
        unclaimed is known here without asking (the children watch,
        :meth:`_on_children`), and a claim of a job that went meanwhile
        fails in TaskFlow's claim transaction (:meth:`claim`).

        :param ensure_fresh: bool, read the folder's children first
        :returns: dict ``{node name: ZookeeperJob}``
        :raises taskflow.exceptions.JobFailure: ``ensure_fresh`` and the
            folder could not be read
        """
        return {job.path.rsplit('/', 1)[-1]: job
                for job in self._board._fetch_jobs(ensure_fresh=ensure_fresh)}

    def job_details(self, job):
        return dict(job.details)

    def is_alive(self, owner):
        if not owner:
            return False
        alive = self._alive
        if alive is not None:
            # what the watch last saw; a conductor that just went is seen
            # gone at the watch's next event, which wakes the claim loop
            return owner in alive
        try:
            return self.coordinator.client.exists(
                '%s/%s' % (self.conductors_path, owner)) is not None
        except Exception:
            # unsure: do not take another conductor's job
            return True

    def claim(self, job):
        try:
            self._board.claim(job, self.owner)
        except (tf_exc.UnclaimableJob, tf_exc.NotFound):
            return None
        except tf_exc.JobFailure as e:
            LOG.warning('Could not claim job %s: %s', job.uuid, e)
            return None
        # the token is that of a claim node of our session, read while the
        # session is current: a conductor paused (or cut off) while it
        # claimed comes back on a new session and may find the node of the
        # conductor that claimed the job after its old session expired;
        # that node's token is not ours to act with
        session = self.coordinator.session_id()
        token = None
        if session is not None:
            token = self.coordinator.claim_token(job.lock_path,
                                                 session=session)
        if token is None or self.coordinator.session_id() != session:
            LOG.warning('Claim of job %s lost while claiming it (session '
                        'ended): not running it', job.uuid)
            return None
        return Claim(job, job.details['flow_id'], token, dict(job.details),
                     session=session)

    def still_owned(self, claim):
        if self.coordinator.session_id() != claim.session:
            # the claim was an ephemeral node of a session that is gone
            return False
        token = self.coordinator.claim_token(claim.job.lock_path,
                                             session=claim.session)
        return token == claim.token

    def consume(self, claim):
        try:
            self._board.consume(claim.job, self.owner)
        except (tf_exc.JobFailure, tf_exc.NotFound) as e:
            LOG.warning('Not consuming job of flow %s: %s', claim.flow_id, e)
            return
        for delete, path in (
                (self._delete_quietly, '%s/%s' % (self.aborts_path,
                                                  claim.flow_id)),
                (functools.partial(self._delete_marker, claim.job.uuid),
                 '%s/%s' % (self.posted_path, claim.flow_id))):
            try:
                self.coordinator.retrying(delete, path)
            except orc_exc.CoordinationUnavailable as e:
                # a posted marker left behind is replaced by the next post
                # of the flow, an abort request by the next consume
                LOG.warning('Job of flow %s consumed; %s: %s',
                            claim.flow_id, path, e)

    def _delete_marker(self, job_uuid, path):
        """Delete the posted marker ``path`` if it still names the job
        ``job_uuid`` (at the version read): a consume retried after an
        outage must not delete the marker a later post of the flow made
        (its job would then have no marker, and a third post a second
        job)."""
        wait, client = self.coordinator.wait, self.coordinator.client
        try:
            data, stat = wait(client.get_async(path))
        except kazoo_exc.NoNodeError:
            return
        if data not in (job_uuid.encode('ascii'), b''):
            LOG.info('Posted marker %s names another job than the one '
                     'consumed (%s): left to it', path, job_uuid)
            return
        try:
            wait(client.delete_async(path, version=stat.version))
        except (kazoo_exc.NoNodeError, kazoo_exc.BadVersionError):
            pass

    def _delete_quietly(self, path):
        """Delete ``path`` (bounded), if it exists."""
        try:
            self.coordinator.wait(
                self.coordinator.client.delete_async(path))
        except kazoo_exc.NoNodeError:
            pass

    def abandon(self, claim):
        try:
            self._board.abandon(claim.job, self.owner)
        except (tf_exc.JobFailure, tf_exc.NotFound) as e:
            LOG.info('Not abandoning job of flow %s: %s', claim.flow_id, e)

    def list_jobs(self):
        jobs = []
        for job in self._board.iterjobs(ensure_fresh=True):
            owner = self._board.find_owner(job)
            token = self.coordinator.claim_token(job.lock_path) \
                if owner else None
            jobs.append(dict(flow_id=job.details.get('flow_id'),
                             details=dict(job.details), owner=owner,
                             token=token))
        return jobs


    def request_abort(self, flow_id, reason):
        """See :meth:`JobBoard.request_abort`; bounded by ``[orc]
        coordination_outage_timeout``."""
        self.coordinator.retrying(self._request_abort_once, flow_id, reason)

    def _request_abort_once(self, flow_id, reason):
        try:
            self.coordinator.wait(self.coordinator.client.create_async(
                '%s/%s' % (self.aborts_path, flow_id),
                reason.encode('utf-8')))
        except kazoo_exc.NodeExistsError:
            pass

    def abort_requested(self, flow_id):
        """See :meth:`JobBoard.abort_requested`; bounded by ``[orc]
        coordination_outage_timeout``.

        :raises nova.orc.exception.CoordinationUnavailable: it cannot be
            told within the bound
        """
        return self.coordinator.retrying(self._abort_requested_once, flow_id)

    def _abort_requested_once(self, flow_id):
        try:
            data, _stat = self.coordinator.wait(
                self.coordinator.client.get_async(
                    '%s/%s' % (self.aborts_path, flow_id)))
        except kazoo_exc.NoNodeError:
            return None
        return data.decode('utf-8') or 'aborted by an operator'


def board_from_coordinator(coordinator, owner, url):
    """The board matching the coordinator's backend (not connected).

    :param url: ``[orc] coordination_url`` (memory boards are shared by URL)
    """
    if isinstance(coordinator, coordination.ZooKeeperCoordinator):
        return ZooKeeperJobBoard(owner, coordinator)
    return MemoryJobBoard(owner, url)
