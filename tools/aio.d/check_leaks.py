"""What an all-in-one holds, and what it should not: the crash tests' judge.

``python check_leaks.py STATE_DIR`` reads the deployment's configuration
(``STATE_DIR/etc``) and checks, straight from the databases, ZooKeeper and
the fake hypervisors (``[orc_fake] guests_dir``):

* every placement consumer is a live instance that has a host, and every
  ACTIVE instance has an allocation;
* every ACTIVE instance has exactly one guest, on its host, and no guest
  belongs to anything else;
* no build request and no instance mapping is left without its instance;
* no flow of the journal is unfinished, no job and no lock is left in
  ZooKeeper;
* with neutron in the deployment (``tools/aio up --with-neutron``), read
  from neutron's database: no port belongs (``device_id``) to anything but
  a live instance, every ACTIVE instance has as many ports as it was booted
  with (``expected_ports``; by default as many as its network info cache
  lists), no port is bound (``binding:host_id``) to another host than its
  instance's, and a port the user created and passed to a boot
  (``user_ports``) still exists and, once its server is deleted or failed,
  is unbound (no ``device_id``, no host).

Prints one line per problem and a summary (``instances: N active, N error;
ok`` or ``N problems``); exits 1 when there is a problem. With ``--json``
prints the raw state instead.
"""

import argparse
import configparser
import json
import os
import sys
import urllib.parse

import sqlalchemy as sa


def _conf(path):
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read(path)
    return parser


def _rows(url, query):
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(query))]
    finally:
        engine.dispose()


def _has_table(url, name):
    engine = sa.create_engine(url)
    try:
        return sa.inspect(engine).has_table(name)
    finally:
        engine.dispose()


def admin_connection(state_dir, rc='openrc', **kwargs):
    """An openstacksdk connection as the deployment's admin, from the
    ``openrc`` tools/aio wrote in ``state_dir`` (``rc='demo-openrc'``: as
    its demo user, a member of the project ``demo``); ``kwargs`` go to
    ``openstack.connect`` (e.g. ``compute_api_version``)."""
    import openstack
    env = {}
    with open(os.path.join(state_dir, rc)) as f:
        for line in f:
            if line.startswith('export '):
                for pair in line[len('export '):].split():
                    if '=' in pair:
                        k, v = pair.split('=', 1)
                        env[k] = v
    return openstack.connect(
        auth_url=env['OS_AUTH_URL'], username=env['OS_USERNAME'],
        password=env['OS_PASSWORD'], project_name=env['OS_PROJECT_NAME'],
        user_domain_name='Default', project_domain_name='Default',
        region_name='RegionOne', **kwargs)


def _neutron_url(state_dir):
    """neutron's database URL when the deployment runs neutron (``tools/aio
    up --with-neutron``), else None (the read-only stub answers nova)."""
    try:
        with open(os.path.join(state_dir, 'aio.env')) as f:
            if 'WITH_NEUTRON=1' not in f.read().split():
                return None
    except OSError:
        return None
    neutron = _conf(os.path.join(state_dir, 'etc', 'neutron',
                                 'neutron.conf'))
    return neutron.get('database', 'connection', fallback=None)


def _neutron_ports(url):
    """Every port: id, device_id, device_owner and the host of its active
    binding ('' when unbound)."""
    return [{'id': r[0], 'device_id': r[1] or '', 'device_owner': r[2] or '',
             'host': r[3] or ''} for r in _rows(url, (
                 "SELECT p.id, p.device_id, p.device_owner, b.host "
                 "FROM ports p LEFT JOIN ml2_port_bindings b "
                 "ON b.port_id = p.id AND b.status = 'ACTIVE'"))]


