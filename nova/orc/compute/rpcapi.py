"""Client side of the orc compute RPC endpoint (namespace ``orc``).

Version history:

* 1.0 - claim_resources, abort_claim, allocate_networks,
  deallocate_networks, prep_block_devices, cleanup_block_devices, spawn,
  destroy_guest, finish_build

Every host-side call carries ``job = {'flow_id', 'atom', 'token'}``: the
idempotency key (a repeated call after a resume gets the recorded result)
and the fencing token (a call from a conductor that lost the job is refused
with :class:`nova.orc.exception.StaleFencingToken`).
"""

from oslo_log import log as logging
import oslo_messaging as messaging

from nova.compute import rpcapi as compute_rpcapi
import nova.conf
from nova.objects import base as objects_base
from nova.orc import conf as orc_conf  # noqa: F401 - registers [orc]
from nova.orc import fencing
from nova import rpc

CONF = nova.conf.CONF
LOG = logging.getLogger(__name__)

#: module of the errors host-side steps raise; a transport only rebuilds
#: exceptions of modules allowed when it is created (``nova.rpc.init``), so
#: the nova-orc binaries add it before Nova parses its configuration
EXCEPTION_MODULE = 'nova.orc.exception'

NAMESPACE = 'orc'
VERSION = '1.0'


def lacks_orc_endpoint(exc):
    """Whether ``exc``, raised by a call of :class:`OrcComputeAPI`, says the
    compute has no orc endpoint: a stock ``nova-compute`` (a deployment
    upgrading conductors first, as Nova's upgrade order says).

    oslo.messaging's dispatcher on that host finds no endpoint in namespace
    ``orc`` and answers ``UnsupportedVersion``; over a real transport it
    arrives as a ``RemoteError`` of that type (its module is not one the
    transport rebuilds), with the fake driver of Nova's functional harness
    as the exception itself. Nothing ran on that host. An orc compute never
    answers so for the versions this conductor sends (it serves orc 1.0).

    :param exc: an exception instance
    :returns: bool
    """
    if isinstance(exc, messaging.UnsupportedVersion):
        return True
    return (isinstance(exc, messaging.RemoteError) and
            exc.exc_type == 'UnsupportedVersion')


