"""Locks on instances and resources: ZooKeeper through kazoo, or in-process.

Architecture (doc/source/architecture.rst) section 4. A *lock* belongs to a job (one flow run, identified by its
flow detail uuid, the ``owner``): it is a persistent node
``<base>/locks/<kind>/<id>`` holding the owner, so that it survives the death
of the conductor that took it and another conductor can resume the job.
Multi-resource locks are taken all-or-nothing in one ZooKeeper transaction,
so two flows can never deadlock on each other.

On ZooKeeper a lock node carries a child naming its owner, created with it,
so that a release deletes only the very node its owner created (see
:class:`ZooKeeperCoordinator`). The coordinator also reports on this
process's ZooKeeper session (:meth:`Coordinator.add_session_listener`) and
lends its kazoo client to TaskFlow's ZooKeeper job board, whose ephemeral
claims live and die with that session; a claim's fencing token is its
node's creation zxid (:meth:`Coordinator.claim_token`).

``memory://`` is the same contract inside one process (all-in-one default,
unit tests); every :class:`MemoryCoordinator` of one process with the same URL
shares one table, like conductors sharing one ZooKeeper.

Resources are ``(kind, id)`` pairs of strings, e.g. ``('instance', uuid)``,
``('port', port_id)``, ``('volume', volume_id)``.
"""

import json
import os
import queue
import random
import threading
import time
import urllib.parse

from kazoo import client as kazoo_client
from kazoo import exceptions as kazoo_exc
from kazoo.handlers import threading as kazoo_threading
from kazoo.protocol import states as kazoo_states
from kazoo import retry as kazoo_retry
from oslo_log import log as logging
from oslo_utils import excutils
from oslo_utils import timeutils

import nova.conf
from nova.orc import conf as orc_conf
from nova.orc import exception as orc_exc
from nova import utils

CONF = nova.conf.CONF
LOG = logging.getLogger(__name__)

#: seconds between two attempts while waiting for a lock (bounded by
#: ``[orc] lock_wait_timeout``)
LOCK_POLL_INTERVAL = 0.1

#: seconds a ZooKeeper call is always given, even with ``[orc]
#: coordination_outage_timeout = 0`` (a live ZooKeeper answers in ~1 ms)
MIN_OPERATION_WAIT = 1.0


#: fraction of the session timeout a lease is shortened by: the margin
#: that covers the time from a lease check to the request it guards and a
#: server whose clock runs a little fast (see :meth:`Coordinator.hold_lease`)
LEASE_MARGIN = 1.0 / 3
#: how often, as a fraction of the session timeout, the lease is renewed
#: (a ZooKeeper ``sync`` of the chroot, through the leader: ~1 ms on
#: loopback)
LEASE_RENEW_EVERY = 1.0 / 4

#: the lease's clock: monotonic, so it moves while the process is paused
#: (SIGSTOP) and a check made on waking finds the lease run out
_clock = time.monotonic


def _lock_record(owner, conductor):
    return {'owner': owner, 'conductor': conductor,
            'since': timeutils.utcnow().isoformat()}


