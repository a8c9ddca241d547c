"""``nova-orc``: the operator CLI (journal, flows, locks). Admin only.

Reads the same configuration files as Nova (``--config-file``,
``--config-dir``; default ``/etc/nova/nova.conf``)::

    nova-orc db sync                  create/upgrade the journal tables
    nova-orc db version               applied journal revision
    nova-orc flow list [--instance UUID] [--limit N]
    nova-orc flow show REF            REF: server uuid, server name or flow id
    nova-orc flow graph boot          DOT of a flow definition
    nova-orc lock list                locks held in the coordination backend

Exit status: 0 success, 1 not found or failed, 2 usage error.
"""

import argparse
import sys
import warnings

# the CLI never runs eventlet; its import by a library is no news to users
warnings.filterwarnings('ignore', message=r'\s*Eventlet is deprecated')

from oslo_serialization import jsonutils
import prettytable
from taskflow import engines as tf_engines

import nova.conf
from nova import config
from nova import objects
from nova.orc import conf as orc_conf
from nova.orc import coordination
from nova.orc import exception as orc_exc
from nova.orc import flows
from nova.orc.flows import names
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
    order = atom_order(module.get_flow(None)) if module else []
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
    flow = module.get_flow(None)
    print(_compile(flow).export_to_dot(), file=out)
    return 0


def cmd_lock_list(args, out):
    coordinator = coordination.coordinator_from_conf(
        conductor_id='nova-orc-cli')
    coordinator.start()
    try:
        table = prettytable.PrettyTable(
            ['kind', 'id', 'flow', 'conductor', 'since'])
        table.align = 'l'
        for lock in coordinator.list_locks():
            table.add_row([lock['kind'], lock['id'], lock.get('owner'),
                           lock.get('conductor'), lock.get('since')])
        print(table, file=out)
    finally:
        coordinator.stop()
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