class OrcComputeAPI:
    """Calls the host-side steps of a flow on one compute host.

    All methods are synchronous ``call``s in namespace ``orc``; errors
    raised on the host are re-raised here (Nova exceptions keep their
    class). Every step and undo may run up to ``[DEFAULT]
    long_rpc_timeout``, kept alive by ``rpc_response_timeout`` heartbeats
    like stock long calls, and is asked again on the same host when its
    call times out (:meth:`_call`).

    Topics follow stock's graceful shutdown (compute RPC 6.5): the step
    that starts a build on a host, ``claim_resources``, goes to topic
    ``compute`` (new work, which a compute shutting down no longer takes,
    as stock sends ``build_and_run_instance``); every later step and every
    undo goes to ``compute-alt``, the RPC server a compute keeps during its
    shutdown to finish the operations in progress (as stock sends the
    follow-up calls of a migration through
    ``ComputeAPI.prepare_for_alt_rpcserver``). Every orc compute runs
    Nova 34, which serves both topics.
    """

    def __init__(self):
        target = messaging.Target(topic=compute_rpcapi.RPC_TOPIC,
                                  namespace=NAMESPACE, version=VERSION)
        self.client = rpc.get_client(
            target, version_cap=VERSION,
            serializer=objects_base.NovaObjectSerializer())

    def _call(self, ctxt, host, method, new_work=False, **kwargs):
        """Call ``method`` on ``host``, kept alive while the compute works on
        it; asked again on the same host when it times out, up to ``[orc]
        host_call_attempts`` times.

        Every step and every undo may run up to ``[DEFAULT]
        long_rpc_timeout`` seconds, kept alive by the compute's heartbeats
        every ``rpc_response_timeout`` (``call_monitor_timeout``, as stock's
        long calls: ``ComputeAPI.live_migration``...): a step waiting on
        the compute for its locks (stock's claim holds ``compute_resources``
        across its calls to the conductors; a burst queues claims behind
        it), the build semaphore or the instance lock is waited for, not
        given up. A call the compute never started on within
        ``rpc_response_timeout`` (its request or reply lost, or queued behind
        busy RPC threads) times out (``MessagingTimeout``) and is sent
        again: the steps are idempotent per flow and atom and fenced by the
        token, so the compute answers a step it did with its recorded
        result, and a second call of a step in progress waits for the first
        under the instance lock. A copy that reaches the compute after the
        flow gave up and undid the step is refused there (the undo's
        tombstone, :meth:`nova.orc.compute.manager.OrcComputeEndpoint.
        _check_not_undone`).

        :param new_work: the step starts a build on the host (topic
            ``compute``); otherwise ``compute-alt``
        :raises oslo_messaging.MessagingTimeout: no answer to any attempt
        :raises nova.orc.exception.ClaimLost: the run's lease does not hold
            (:func:`nova.orc.fencing.check`): nothing was sent
        """
        options = {'server': host, 'version': VERSION,
                   'timeout': CONF.long_rpc_timeout,
                   'call_monitor_timeout': CONF.rpc_response_timeout}
        if not new_work:
            options['topic'] = compute_rpcapi.RPC_TOPIC_ALT
        client = self.client.prepare(**options)
        attempts = CONF.orc.host_call_attempts
        for attempt in range(1, attempts + 1):
            # the compute checks the token too, but only against the
            # highest it saw: a conductor woken from a pause must not reach
            # a compute the flow's new owner has not reached yet
            fencing.check()
            try:
                return client.call(ctxt, method, **kwargs)
            except messaging.MessagingTimeout:
                if attempt == attempts:
                    raise
                LOG.warning('%s on %s: no answer (attempt %d of %d); '
                            'asking the same compute again', method, host,
                            attempt, attempts,
                            instance=kwargs.get('instance'))

    def claim_resources(self, ctxt, host, instance, node, limits,
                        request_spec, job):
        return self._call(ctxt, host, 'claim_resources', new_work=True,
                          instance=instance, node=node, limits=limits,
                          request_spec=request_spec, job=job)

    def abort_claim(self, ctxt, host, instance, node, reason, job):
        return self._call(ctxt, host, 'abort_claim', instance=instance,
                          node=node, reason=reason, job=job)

    def allocate_networks(self, ctxt, host, instance, requested_networks,
                          security_groups, provider_mapping, job):
        return self._call(ctxt, host, 'allocate_networks',
                          instance=instance,
                          requested_networks=requested_networks,
                          security_groups=security_groups,
                          provider_mapping=provider_mapping, job=job)

    def deallocate_networks(self, ctxt, host, instance, requested_networks,
                            job):
        return self._call(ctxt, host, 'deallocate_networks',
                          instance=instance,
                          requested_networks=requested_networks, job=job)

    def prep_block_devices(self, ctxt, host, instance, image, job):
        return self._call(ctxt, host, 'prep_block_devices',
                          instance=instance, image=image, job=job)

    def cleanup_block_devices(self, ctxt, host, instance, job):
        return self._call(ctxt, host, 'cleanup_block_devices',
                          instance=instance, job=job)

    def spawn(self, ctxt, host, instance, node, image, injected_files,
              admin_password, network_info, job):
        return self._call(ctxt, host, 'spawn',
                          instance=instance,
                          node=node, image=image,
                          injected_files=injected_files,
                          admin_password=admin_password,
                          network_info=network_info, job=job)

    def destroy_guest(self, ctxt, host, instance, network_info, job):
        return self._call(ctxt, host, 'destroy_guest',
                          instance=instance, network_info=network_info,
                          job=job)

    def finish_build(self, ctxt, host, instance, node, network_info, job):
        return self._call(ctxt, host, 'finish_build', instance=instance,
                          node=node, network_info=network_info, job=job)