def state(state_dir):
    etc = os.path.join(state_dir, 'etc')
    nova = _conf([os.path.join(etc, 'nova', 'nova.conf'),
                  os.path.join(etc, 'nova', 'local.conf')])
    placement = _conf(os.path.join(etc, 'placement', 'placement.conf'))
    api_url = nova.get('api_database', 'connection')
    cell_urls = [r[0] for r in _rows(
        api_url, 'SELECT database_connection FROM cell_mappings')]
    instances = {}
    for url in cell_urls:
        for uuid, vm_state, host in _rows(
                url, "SELECT uuid, vm_state, host FROM instances "
                     "WHERE deleted = 0"):
            instances[uuid] = {'vm_state': vm_state, 'host': host}
    consumers = {r[0] for r in _rows(
        placement.get('placement_database', 'connection'),
        'SELECT DISTINCT consumer_id FROM allocations')}
    build_requests = [r[0] for r in _rows(
        api_url, 'SELECT instance_uuid FROM build_requests')]
    mappings = [r[0] for r in _rows(
        api_url, 'SELECT instance_uuid FROM instance_mappings '
                 'WHERE queued_for_delete = false')]
    neutron_url = _neutron_url(state_dir)
    ports = None
    if neutron_url:
        ports = _neutron_ports(neutron_url)
        for url in cell_urls:
            for uuid, network_info in _rows(
                    url, "SELECT instance_uuid, network_info FROM "
                         "instance_info_caches WHERE deleted = 0"):
                if uuid in instances:
                    instances[uuid]['vifs'] = len(
                        json.loads(network_info or '[]'))
    journal_url = (nova.get('orc', 'connection', fallback=None) or api_url)
    unfinished = []
    if _has_table(journal_url, 'orc_flow_details'):
        # (a stock deployment that never ran our conductor has no journal)
        unfinished = [r for r in _rows(
            journal_url, "SELECT uuid, state, instance_uuid FROM "
                         "orc_flow_details WHERE state NOT IN "
                         "('SUCCESS', 'REVERTED')")]
    guests = {}
    guests_dir = nova.get('orc_fake', 'guests_dir', fallback=None)
    if guests_dir and os.path.isdir(guests_dir):
        for host in os.listdir(guests_dir):
            for uuid in os.listdir(os.path.join(guests_dir, host)):
                guests.setdefault(uuid, []).append(host)
    zk = {}
    url = nova.get('orc', 'coordination_url', fallback='memory://')
    if url.startswith('zookeeper://'):
        from kazoo.client import KazooClient
        parsed = urllib.parse.urlparse(url)
        client = KazooClient(hosts=parsed.netloc)
        client.start(timeout=10)
        base = parsed.path.rstrip('/') or '/nova-orc'
        try:
            locks = []
            if client.exists(base + '/locks'):
                for kind in client.get_children(base + '/locks'):
                    locks += ['%s/%s' % (kind, i) for i in client.get_children(
                        '%s/locks/%s' % (base, kind))]
            jobs = (client.get_children(base + '/jobs')
                    if client.exists(base + '/jobs') else [])
            zk = {'locks': locks, 'jobs': jobs}
        finally:
            client.stop()
            client.close()
    return {'instances': instances, 'consumers': sorted(consumers),
            'build_requests': build_requests, 'mappings': mappings,
            'unfinished_flows': unfinished, 'guests': guests,
            'guests_checked': bool(guests_dir), 'zookeeper': zk,
            'ports': ports}


