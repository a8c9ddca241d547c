"""Errors raised by nova-orc, as Nova exceptions (``msg_fmt`` and HTTP code).

They subclass ``nova.exception.NovaException`` so that they travel over
oslo.messaging like Nova's own (the RPC layer re-raises them on the caller
side) and land in instance faults with a readable message.
"""

from nova import exception
from nova.i18n import _


class ResourceLocked(exception.NovaException):
    """A resource is locked by another flow (HTTP 409 semantics).

    Raised by :meth:`nova.orc.coordination.Coordinator.acquire` when one of
    the requested resources is held by a different owner and
    ``[orc] lock_wait_timeout`` expired (or is 0).
    """
    msg_fmt = _('%(kind)s %(resource_id)s is locked by flow %(holder)s '
                '(conductor %(conductor)s); try again when that operation '
                'has finished')
    code = 409


class CoordinationUnavailable(exception.NovaException):
    """The coordination backend (ZooKeeper) cannot be reached (HTTP 503)."""
    msg_fmt = _('Coordination backend unavailable: %(reason)s')
    code = 503


class StaleFencingToken(exception.NovaException):
    """A host-side step was called with an out-dated claim token.

    Raised by the compute orc endpoint when a conductor that lost its job
    claim keeps acting (architecture section 4, fencing).
    """
    msg_fmt = _('Instance %(instance_uuid)s: fencing token %(token)s is older '
                'than %(latest)s; the caller no longer owns this job')
    code = 409


class StepUndone(exception.NovaException):
    """A host-side step arrived after its flow undid it on this host.

    Raised by the compute orc endpoint for a late copy of a forward step
    (a call the conductor gave up on, delivered after the step's undo ran
    here with the same or a greater token): doing it now would leave work
    nobody undoes, on a host the flow has left.
    """
    msg_fmt = _('Instance %(instance_uuid)s: step %(atom)s of flow '
                '%(flow_id)s on node %(node)s was undone here with token '
                '%(undone)s; refusing a late call with token %(token)s')
    code = 409


class BuildRequestGone(exception.NovaException):
    """The build request was deleted (server deleted while scheduling).

    Mirrors the ``BuildRequestNotFound`` branch of stock
    ``ComputeTaskManager.schedule_and_build_instances``: nothing is left to
    build, the flow reverts its scheduling and stops.
    """
    msg_fmt = _('Build request of instance %(instance_uuid)s was deleted '
                'before the instance was created; nothing to build')


class JobAborted(exception.NovaException):
    """A job is not going on: the flow reverts to stock's end state.

    Raised by the first task a job would start after it was aborted: too
    many automatic resumes (``[orc] max_resumes``), a flow version this
    conductor cannot resume, secrets that cannot be recovered, or an
    operator's ``nova-orc job abort``.
    """
    msg_fmt = _('Flow %(flow_id)s aborted: %(reason)s')


class ClaimLost(exception.NovaException):
    """The job's claim is no longer this conductor's (its session ended:
    another conductor may run the flow now), so the step refused to act on
    a system that cannot check a fencing token itself (placement)."""

    msg_fmt = _('Flow %(flow_id)s: the job claim of this conductor is '
                'lost; not acting any more')


class FlowQuarantined(exception.NovaException):
    """The fault of an instance whose flow could not be reverted and was
    quarantined: its locks are kept and nothing resumes it until an
    operator does (``nova-orc job resume``)."""

    msg_fmt = _('Flow %(flow_id)s could not be reverted and is '
                'quarantined: %(reason)s. Its locks are kept; see nova-orc '
                'job show and nova-orc job resume.')


class SessionLost(exception.NovaException):
    """This conductor's coordination session that held a claim ended (or
    was replaced by a new one): every claim of that session may belong to
    another conductor now. Raised by
    :meth:`nova.orc.coordination.Coordinator.hold_lease`."""

    msg_fmt = _('Coordination session %(session)s ended: %(reason)s')


class JournalNotFound(exception.NotFound):
    """No flow journal entry matches the given instance or flow."""
    msg_fmt = _('No flow found for %(ref)s')


def call_handling(exc, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` called as from the ``except`` block that
    caught ``exc``: ``sys.exc_info()`` inside it gives ``exc`` and its
    traceback.

    Stock helpers called from exception handlers read ``sys.exc_info()``
    for what they record: ``ComputeTaskManager._bury_in_cell0`` finishes the
    ``conductor_schedule_and_build_instances`` event with its traceback (the
    event's result is ``Error`` and the action's message ``Error`` only with
    one) and ``scheduler.utils.set_vm_state_and_notify`` writes it into the
    fault's details. A revert is not such a block; this makes it one.

    :param exc: the exception being reported (an instance)
    :returns: what ``fn`` returns; ``exc`` keeps its own traceback after
    """
    exc = with_traceback(exc)
    tb = exc.__traceback__
    try:
        raise exc
    except BaseException:
        return fn(*args, **kwargs)
    finally:
        exc.__traceback__ = tb


def with_traceback(exc):
    """``exc`` with a traceback (raised once if it has none).

    Nova's versioned notification payloads read the raising frame of the
    exception they report (``ExceptionPayload.from_exception``), so an
    exception built but never raised cannot be reported as is.
    """
    if exc.__traceback__ is not None:
        return exc
    try:
        raise exc
    except Exception as e:
        return e
