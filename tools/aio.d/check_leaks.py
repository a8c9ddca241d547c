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
  ZooKeeper.

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


def admin_connection(state_dir, **kwargs):
    """An openstacksdk connection as the deployment's admin, from the
    ``openrc`` tools/aio wrote in ``state_dir``; ``kwargs`` go to
    ``openstack.connect`` (e.g. ``compute_api_version``)."""
    import openstack
    env = {}
    with open(os.path.join(state_dir, 'openrc')) as f:
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
    journal_url = (nova.get('orc', 'connection', fallback=None) or api_url)
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
            'guests_checked': bool(guests_dir), 'zookeeper': zk}


def problems(st):
    found = []
    instances = st['instances']
    for uuid in st['consumers']:
        if uuid not in instances:
            found.append('allocation of %s, which is no live instance' % uuid)
        elif not instances[uuid]['host']:
            found.append('allocation of %s, which has no host (%s)' % (
                uuid, instances[uuid]['vm_state']))
    for uuid, inst in instances.items():
        if inst['vm_state'] == 'active' and uuid not in st['consumers']:
            found.append('ACTIVE instance %s has no allocation' % uuid)
        if st['guests_checked'] and inst['vm_state'] == 'active':
            hosts = st['guests'].get(uuid, [])
            if hosts != [inst['host']]:
                found.append('ACTIVE instance %s on %s has guests on %s' % (
                    uuid, inst['host'], hosts))
    for uuid, hosts in st['guests'].items():
        if instances.get(uuid, {}).get('vm_state') != 'active':
            found.append('guest of %s on %s, which is %s' % (
                uuid, hosts, instances.get(uuid, {}).get('vm_state',
                                                          'gone')))
    for uuid in st['build_requests']:
        found.append('build request of %s left' % uuid)
    for uuid in st['mappings']:
        if uuid not in instances:
            found.append('instance mapping of %s, which is no live '
                         'instance' % uuid)
    for flow, flow_state, uuid in st['unfinished_flows']:
        found.append('flow %s of %s not ended: %s' % (flow, uuid, flow_state))
    for lock in st['zookeeper'].get('locks', []):
        found.append('lock %s left in ZooKeeper' % lock)
    for job in st['zookeeper'].get('jobs', []):
        found.append('job node %s left in ZooKeeper' % job)
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(prog='check_leaks.py')
    parser.add_argument('state_dir')
    parser.add_argument('--json', action='store_true')
    args = parser.parse_args(argv)
    st = state(args.state_dir)
    if args.json:
        print(json.dumps(st, indent=1, sort_keys=True, default=str))
        return 0
    found = problems(st)
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
