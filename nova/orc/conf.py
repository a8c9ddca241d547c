"""The ``[orc]`` configuration options of nova-orc.

Registered on ``nova.conf.CONF`` (the same object every Nova service reads)
and listed for oslo-config-generator through the ``oslo.config.opts`` entry
point ``nova.orc = nova.orc.conf:list_opts``; the sample file
``etc/nova/nova-orc.conf.sample`` is generated from them.

Values are validated at start-up by :func:`validate`: a bad value raises
``oslo_config.cfg.ConfigFileValueError`` naming the option, before any
service starts consuming messages.
"""

import urllib.parse

from oslo_config import cfg

import nova.conf

CONF = nova.conf.CONF

orc_group = cfg.OptGroup(
    'orc',
    title='nova-orc options',
    help='Structured state management: compute operations run as persisted, '
         'locked TaskFlow flows inside nova-conductor.')

COORDINATION_SCHEMES = ('zookeeper', 'memory')

orc_opts = [
    cfg.BoolOpt(
        'enabled',
        default=True,
        help='Route compute-task operations (today: schedule_and_build_'
             'instances) into orchestrated flows. False makes the orc '
             'conductor behave exactly like the stock one.'),
    cfg.StrOpt(
        'coordination_url',
        default='memory://',
        help='Where the locks of running flows live. '
             '``zookeeper://host:port[,host:port]/chroot`` uses ZooKeeper '
             'through kazoo (required as soon as more than one conductor '
             'process runs); ``memory://`` keeps them in this process '
             '(single-process all-in-one, tests).'),
    cfg.FloatOpt(
        'zookeeper_session_timeout',
        default=10.0,
        min=1.0,
        help='ZooKeeper session timeout in seconds: how long a silent '
             'conductor is trusted. When its session expires its job claims '
             'vanish and other conductors resume its flows; a long step '
             '(spawn) keeps its claim because the conductor stays '
             'connected, not because the step ended. The server clamps it '
             'to [2, 20] x its tickTime.'),
    cfg.FloatOpt(
        'zookeeper_connect_timeout',
        default=15.0,
        min=0.1,
        help='Seconds to wait for the first ZooKeeper connection at start-up.'),
    cfg.FloatOpt(
        'coordination_outage_timeout',
        default=60.0,
        min=0.0,
        help='Seconds a lock operation waits for an unreachable ZooKeeper '
             'to come back (kazoo retries with backoff) before failing with '
             'CoordinationUnavailable (503). A boot whose locks cannot be '
             'taken ends as stock failures do, with nothing held.'),
    cfg.FloatOpt(
        'lock_wait_timeout',
        default=0.0,
        min=0.0,
        help='Seconds a flow waits for a resource locked by another flow '
             'before failing with ResourceLocked (409). 0 fails at once.'),
    cfg.StrOpt(
        'connection',
        secret=True,
        default=None,
        help='SQLAlchemy URL of the flow journal (TaskFlow logbooks). '
             'Unset: the Nova API database (``[api_database] connection``) '
             'through Nova\'s own engine facade.'),
    cfg.StrOpt(
        'secret_key',
        secret=True,
        default=None,
        help='Passphrase sealing the secrets of a request (admin password, '
             'injected files) into its flow journal, so that a conductor '
             'resuming the flow after another died can still spawn with '
             'them. Must be the same on every conductor. Unset: secrets '
             'stay in the memory of the conductor that took the request, '
             'and a flow resumed elsewhere before its spawn reverts with a '
             'fault saying why.'),
    cfg.StrOpt(
        'engine',
        default='parallel',
        choices=[('parallel', 'independent tasks (networks, block devices) '
                  'run at the same time'),
                 ('serial', 'one task at a time')],
        help='TaskFlow engine used to run flows.'),
    cfg.IntOpt(
        'max_workers',
        default=16,
        min=1,
        help='Jobs (flow runs) one conductor process runs at once; the '
             'independent tasks inside them share a pool of the same size. '
             'More jobs wait on the job board for a free worker here or '
             'another conductor.'),
    cfg.FloatOpt(
        'handoff_timeout',
        default=60.0,
        min=0.0,
        help='Seconds the RPC handler of a create request waits for its '
             'flow to create the instance records (where stock\'s conductor '
             'returns) before returning anyway; the rest of the flow (host '
             'steps, spawn) never holds the RPC thread.'),
    cfg.FloatOpt(
        'peer_claim_delay',
        default=2.0,
        min=0.0,
        help='Seconds a job posted by a live conductor stays reserved to it '
             'before any other conductor with a free worker may run it (its '
             'poster is at max_workers, or slow to claim): new requests do '
             'not wait for a busy conductor while its peers idle. The RPC '
             'handler that posted the job stops waiting for its handoff '
             'after as long when the job does not run there. Needs [orc] '
             'secret_key (the peer unseals the request\'s secrets and the '
             'user\'s token from the journal); without it a job runs only '
             'where it was posted while its poster lives.'),
    cfg.IntOpt(
        'host_call_attempts',
        default=3,
        min=1,
        help='Times a host step of a flow (claim, networks, block devices, '
             'spawn, finish, and each undo) is asked of the same compute '
             'when its call times out (oslo.messaging MessagingTimeout: the '
             'request or its reply was lost, or the compute never started '
             'on it within rpc_response_timeout). The steps are idempotent '
             'and fenced: a compute that did the step answers with the '
             'recorded result, one that is doing it makes the second call '
             'wait for the first, and a late copy of a step its flow undid '
             'is refused. Every step and undo stays alive while the compute '
             'works on it or waits for its locks, through heartbeats '
             '(call_monitor_timeout, as Nova\'s long calls), up to '
             '[DEFAULT] long_rpc_timeout. An undo that still gets no answer '
             'fails its revert: the job asks again (max_resumes), never '
             'drops it and moves on.'),
    cfg.IntOpt(
        'max_resumes',
        default=3,
        min=0,
        help='Automatic resumes of one job (after its conductor died or '
             'its revert failed). Past this the job is quarantined: its '
             'flow reverts, the instance goes to ERROR with a fault that '
             'says why, and it is never resumed again.'),
]


def register_opts(conf=CONF):
    """Register the ``[orc]`` group and options on ``conf`` (idempotent)."""
    conf.register_group(orc_group)
    conf.register_opts(orc_opts, group=orc_group)


def list_opts():
    """Options for oslo-config-generator: ``[(group, [opts])]``."""
    return [(orc_group, orc_opts)]


def validate(conf=CONF):
    """Fail fast on values the option types cannot check themselves.

    :raises oslo_config.cfg.ConfigFileValueError: naming ``[orc]
        coordination_url`` when its scheme is unknown or a ZooKeeper URL has
        no host.
    """
    url = conf.orc.coordination_url
    parsed = urllib.parse.urlparse(url or '')
    if parsed.scheme not in COORDINATION_SCHEMES:
        raise cfg.ConfigFileValueError(
            '[orc] coordination_url = %r: scheme must be one of %s' %
            (url, ', '.join('%s://' % s for s in COORDINATION_SCHEMES)))
    if parsed.scheme == 'zookeeper' and not parsed.netloc:
        raise cfg.ConfigFileValueError(
            '[orc] coordination_url = %r: no ZooKeeper host:port given' % url)


register_opts()