class Coordinator:
    """The locking contract both backends implement.

    All methods are thread-safe. ``owner`` is a string (the flow detail uuid);
    ``resources`` an iterable of ``(kind, id)`` string pairs.
    """

    #: the started :class:`kazoo.client.KazooClient` of the ZooKeeper
    #: backend (None before :meth:`start`, after :meth:`stop`, and always
    #: for ``memory://``). Build TaskFlow's ZooKeeper job board on it
    #: (``client=coordinator.client``) so that job claims share the session
    #: :meth:`add_session_listener` reports on.
    client = None

    def __init__(self, conductor_id, stale_owner=None):
        #: identifies this process in lock records (``CONF.host``)
        self.conductor_id = conductor_id
        #: ``callable(owner) -> bool``: True when ``owner``'s flow has ended
        #: and its locks are leftovers (its release was lost, e.g. in a
        #: ZooKeeper outage); such locks are broken instead of blocking
        self.stale_owner = stale_owner
        self._session_listeners = []

    def start(self):
        """Connect. :raises CoordinationUnavailable: backend unreachable."""

    def stop(self):
        """Disconnect; locks stay (they belong to jobs, not processes)."""

    def add_session_listener(self, callback):
        """Be told when this process's coordination session changes.

        ``callback(state)`` is called with one of:

        * ``'suspended'``: the connection to ZooKeeper is lost; the session
          (and the ephemeral nodes of this process, e.g. job claims) may
          still be alive. Do not start anything that needs them.
        * ``'lost'``: the session expired (or was closed by the server):
          every ephemeral node of this process is gone, so are its job
          claims; another conductor may already have claimed those jobs.
        * ``'connected'``: connected again. After ``'suspended'`` alone it
          is the same session; after ``'lost'`` it is a NEW session
          (:meth:`session_id` changed) holding no claims.

        Callbacks run on a thread of the coordinator's own, one at a time
        and in the order of the events, never on kazoo's connection thread:
        a slow or blocking callback delays the callbacks after it, not
        ZooKeeper traffic. An exception in a callback is logged and
        ignored. Callbacks added before :meth:`start` take effect at start;
        the first connection and :meth:`stop` are not reported.
        ``memory://`` never calls them (an in-process session cannot be
        lost).

        :param callback: ``callable(str) -> None``
        """
        self._session_listeners.append(callback)

    def session_id(self):
        """This process's coordination session: an int, or None while
        there is none (ZooKeeper: the kazoo session id, None before start,
        after stop and while disconnected; ``memory://``: a constant of
        this process)."""
        raise NotImplementedError()

    def hold_lease(self, session):
        """Return only while ZooKeeper surely still holds ``session``, and
        with it every ephemeral node (job claim) of that session.

        The check made right before every conductor-side side effect of a
        flow (:mod:`nova.orc.fencing`). Cheap when the lease is fresh: an
        in-memory comparison on the monotonic clock. The lease is void
        from the moment kazoo reports the connection ``SUSPENDED`` or the
        session ``LOST``, and once ``[orc] zookeeper_session_timeout`` x
        (1 - :data:`LEASE_MARGIN`) seconds have passed since the send time
        of the last request the server answered on this session (ZooKeeper
        expires a session no earlier than a full timeout after it last
        heard from it). A process that was paused (SIGSTOP, a frozen VM)
        finds its lease void on waking, before kazoo has even noticed.
        A void lease of a session still alive (a short disconnection) is
        renewed here by one request, waited out within ``[orc]
        coordination_outage_timeout``.

        :param session: int, the session a claim belongs to (its
            :meth:`session_id` when claimed); None: the current session
        :raises nova.orc.exception.SessionLost: that session ended (or is
            not the current one): its claims may be another conductor's now
        :raises nova.orc.exception.CoordinationUnavailable: it cannot be
            told within ``[orc] coordination_outage_timeout`` (ZooKeeper
            unreachable)
        """

    def claim_token(self, path, session=None):
        """The fencing token of a job claim: the creation zxid
        (``stat.czxid``, an int) of the ZooKeeper node ``path``, e.g. a
        TaskFlow job's ``job.lock_path``. Every later claim of the job has a
        larger token, so host-side steps can reject an older claimer.

        :param path: str, absolute ZooKeeper path
        :param session: int: only a claim node of that session (its
            ``ephemeralOwner``) counts; another's is taken as no claim.
            None: whoever owns it (an operator's listing)
        :returns: int, or None when the node does not exist (claim gone)
            or belongs to another session than ``session``
        :raises nova.orc.exception.CoordinationUnavailable: ZooKeeper
            unreachable for ``[orc] coordination_outage_timeout``
        :raises NotImplementedError: ``memory://`` (no nodes, no claims)
        """
        raise NotImplementedError()

    def acquire(self, owner, resources, timeout=None):
        """Lock every resource for ``owner``, all or nothing.

        Resources already held by ``owner`` count as acquired (a resumed
        flow re-runs its lock task).

        :param owner: str, the job (flow detail uuid)
        :param resources: list of ``(kind, id)``
        :param timeout: seconds to wait while another owner holds one of
            them; ``None`` uses ``[orc] lock_wait_timeout``
        :raises nova.orc.exception.ResourceLocked: a resource is still held
            by another owner when the wait ends; nothing was locked
        :raises nova.orc.exception.CoordinationUnavailable: ZooKeeper
            unreachable for ``[orc] coordination_outage_timeout`` (a lock
            request sent before the outage may still take effect: release
            the resources once ZooKeeper is back, as the lock task's revert
            does)
        """
        resources = sorted(set((str(k), str(i)) for k, i in resources))
        if timeout is None:
            timeout = CONF.orc.lock_wait_timeout
        deadline = time.monotonic() + timeout
        while True:
            conflict = self._try_acquire(owner, resources)
            if conflict is None:
                LOG.debug('Flow %s locked %s', owner, resources)
                return
            kind, rid, record = conflict
            if self.stale_owner is not None and self.stale_owner(
                    record.get('owner')):
                LOG.warning('Breaking %s %s lock of ended flow %s',
                            kind, rid, record.get('owner'))
                self.release(record.get('owner'), [(kind, rid)])
                continue
            if time.monotonic() >= deadline:
                kind, rid, record = conflict
                raise orc_exc.ResourceLocked(
                    kind=kind, resource_id=rid,
                    holder=record.get('owner', '?'),
                    conductor=record.get('conductor', '?'))
            time.sleep(LOCK_POLL_INTERVAL)

    def release(self, owner, resources):
        """Unlock the resources ``owner`` holds; others' locks are untouched.

        Idempotent: releasing what is not held is a no-op. A lock that
        another flow took after this one's was broken (see
        :attr:`stale_owner`) is never deleted, even if that happens while
        this release runs.

        :param owner: str, the job (flow detail uuid)
        :param resources: list of ``(kind, id)``
        :raises nova.orc.exception.CoordinationUnavailable: ZooKeeper did
            not answer within ``[orc] coordination_outage_timeout`` (at
            least :data:`MIN_OPERATION_WAIT`; a hung ZooKeeper included).
            The locks then stay: callers that must not lose a flow's result
            catch this, and a later :meth:`acquire` breaks the leftovers
            once :attr:`stale_owner` says their flow ended. A release that
            raised may still take effect when ZooKeeper comes back.
        """
        raise NotImplementedError()

    def holder(self, kind, resource_id):
        """The lock record (a dict: ``owner``, ``conductor``, ``since`` and
        any other field the lock node holds) or None when unlocked."""
        raise NotImplementedError()

    def list_locks(self):
        """Every lock: a list of dicts holding every field of the lock
        node's record (``owner``, ``conductor``, ``since`` today; fields a
        later release adds are passed through unchanged) plus ``kind`` and
        ``id`` (from the lock's place), sorted by kind then id."""
        raise NotImplementedError()

    def _try_acquire(self, owner, resources):
        """Returns None on success or ``(kind, id, record)`` of a conflict."""
        raise NotImplementedError()


