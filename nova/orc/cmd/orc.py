"""``nova-orc``: the operator CLI (journal, flows, locks). Admin only.

Reads the same configuration files as Nova (``--config-file``,
``--config-dir``; default ``/etc/nova/nova.conf``)::

    nova-orc db sync                  create/upgrade the journal tables
    nova-orc db version               applied journal revision
    nova-orc flow list [--instance UUID] [--limit N]
    nova-orc flow show REF            REF: server uuid, server name or flow id
    nova-orc flow graph boot          DOT of a flow definition
    nova-orc lock list                locks held, with their flow's owner
    nova-orc job list                 jobs on the board: owner, age, resumes
    nova-orc job show REF             one job and its flow's journal
    nova-orc job abort REF [--reason TEXT]
                                      revert the flow at its next task
    nova-orc job resume REF           post a job again for a journaled flow
                                      that has none (not ended)

Job commands need ``[orc] coordination_url = zookeeper://...`` (the job
board of ``memory://`` lives inside the conductor process).

Exit status: 0 success, 1 not found or failed, 2 usage error.
"""

import argparse
import contextlib
import sys
import warnings

# the CLI never runs eventlet; its import by a library is no news to users
warnings.filterwarnings('ignore', message=r'\s*Eventlet is deprecated')

from oslo_serialization import jsonutils
from oslo_utils import timeutils
import prettytable
from taskflow import engines as tf_engines
from taskflow import states

import nova.conf
from nova import config
from nova import objects
from nova.orc import conf as orc_conf
from nova.orc import coordination
from nova.orc import exception as orc_exc
from nova.orc import flows
from nova.orc.flows import names
from nova.orc import jobboard
from nova.orc.persistence import backend as journal
from nova.orc.persistence import migration

CONF = nova.conf.CONF


def _short(value, width=60):
    text = value if isinstance(value, str) else jsonutils.dumps(value)
    return text if len(text) <= width else text[:width - 3] + '...'


def _time(value):
    return value.strftime('%H:%M:%S.%f')[:-3] if value else '-'


def _duration(start, end):
    if not (start and end):
        return '-'
    return '%.3fs' % (end - start).total_seconds()


def cmd_db_sync(args, out):
    migration.db_sync()
    print('journal at revision %s' % migration.db_version(), file=out)
    return 0


def cmd_db_version(args, out):
    print(migration.db_version() or 'none', file=out)
    return 0


def cmd_flow_list(args, out):
    conn = journal.JournalBackend().get_connection()
    table = prettytable.PrettyTable(
        ['flow', 'operation', 'state', 'instance', 'name', 'created',
         'updated'])
    table.align = 'l'
    for flow in conn.list_flows(instance_uuid=args.instance,
                                limit=args.limit):
        table.add_row([flow['uuid'], flow['name'], flow['state'],
                       flow['instance_uuid'],
                       flow['meta'].get('display_name') or '',
                       flow['created_at'], flow['updated_at']])
    print(table, file=out)
    return 0


def find_flow(conn, ref):
    """The newest flow whose id, instance uuid or server name is ``ref``.

    :raises nova.orc.exception.JournalNotFound:
    """
    found = (conn.list_flows(flow_uuid=ref, limit=1) or
             conn.list_flows(instance_uuid=ref, limit=1))
    if found:
        return found[0]
    # a server name lives only in the flow meta: read the flows, newest first
    for flow in conn.list_flows():
        if flow['meta'].get('display_name') == ref:
            return flow
    raise orc_exc.JournalNotFound(ref=ref)


def _host_of(detail, results_by_name):
    results = detail.results
    if isinstance(results, dict) and results.get('host'):
        return results['host']
    claim = results_by_name.get(names.CLAIM_HOST)
    if detail.state == states.IGNORE:
        return ''  # the branch not taken ran nowhere
    if isinstance(claim, dict) and detail.name in (
            names.NETWORKS, names.BLOCK_DEVICES_TASK, names.SPAWN,
            names.FINALIZE):
        return claim.get('host')
    return ''