def port_problems(st, expected_ports=None, user_ports=None):
    """Problems with neutron's ports (none without neutron: ``st['ports']``
    is None).

    :param st: :func:`state`
    :param expected_ports: ``{instance_uuid: number of ports it was booted
        with}``, checked whatever the instance's state; other ACTIVE
        instances are compared with their network info cache
    :param user_ports: ``{port_id: instance_uuid}``: ports the user created
        and passed to a boot; each must exist, and be bound to its instance
        while it is ACTIVE, unbound once it is deleted or not ACTIVE
    """
    if st.get('ports') is None:
        return []
    found = []
    instances = st['instances']
    expected_ports = expected_ports or {}
    by_instance = {}
    for port in st['ports']:
        device = port['device_id']
        if not device or port['device_owner'].startswith('network:'):
            continue  # unbound, or a router's/DHCP's
        by_instance.setdefault(device, []).append(port)
        inst = instances.get(device)
        if inst is None:
            found.append('port %s (%s) of %s, which is no live instance' % (
                port['id'], port['device_owner'] or 'no owner', device))
        elif port['host'] and port['host'] != inst['host']:
            found.append('port %s of %s bound to %s, its instance is on %s '
                         '(%s)' % (port['id'], device, port['host'],
                                   inst['host'], inst['vm_state']))
    for uuid, inst in instances.items():
        want, why = expected_ports.get(uuid), 'expected'
        if want is None and inst['vm_state'] == 'active':
            want, why = inst.get('vifs'), 'its network info cache lists'
        have = [p['id'] for p in by_instance.get(uuid, [])]
        if want is not None and len(have) != want:
            found.append('%s instance %s has %d port(s) %s, %s %d' % (
                inst['vm_state'], uuid, len(have), have, why, want))
    ports = {p['id']: p for p in st['ports']}
    for port_id, uuid in (user_ports or {}).items():
        port = ports.get(port_id)
        if port is None:
            found.append('user port %s (of %s) was deleted' % (port_id, uuid))
        elif instances.get(uuid, {}).get('vm_state') == 'active':
            if port['device_id'] != uuid:
                found.append('user port %s not bound to its ACTIVE instance '
                             '%s (device_id %r)' % (port_id, uuid,
                                                    port['device_id']))
        elif port['device_id'] or port['host']:
            found.append('user port %s still bound (device_id %r, host %r) '
                         'though its instance %s is %s' % (
                             port_id, port['device_id'], port['host'], uuid,
                             instances.get(uuid, {}).get('vm_state',
                                                         'gone')))
    return found


def classified_problems(st, expected_ports=None, user_ports=None):
    """The problems of a state from :func:`state`, as ``(kind, message)``
    pairs; ``kind`` is one of :data:`KINDS`; ``expected_ports``,
    ``user_ports``: see :func:`port_problems`."""
    found = []
    instances = st['instances']
    for uuid in st['consumers']:
        if uuid not in instances:
            found.append(('allocations', 'allocation of %s, which is no live '
                          'instance' % uuid))
        elif not instances[uuid]['host']:
            found.append(('allocations', 'allocation of %s, which has no host '
                          '(%s)' % (uuid, instances[uuid]['vm_state'])))
    for uuid, inst in instances.items():
        if inst['vm_state'] == 'active' and uuid not in st['consumers']:
            found.append(('allocations', 'ACTIVE instance %s has no '
                          'allocation' % uuid))
        if st['guests_checked'] and inst['vm_state'] == 'active':
            hosts = st['guests'].get(uuid, [])
            if hosts != [inst['host']]:
                found.append(('guests', 'ACTIVE instance %s on %s has guests '
                              'on %s' % (uuid, inst['host'], hosts)))
    for uuid, hosts in st['guests'].items():
        if instances.get(uuid, {}).get('vm_state') != 'active':
            found.append(('guests', 'guest of %s on %s, which is %s' % (
                uuid, hosts, instances.get(uuid, {}).get('vm_state',
                                                          'gone'))))
    for uuid in st['build_requests']:
        found.append(('build_requests', 'build request of %s left' % uuid))
    for uuid in st['mappings']:
        if uuid not in instances:
            found.append(('mappings', 'instance mapping of %s, which is no '
                          'live instance' % uuid))
    for flow, flow_state, uuid in st['unfinished_flows']:
        found.append(('flows', 'flow %s of %s not ended: %s' % (
            flow, uuid, flow_state)))
    for lock in st['zookeeper'].get('locks', []):
        found.append(('locks', 'lock %s left in ZooKeeper' % lock))
    for job in st['zookeeper'].get('jobs', []):
        found.append(('jobs', 'job node %s left in ZooKeeper' % job))
    return found + [('ports', message) for message in port_problems(
        st, expected_ports, user_ports)]