def _locks_entry(kind, rid, record):
    entry = dict(record)
    entry.update(kind=kind, id=rid)
    return entry


_MEMORY_SESSIONS = {}


class MemoryCoordinator(Coordinator):
    """In-process locks (``memory://``), shared by URL within the process."""

    _tables = {}
    _tables_lock = threading.Lock()

    def __init__(self, conductor_id, url='memory://', stale_owner=None):
        super().__init__(conductor_id, stale_owner)
        with self._tables_lock:
            self._locks = self._tables.setdefault(url, {})
        self._mutex = threading.Lock()

    @classmethod
    def reset(cls):
        """Forget every in-process lock (tests)."""
        with cls._tables_lock:
            for table in cls._tables.values():
                table.clear()

    def session_id(self):
        """A random int drawn once per process (a forked worker draws its
        own); see :meth:`Coordinator.session_id`."""
        pid = os.getpid()
        with self._tables_lock:
            return _MEMORY_SESSIONS.setdefault(
                pid, random.SystemRandom().getrandbits(63))

    def hold_lease(self, session):
        """Always held: an in-process session cannot be lost; see
        :meth:`Coordinator.hold_lease`."""

    def claim_token(self, path, session=None):
        """Not available: ``memory://`` has no job claims (raises
        NotImplementedError); see :meth:`Coordinator.claim_token`."""
        raise NotImplementedError('memory:// coordination has no claim nodes')

    def _try_acquire(self, owner, resources):
        with self._tables_lock:
            for kind, rid in resources:
                record = self._locks.get((kind, rid))
                if record is not None and record['owner'] != owner:
                    return kind, rid, dict(record)
            for kind, rid in resources:
                self._locks.setdefault(
                    (kind, rid), _lock_record(owner, self.conductor_id))
        return None

    def release(self, owner, resources):
        with self._tables_lock:
            for kind, rid in resources:
                record = self._locks.get((str(kind), str(rid)))
                if record is not None and record['owner'] == owner:
                    del self._locks[(str(kind), str(rid))]

    def holder(self, kind, resource_id):
        with self._tables_lock:
            record = self._locks.get((kind, resource_id))
            return dict(record) if record else None

    def list_locks(self):
        with self._tables_lock:
            return [_locks_entry(k, i, r)
                    for (k, i), r in sorted(self._locks.items())]