def _outcome(detail, atom_type):
    if atom_type.startswith('RETRY'):
        attempts = []
        for selection, failures in detail.results or []:
            host = (selection or {}).get('nova_object.data', {}).get(
                'service_host', '?')
            if failures:
                attempts.append('%s: %s' % (host, '; '.join(
                    f.exception_str for f in failures.values())))
            else:
                attempts.append('%s: ok' % host)
        return 'attempts: ' + (' | '.join(attempts) or '-')
    if detail.failure is not None:
        return 'FAILED: %s' % _short(detail.failure.exception_str, 90)
    if detail.results is None:
        return ''
    return _short(detail.results)


def _revert(detail):
    if detail.revert_failure is not None:
        return 'REVERT FAILED: %s' % _short(
            detail.revert_failure.exception_str, 60)
    if detail.state == 'REVERTED':
        return 'reverted'
    return ''


def cmd_flow_show(args, out):
    conn = journal.JournalBackend().get_connection()
    flow = find_flow(conn, args.ref)
    meta = flow['meta']
    print('flow %s (%s v%s)  state %s' % (
        flow['uuid'], flow['name'], meta.get('version', '?'), flow['state']),
        file=out)
    print('instance %s  name %s  request %s  conductor %s' % (
        flow['instance_uuid'], meta.get('display_name') or '-',
        meta.get('request_id', '-'), meta.get('conductor', '-')), file=out)
    print('created %s  updated %s' % (flow['created_at'],
                                      flow['updated_at']), file=out)
    rows = conn.atom_rows(flow['uuid'])
    module = flows.FACTORIES.get(flow['name'])
    order = atom_order(module.get_flow()) if module else []
    rows.sort(key=lambda r: (order.index(r['detail'].name)
                             if r['detail'].name in order else len(order)))
    results = {r['detail'].name: r['detail'].results for r in rows}
    table = prettytable.PrettyTable(
        ['task', 'state', 'host', 'started', 'finished', 'took',
         'result / failure', 'revert'])
    table.align = 'l'
    for row in rows:
        detail = row['detail']
        if detail.name.startswith('_'):
            continue  # TaskFlow's injector atoms
        table.add_row([detail.name, detail.state or '-',
                       _host_of(detail, results), _time(row['started_at']),
                       _time(row['finished_at']),
                       _duration(row['started_at'], row['finished_at']),
                       _outcome(detail, row['atom_type']), _revert(detail)])
    print(table, file=out)
    return 0


def atom_order(flow):
    """Atom names of a flow definition in definition order (a subflow's
    retry before its atoms)."""
    order = []
    if getattr(flow, 'retry', None) is not None:
        order.append(flow.retry.name)
    for node, _data in flow.iter_nodes():
        if hasattr(node, 'iter_nodes'):
            order.extend(atom_order(node))
        else:
            order.append(node.name)
    return order


def _compile(flow):
    engine = tf_engines.load(flow, engine='serial')
    engine.compile()
    return engine.compilation.execution_graph


def cmd_flow_graph(args, out):
    module = flows.FACTORIES.get(args.name)
    if module is None:
        print('unknown flow %r; known: %s' % (
            args.name, ', '.join(sorted(flows.FACTORIES))), file=sys.stderr)
        return 1
    flow = module.get_flow()
    print(_compile(flow).export_to_dot(), file=out)
    return 0


@contextlib.contextmanager
def _board():
    """``(coordinator, board)`` connected as an operator (not a
    conductor)."""
    coordinator = coordination.coordinator_from_conf(
        conductor_id='nova-orc-cli')
    coordinator.start()
    try:
        board = jobboard.board_from_coordinator(
            coordinator, 'nova-orc-cli', CONF.orc.coordination_url)
        board.connect(as_conductor=False)
        try:
            yield coordinator, board
        finally:
            board.close()
    finally:
        coordinator.stop()


def _owner_state(board, job):
    """``claimed by OWNER (alive|DEAD)`` or ``unclaimed``."""
    if job is None:
        return 'no job'
    if not job['owner']:
        return 'unclaimed'
    alive = board.is_alive(job['owner'])
    return 'claimed by %s (%s)' % (job['owner'], 'alive' if alive else 'DEAD')