KINDS = ('allocations', 'guests', 'build_requests', 'mappings', 'flows',
         'locks', 'jobs', 'ports')


def problems(st, expected_ports=None, user_ports=None):
    """The problems of a state from :func:`state`: one message each;
    ``expected_ports``, ``user_ports``: see :func:`port_problems`."""
    return [message for _kind, message in classified_problems(
        st, expected_ports, user_ports)]


def journal_url(state_dir):
    """SQLAlchemy URL of the deployment's flow journal (``[orc]
    connection``, else the API database)."""
    nova = _conf(os.path.join(state_dir, 'etc', 'nova', 'nova.conf'))
    return (nova.get('orc', 'connection', fallback=None) or
            nova.get('api_database', 'connection'))


def flow_metas(state_dir):
    """``{instance_uuid: meta}`` of each instance's latest journaled flow
    (``claims``, ``conductor``, ``claimed_at``, ``quarantined``...)."""
    metas = {}
    for uuid, data in _rows(journal_url(state_dir), (
            'SELECT instance_uuid, data FROM orc_flow_details '
            'WHERE instance_uuid IS NOT NULL ORDER BY created_at')):
        metas[uuid] = json.loads(data).get('meta', {}) if data else {}
    return metas


def service_pids(state_dir, prefix=''):
    """``{service: pid}`` of the tools/aio services whose name starts with
    ``prefix`` and whose process runs: the pid in ``pids/NAME.pid``, alive,
    with the start time tools/aio recorded in ``pids/NAME.start`` (a
    recycled pid is not ours)."""
    pids = {}
    pid_dir = os.path.join(state_dir, 'pids')
    for name in sorted(os.listdir(pid_dir)):
        service = name[:-len('.pid')]
        if not name.endswith('.pid') or not service.startswith(prefix):
            continue
        try:
            with open(os.path.join(pid_dir, name)) as f:
                pid = int(f.read().strip() or 0)
            with open(os.path.join(pid_dir, service + '.start')) as f:
                start = f.read().strip()
            with open('/proc/%d/stat' % pid) as f:
                stat = f.read()
        except (OSError, ValueError):
            continue
        # field 22 (start time), counted after the ') ' closing the name
        if pid and stat.rsplit(') ', 1)[1].split()[19] == start:
            pids[service] = pid
    return pids


def main(argv=None):
    parser = argparse.ArgumentParser(prog='check_leaks.py')
    parser.add_argument('state_dir')
    parser.add_argument('--json', action='store_true')
    parser.add_argument('--ports', type=int, metavar='N',
                        help='every live instance was booted with N ports '
                             '(default: ACTIVE ones with as many as their '
                             'network info cache lists)')
    parser.add_argument('--user-port', action='append', default=[],
                        metavar='PORT=INSTANCE',
                        help='a port the user created for INSTANCE '
                             '(repeatable)')
    args = parser.parse_args(argv)
    st = state(args.state_dir)
    if args.json:
        print(json.dumps(st, indent=1, sort_keys=True, default=str))
        return 0
    expected = None
    if args.ports is not None:
        expected = {uuid: args.ports for uuid in st['instances']}
    found = problems(st, expected_ports=expected, user_ports=dict(
        pair.split('=', 1) for pair in args.user_port))
    for line in found:
        print('LEAK: %s' % line)
    states = [i['vm_state'] for i in st['instances'].values()]
    print('instances: %d active, %d error, %d other; %s' % (
        states.count('active'), states.count('error'),
        len(states) - states.count('active') - states.count('error'),
        '%d problems' % len(found) if found else 'ok'))
    return 1 if found else 0


if __name__ == '__main__':
    sys.exit(main())