#: kazoo connection states -> what :meth:`Coordinator.add_session_listener`
#: callbacks receive
_SESSION_STATES = {
    kazoo_states.KazooState.SUSPENDED: 'suspended',
    kazoo_states.KazooState.LOST: 'lost',
    kazoo_states.KazooState.CONNECTED: 'connected',
}


def _failed_op(results):
    """The ``(index, exception)`` of the operation that made a ZooKeeper
    transaction fail, or None when it committed.

    A failed (all-or-nothing) transaction reports an exception for every
    operation: ``RolledBackError`` before the failing one,
    ``RuntimeInconsistency`` after it (kazoo 2.11, ZooKeeper 3.8). Neither
    is the cause; when no other exception is there (never seen) the first
    is returned.
    """
    errors = [(i, r) for i, r in enumerate(results)
              if isinstance(r, Exception)]
    for index, error in errors:
        if not isinstance(error, (kazoo_exc.RolledBackError,
                                  kazoo_exc.RuntimeInconsistency)):
            return index, error
    return errors[0] if errors else None


class ZooKeeperCoordinator(Coordinator):
    """Locks as persistent znodes under ``<base>/locks``, through kazoo.

    ``zookeeper://h1:2181,h2:2181/nova`` connects to that ensemble and keeps
    everything under ``/nova`` (default ``/nova-orc``). The kazoo handler
    follows Nova's concurrency mode (threading, or eventlet when Nova runs
    monkey-patched).

    Layout under ``<base>``:

    * ``locks/<kind>/<id>``: a lock, persistent, JSON ``{owner, conductor,
      since}``, with one child ``owner-<owner>`` (the *owner marker*)
      created in the same transaction. A release deletes marker and node in
      one transaction, the node at the data version it read: if the lock
      was broken and taken by another flow in between, the marker is
      missing and nothing is deleted. (The version alone cannot tell:
      every lock node is at version 0.) Lock nodes without a marker
      (written before markers existed) are deleted by version alone.
    * ``jobs``: left to TaskFlow's ZooKeeper job board, which also uses
      its sibling ``.trash`` (see :attr:`Coordinator.client`).

    Every call returns or raises within ``[orc] coordination_outage_timeout``
    (at least :data:`MIN_OPERATION_WAIT`), whether ZooKeeper is down or
    hangs.
    """

    def __init__(self, conductor_id, url, stale_owner=None):
        super().__init__(conductor_id, stale_owner)
        parsed = urllib.parse.urlparse(url)
        self.hosts = parsed.netloc
        self.base = parsed.path.rstrip('/') or '/nova-orc'
        self.client = None
        self._sleep = None
        self._timeout_exception = None
        self._known_parents = set()
        # per calling thread: the monotonic deadline of the current call
        self._local = threading.local()
        # session states for the notifier thread (None: not started)
        self._events = None
        # the lease (see hold_lease): the session last heard from, the
        # monotonic time until which it surely lives, an epoch bumped by
        # every suspension or loss (a renewal sent before it renews
        # nothing) and the sessions this process lost
        self._lease_lock = threading.Lock()
        self._lease_session = None
        self._lease_until = None
        self._lease_epoch = 0
        self._ended_sessions = set()
        self._renewer_stop = None

    def start(self):
        if self.client is not None:
            return
        if utils.concurrency_mode_threading():
            handler = kazoo_threading.SequentialThreadingHandler()
        else:
            from kazoo.handlers import eventlet as kazoo_eventlet
            handler = kazoo_eventlet.SequentialEventletHandler()
        self._sleep = handler.sleep_func
        self._timeout_exception = handler.timeout_exception
        client = kazoo_client.KazooClient(
            hosts=self.hosts, timeout=CONF.orc.zookeeper_session_timeout,
            handler=handler,
            # reconnect for as long as it takes; operations wait within
            # [orc] coordination_outage_timeout (see _retrying)
            connection_retry={'max_tries': -1, 'max_delay': 5,
                              'sleep_func': handler.sleep_func})
        try:
            client.start(timeout=CONF.orc.zookeeper_connect_timeout)
        except Exception as e:
            client.close()
            raise orc_exc.CoordinationUnavailable(
                reason='ZooKeeper %s: %s' % (self.hosts, e))
        self.client = client
        self._start_notifier()
        self._start_renewer()
        try:
            self._retrying(self._ensure_path, self.base + '/locks')
        except Exception:
            with excutils.save_and_reraise_exception():
                self.stop()
        LOG.info('nova-orc coordination: ZooKeeper %s%s', self.hosts,
                 self.base)

    def stop(self):
        client, self.client = self.client, None
        if client is None:
            return
        # our own stop is no lost session: stop listening first
        client.remove_listener(self._on_state)
        if self._renewer_stop is not None:
            self._renewer_stop.set()
            self._renewer_stop = None
        with self._lease_lock:
            self._lease_until = None
        events, self._events = self._events, None
        try:
            client.stop()
            client.close()
        finally:
            if events is not None:
                events.put(None)

    def session_id(self):
        client = self.client
        client_id = client.client_id if client is not None else None
        return client_id[0] if client_id else None

    def claim_token(self, path, session=None):
        self._check_started()
        stat = self._retrying(self._exists, path)
        if stat is None:
            return None
        if session is not None and stat.ephemeralOwner != session:
            return None
        return stat.czxid

    # session listeners

    def _start_notifier(self):
        events = queue.Queue()
        self._events = events
        threading.Thread(target=self._notify, args=(events,), daemon=True,
                         name='nova-orc-coordination-session').start()
        self.client.add_listener(self._on_state)
        state = self.client.state
        if state != kazoo_states.KazooState.CONNECTED:
            # it changed before the listener was in place
            self._on_state(state)

    def _on_state(self, state):
        """kazoo's state listener: runs on kazoo's connection thread, so
        it only voids the lease (at once: nothing may act on a claim from
        now on) and queues the event for :meth:`_notify`."""
        if state in (kazoo_states.KazooState.SUSPENDED,
                     kazoo_states.KazooState.LOST):
            with self._lease_lock:
                self._lease_epoch += 1
                self._lease_until = None
                if (state == kazoo_states.KazooState.LOST and
                        self._lease_session is not None):
                    self._ended_sessions.add(self._lease_session)
                    self._lease_session = None
        events = self._events
        name = _SESSION_STATES.get(state)
        if events is not None and name is not None:
            events.put(name)

    def _notify(self, events):
        """The notifier thread: calls the session listeners, one event at
        a time, until :meth:`stop` queues None."""
        while True:
            state = events.get()
            if state is None:
                return
            if state == 'connected':
                LOG.info('ZooKeeper %s: session %s connected', self.hosts,
                         self.session_id())
            else:
                LOG.warning('ZooKeeper %s: session %s', self.hosts, state)
            for callback in list(self._session_listeners):
                try:
                    callback(state)
                except Exception:
                    LOG.exception('Coordination session listener %r failed '
                                  'on %s', callback, state)

    # the lease

    def _start_renewer(self):
        """A thread renewing the lease every :data:`LEASE_RENEW_EVERY` x
        the session timeout, so that :meth:`hold_lease` finds it fresh."""
        stop = threading.Event()
        self._renewer_stop = stop
        self._renew_lease()
        period = CONF.orc.zookeeper_session_timeout * LEASE_RENEW_EVERY

        def renew():
            while not stop.wait(period):
                self._renew_lease()
        threading.Thread(target=renew, daemon=True,
                         name='nova-orc-coordination-lease').start()

    def _renew_lease(self, deadline=None):
        """One request on the current session (a ``sync``, which the
        ensemble's leader answers, so a follower cut off from the quorum
        cannot renew it); when it is answered, the lease lasts until the
        request's *send* time plus the session timeout less the margin. A
        suspension or loss while it was in flight renews nothing.

        :param deadline: monotonic time to wait for the answer until
            (default: one session timeout)
        :returns: True when the lease was renewed
        """
        client = self.client
        session = self.session_id()
        if client is None or session is None or not client.connected:
            return False
        timeout = CONF.orc.zookeeper_session_timeout
        with self._lease_lock:
            if session in self._ended_sessions:
                return False
            epoch = self._lease_epoch
        sent = _clock()
        wait = timeout if deadline is None else min(timeout, deadline - sent)
        if wait <= 0:
            return False
        try:
            # sync, not a plain read: a follower cut off from the quorum
            # still answers reads until it notices (syncLimit ticks), but
            # a sync goes through the leader, which holds the session
            client.sync_async(self.base).get(timeout=wait)
        except Exception as e:
            LOG.debug('Lease of session %s not renewed: %r', session, e)
            return False
        with self._lease_lock:
            if self._lease_epoch != epoch or self.session_id() != session:
                return False
            until = sent + timeout * (1 - LEASE_MARGIN)
            if self._lease_session != session or self._lease_until is None \
                    or until > self._lease_until:
                self._lease_until = until
            self._lease_session = session
        return True

    def hold_lease(self, session):
        """See :meth:`Coordinator.hold_lease`."""
        self._check_started()
        bound = max(CONF.orc.coordination_outage_timeout, MIN_OPERATION_WAIT)
        deadline = None
        while True:
            now = _clock()
            current = self.session_id()
            wanted = current if session is None else session
            with self._lease_lock:
                if wanted is not None and wanted in self._ended_sessions:
                    raise orc_exc.SessionLost(
                        session=wanted, reason='expired, or closed by '
                        'ZooKeeper %s' % self.hosts)
                held = (wanted is not None and
                        self._lease_session == wanted and
                        self._lease_until is not None and
                        now < self._lease_until)
            if (current is not None and wanted is not None and
                    current != wanted):
                raise orc_exc.SessionLost(
                    session=wanted, reason='replaced by session %s' % current)
            if held:
                return
            if deadline is None:
                deadline = now + bound
                LOG.info('Lease of ZooKeeper session %s void: renewing it '
                         'before acting (at most %.0f s)', wanted, bound)
            elif now >= deadline:
                raise orc_exc.CoordinationUnavailable(
                    reason='ZooKeeper %s: the lease of session %s could not '
                    'be renewed within %.1f s' % (self.hosts, wanted, bound))
            if not self._renew_lease(deadline):
                self._sleep(min(0.1, max(0.0, deadline - _clock())))

    # bounded calls

    def _wait(self, async_result):
        """The result of a kazoo asynchronous call, within a bound.

        kazoo's synchronous calls wait without limit while the connection
        is suspended or ZooKeeper hangs; this waits at most the session
        timeout and at most until the deadline of the current
        :meth:`_retrying` call, then raises ``OperationTimeoutError``,
        which :meth:`_retrying` retries until its deadline.
        """
        timeout = CONF.orc.zookeeper_session_timeout
        deadline = getattr(self._local, 'deadline', None)
        if deadline is not None:
            timeout = min(timeout, deadline - time.monotonic())
        if timeout <= 0:
            raise kazoo_exc.OperationTimeoutError()
        try:
            return async_result.get(timeout=timeout)
        except self._timeout_exception:
            raise kazoo_exc.OperationTimeoutError()

    def wait(self, async_result):
        """The result of a kazoo asynchronous call, within the bound of the
        :meth:`retrying` call it is made in (for its ``func``)."""
        return self._wait(async_result)

    def retrying(self, func, *args):
        """``func(*args)`` waited out through a ZooKeeper outage, for the
        other ZooKeeper users of this session (the job board): the bound and
        errors of :meth:`_retrying`.

        :raises nova.orc.exception.CoordinationUnavailable: still
            unreachable at ``[orc] coordination_outage_timeout``
        """
        return self._retrying(func, *args)

    def _retrying(self, func, *args):
        """``func(*args)`` retried while ZooKeeper is unreachable; the
        whole call (retries and every request ``func`` makes through
        :meth:`_wait`) ends within ``[orc] coordination_outage_timeout``
        seconds (at least :data:`MIN_OPERATION_WAIT`).

        :raises nova.orc.exception.CoordinationUnavailable: still
            unreachable (or not answering) at the deadline
        """
        bound = max(CONF.orc.coordination_outage_timeout, MIN_OPERATION_WAIT)
        outer = getattr(self._local, 'deadline', None)
        deadline = time.monotonic() + bound
        if outer is not None:
            deadline = min(deadline, outer)
        retry = kazoo_retry.KazooRetry(
            max_tries=-1, delay=0.1, max_delay=2,
            deadline=deadline - time.monotonic(),
            ignore_expire=True, sleep_func=self._sleep)

        def attempt():
            client = self.client
            if client is None:
                raise orc_exc.CoordinationUnavailable(
                    reason='coordinator stopped')
            if time.monotonic() >= deadline:
                raise kazoo_retry.RetryFailedError(
                    'no answer within %.1f s' % bound)
            if not client.connected:
                # suspended: no request would be answered before the
                # reconnection; let the retry wait with backoff
                raise kazoo_exc.ConnectionLoss()
            return func(*args)
        self._local.deadline = deadline
        try:
            return retry(attempt)
        except (kazoo_retry.RetryFailedError, kazoo_exc.ConnectionLoss,
                kazoo_exc.ConnectionClosedError,
                kazoo_exc.SessionExpiredError,
                kazoo_exc.OperationTimeoutError) as e:
            raise orc_exc.CoordinationUnavailable(
                reason='ZooKeeper %s: %s' % (
                    self.hosts, str(e) or e.__class__.__name__))
        finally:
            self._local.deadline = outer

    # locks

    def acquire(self, owner, resources, timeout=None):
        self._check_started()
        return super().acquire(owner, resources, timeout=timeout)

    def _check_started(self):
        if self.client is None:
            raise orc_exc.CoordinationUnavailable(
                reason='coordinator not started')

    def _path(self, kind, rid):
        return '%s/locks/%s/%s' % (self.base, kind, rid)

    @staticmethod
    def _marker(path, owner):
        """The owner marker (a child) of lock node ``path``."""
        return '%s/owner-%s' % (path, urllib.parse.quote(owner, safe=''))

    def _ensure_path(self, path):
        self._wait(self.client.ensure_path_async(path))

    def _ensure_parent(self, kind):
        if kind not in self._known_parents:
            self._ensure_path('%s/locks/%s' % (self.base, kind))
            self._known_parents.add(kind)

    def _exists(self, path):
        return self._wait(self.client.exists_async(path))

    def _read(self, path):
        """``(record, stat)`` of a lock node, ``(None, None)`` if absent; a
        record that is not a JSON object reads as ``{'owner': '?',
        'data': <its text>}``."""
        try:
            data, stat = self._wait(self.client.get_async(path))
        except kazoo_exc.NoNodeError:
            return None, None
        try:
            record = json.loads(data.decode('utf-8'))
        except ValueError:
            record = None
        if not isinstance(record, dict):
            record = {'owner': '?', 'data': data.decode('utf-8', 'replace')}
        return record, stat

    def _try_acquire(self, owner, resources):
        return self._retrying(self._try_acquire_once, owner, resources)

    def _try_acquire_once(self, owner, resources):
        # again from the reads whenever the transaction fails on a node
        # that changed since they were made
        while True:
            wanted = []
            for kind, rid in resources:
                self._ensure_parent(kind)
                record, _stat = self._read(self._path(kind, rid))
                if record is None:
                    wanted.append((kind, rid))
                elif record.get('owner') != owner:
                    return kind, rid, record
            if not wanted:
                return None
            data = json.dumps(_lock_record(owner, self.conductor_id)).encode()
            txn = self.client.transaction()
            op_resources = []
            for kind, rid in wanted:
                path = self._path(kind, rid)
                txn.create(path, data)
                txn.create(self._marker(path, owner))
                op_resources += [(kind, rid)] * 2
            failed = _failed_op(self._wait(txn.commit_async()))
            if failed is None:
                return None
            index, cause = failed
            kind, rid = op_resources[index]
            if isinstance(cause, kazoo_exc.NodeExistsError):
                # locked since the read: by another owner (a conflict), by
                # this one (a flow resumed twice), or released again
                record, _stat = self._read(self._path(kind, rid))
                if record is not None and record.get('owner') != owner:
                    return kind, rid, record
                continue
            if isinstance(cause, kazoo_exc.NoNodeError):
                # <base>/locks/<kind> was removed since we made it
                self._known_parents.discard(kind)
                continue
            raise orc_exc.CoordinationUnavailable(
                reason='ZooKeeper %s: locking %s %s failed: %r' % (
                    self.hosts, kind, rid, cause))

    def release(self, owner, resources):
        """See :meth:`Coordinator.release`."""
        self._check_started()
        self._retrying(self._release_once, owner,
                       [(str(k), str(i)) for k, i in resources])

    def _release_once(self, owner, resources):
        held = []
        for kind, rid in resources:
            path = self._path(kind, rid)
            record, stat = self._read(path)
            if record is not None and record.get('owner') == owner:
                held.append((path, stat))
        if not held or self._delete_held(owner, held) is None:
            return
        # one of them changed since the read: each on its own, each only
        # if it is still the node read
        for path, stat in held:
            failed = self._delete_held(owner, [(path, stat)])
            if failed is None:
                continue
            _index, cause = failed
            if not isinstance(cause, (kazoo_exc.NoNodeError,
                                      kazoo_exc.BadVersionError,
                                      kazoo_exc.NotEmptyError)):
                raise orc_exc.CoordinationUnavailable(
                    reason='ZooKeeper %s: unlocking %s failed: %r' % (
                        self.hosts, path, cause))
            LOG.info('Lock %s is no longer held by flow %s (%s): left as '
                     'it is', path, owner, cause.__class__.__name__)

    def _delete_held(self, owner, held):
        """Delete lock nodes as read (``held``: ``[(path, stat)]``) in one
        transaction; returns :func:`_failed_op` of it."""
        txn = self.client.transaction()
        for path, stat in held:
            if stat.numChildren:
                txn.delete(self._marker(path, owner))
            txn.delete(path, version=stat.version)
        return _failed_op(self._wait(txn.commit_async()))

    def holder(self, kind, resource_id):
        self._check_started()
        record, _stat = self._retrying(self._read,
                                       self._path(kind, resource_id))
        return record

    def list_locks(self):
        self._check_started()
        return self._retrying(self._list_locks_once)

    def _list_locks_once(self):
        locks = []
        root = self.base + '/locks'
        for kind in sorted(self._wait(self.client.get_children_async(root))):
            for rid in sorted(self._wait(self.client.get_children_async(
                    root + '/' + kind))):
                record, _stat = self._read(self._path(kind, rid))
                if record is not None:
                    locks.append(_locks_entry(kind, rid, record))
        return locks


def coordinator_from_conf(conf=CONF, conductor_id=None, stale_owner=None):
    """Build (not start) the coordinator ``[orc] coordination_url`` names.

    :param stale_owner: see :attr:`Coordinator.stale_owner`
    :raises oslo_config.cfg.ConfigFileValueError: unknown scheme
    """
    orc_conf.validate(conf)
    url = conf.orc.coordination_url
    conductor_id = conductor_id or conf.host
    if url.startswith('zookeeper://'):
        return ZooKeeperCoordinator(conductor_id, url, stale_owner)
    return MemoryCoordinator(conductor_id, url, stale_owner)