def cmd_lock_list(args, out):
    conn = journal.JournalBackend().get_connection()
    with _board() as (coordinator, board):
        jobs = {j['flow_id']: j for j in board.list_jobs()}
        table = prettytable.PrettyTable(
            ['kind', 'id', 'flow', 'flow state', 'job', 'conductor',
             'since'])
        table.align = 'l'
        for lock in coordinator.list_locks():
            owner = lock.get('owner')
            table.add_row([lock['kind'], lock['id'], owner,
                           conn.flow_state(owner) or 'unknown',
                           _owner_state(board, jobs.get(owner)),
                           lock.get('conductor'), lock.get('since')])
        print(table, file=out)
    return 0


def _need_zookeeper():
    if not CONF.orc.coordination_url.startswith('zookeeper://'):
        print('job commands need [orc] coordination_url = zookeeper://...: '
              'the job board of %s lives inside the conductor process' %
              CONF.orc.coordination_url, file=sys.stderr)
        return True
    return False


def cmd_job_list(args, out):
    if _need_zookeeper():
        return 1
    conn = journal.JournalBackend().get_connection()
    with _board() as (_coordinator, board):
        table = prettytable.PrettyTable(
            ['flow', 'operation', 'instance', 'state', 'owner', 'token',
             'resumes', 'age', 'abort requested'])
        table.align = 'l'
        now = timeutils.utcnow()
        for job in board.list_jobs():
            flow = (conn.list_flows(flow_uuid=job['flow_id'], limit=1) or
                    [None])[0]
            claims = flow['meta'].get('claims', 0) if flow else 0
            age = ('%ds' % (now - flow['created_at']).total_seconds()
                   if flow else '?')
            table.add_row([
                job['flow_id'], job['details'].get('operation'),
                job['details'].get('instance_uuid'),
                flow['state'] if flow else 'not journaled',
                _owner_state(board, job), job['token'] or '',
                max(claims - 1, 0), age,
                board.abort_requested(job['flow_id']) or ''])
        print(table, file=out)
    return 0


def _job_of(board, conn, ref):
    flow = find_flow(conn, ref)
    jobs = [j for j in board.list_jobs() if j['flow_id'] == flow['uuid']]
    return flow, (jobs[0] if jobs else None)


def cmd_job_show(args, out):
    if _need_zookeeper():
        return 1
    conn = journal.JournalBackend().get_connection()
    with _board() as (_coordinator, board):
        flow, job = _job_of(board, conn, args.ref)
        abort = board.abort_requested(flow['uuid'])
        print('job of flow %s: %s, token %s, resumes %d%s' % (
            flow['uuid'], _owner_state(board, job),
            (job or {}).get('token') or '-',
            max(flow['meta'].get('claims', 0) - 1, 0),
            ', abort requested: %s' % abort if abort else ''), file=out)
    args.ref = flow['uuid']
    return cmd_flow_show(args, out)


def cmd_job_abort(args, out):
    if _need_zookeeper():
        return 1
    conn = journal.JournalBackend().get_connection()
    with _board() as (_coordinator, board):
        flow, job = _job_of(board, conn, args.ref)
        if job is None:
            print('flow %s has no job (state %s): nothing to abort' % (
                flow['uuid'], flow['state']), file=sys.stderr)
            return 1
        board.request_abort(flow['uuid'], args.reason)
        print('abort requested for flow %s (%s): it reverts at its next '
              'task' % (flow['uuid'], _owner_state(board, job)), file=out)
    return 0


def cmd_job_resume(args, out):
    if _need_zookeeper():
        return 1
    conn = journal.JournalBackend().get_connection()
    with _board() as (_coordinator, board):
        flow, job = _job_of(board, conn, args.ref)
        if job is not None:
            print('flow %s already has a job (%s): conductors resume it' % (
                flow['uuid'], _owner_state(board, job)), file=sys.stderr)
            return 1
        if flow['state'] in ('SUCCESS', 'REVERTED'):
            print('flow %s ended %s: nothing to resume' % (
                flow['uuid'], flow['state']), file=sys.stderr)
            return 1
        book = conn.get_logbook(flow['logbook_uuid'], lazy=True)
        posted = board.post(flow['uuid'], book, {
            'operation': flow['name'],
            'instance_uuid': flow['instance_uuid'], 'book': book.uuid,
            'posted_by': 'nova-orc-cli',
            # a fresh budget of [orc] max_resumes: a quarantined flow is
            # tried again, not quarantined again at once
            'claims_before_operator_resume': flow['meta'].get('claims', 0),
            # the outages among them are in the claims above already
            'outages_before_operator_resume': flow['meta'].get(
                'outages', 0)})
        if not posted:
            # posted by another since the listing above: one job per flow
            print('flow %s already has a job: conductors resume it' %
                  flow['uuid'], file=sys.stderr)
            return 1
        print('job posted for flow %s: a conductor claims and resumes it' %
              flow['uuid'], file=out)
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog='nova-orc', description='nova-orc operator commands')
    parser.add_argument('--config-file', action='append', default=[],
                        help='Nova configuration file (repeatable)')
    parser.add_argument('--config-dir', action='append', default=[],
                        help='directory of *.conf files (repeatable)')
    sub = parser.add_subparsers(dest='group', required=True)

    db = sub.add_parser('db', help='journal schema').add_subparsers(
        dest='command', required=True)
    db.add_parser('sync', help='create or upgrade the journal tables'
                  ).set_defaults(func=cmd_db_sync)
    db.add_parser('version', help='applied journal revision'
                  ).set_defaults(func=cmd_db_version)

    flow = sub.add_parser('flow', help='journaled flows').add_subparsers(
        dest='command', required=True)
    flist = flow.add_parser('list', help='flows, newest first')
    flist.add_argument('--instance', help='only this server uuid')
    flist.add_argument('--limit', type=int, default=50)
    flist.set_defaults(func=cmd_flow_list)
    fshow = flow.add_parser('show', help='every task of one flow')
    fshow.add_argument('ref', help='server uuid, server name or flow id')
    fshow.set_defaults(func=cmd_flow_show)
    fgraph = flow.add_parser('graph', help='DOT of a flow definition')
    fgraph.add_argument('name', help='flow name, e.g. boot')
    fgraph.set_defaults(func=cmd_flow_graph)

    lock = sub.add_parser('lock', help='coordination locks').add_subparsers(
        dest='command', required=True)
    lock.add_parser('list', help='locks held').set_defaults(
        func=cmd_lock_list)

    job = sub.add_parser('job', help='jobs (flow runs) on the job board'
                         ).add_subparsers(dest='command', required=True)
    job.add_parser('list', help='jobs, their owner and resumes'
                   ).set_defaults(func=cmd_job_list)
    jshow = job.add_parser('show', help='one job and its journal')
    jshow.add_argument('ref', help='server uuid, server name or flow id')
    jshow.set_defaults(func=cmd_job_show)
    jabort = job.add_parser('abort', help='revert a flow at its next task')
    jabort.add_argument('ref', help='server uuid, server name or flow id')
    jabort.add_argument('--reason', default='aborted by an operator',
                        help='recorded in the fault and the logs')
    jabort.set_defaults(func=cmd_job_abort)
    jresume = job.add_parser('resume', help='post a job again for a flow '
                             'that has none')
    jresume.add_argument('ref', help='server uuid, server name or flow id')
    jresume.set_defaults(func=cmd_job_resume)
    return parser


def main(argv=None, out=None, configure=True):
    """Entry point; returns the exit status (0 ok, 1 failed, 2 usage).

    :param configure: parse Nova's configuration files (False when the
        caller, e.g. a test, already configured ``nova.conf.CONF``)
    """
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    conf_args = []
    for path in args.config_file:
        conf_args += ['--config-file', path]
    for path in args.config_dir:
        conf_args += ['--config-dir', path]
    orc_conf.register_opts()
    if configure and args.func is not cmd_flow_graph:
        config.parse_args(['nova-orc'] + conf_args, init_rpc=False)
        objects.register_all()
    try:
        return args.func(args, out)
    except orc_exc.JournalNotFound as e:
        print(e.format_message(), file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
