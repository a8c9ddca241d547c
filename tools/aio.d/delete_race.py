"""Delete servers while they build, stock and ours, and count what is left.

Run by ``tools/aio.d/test_delete_race.sh`` on an all-in-one with neutron
and a fake driver whose spawn takes a few seconds (``orc_fake``). For each
mode (``--mode stock`` or ``orc``, the deployment already switched) it
creates ``--servers`` servers with a port on a network of their own, deletes
each at a random point of its build (0 to ``--max-delay`` seconds after its
create), waits until they are all gone and counts, for those servers: guests
left on the fake hypervisors, ports, placement allocations, build requests,
and (ours) locks. Prints ``MODE: guests N, ports N, allocations N, build
requests N, locks N`` and exits 1 when any count is not zero.
"""

import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_leaks  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(prog='delete_race.py')
    parser.add_argument('--state', required=True)
    parser.add_argument('--mode', required=True)
    parser.add_argument('--servers', type=int, default=10)
    parser.add_argument('--max-delay', type=float, default=5.0)
    parser.add_argument('--seed', type=int, default=None)
    args = parser.parse_args(argv)
    rand = random.Random(args.seed)
    conn = check_leaks.admin_connection(args.state)
    net = conn.network.find_network('race-net')
    if net is None:
        net = conn.network.create_network(name='race-net')
        conn.network.create_subnet(network_id=net.id, name='race-subnet',
                                   ip_version=4, cidr='10.77.0.0/24')
    image = conn.image.find_image('cirros-fake').id
    flavor = conn.compute.find_flavor('m1.nano').id
    plan = sorted((rand.uniform(0, args.max_delay), i)
                  for i in range(args.servers))
    t0 = time.monotonic()
    servers = []
    for i in range(args.servers):
        servers.append(conn.compute.create_server(
            name='race-%s-%d' % (args.mode, i), image_id=image,
            flavor_id=flavor, networks=[{'uuid': net.id}]))
    created = time.monotonic()
    for delay, i in plan:
        wait = created + delay - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        conn.compute.delete_server(servers[i].id)
    deadline = time.monotonic() + 300
    ids = {s.id for s in servers}
    while time.monotonic() < deadline:
        if not [s for s in conn.compute.servers(all_projects=True)
                if s.id in ids]:
            break
        time.sleep(1)
    took = time.monotonic() - t0
    time.sleep(3)  # builds that were to find their server gone
    st = check_leaks.state(args.state)
    guests = [u for u in st['guests'] if u in ids]
    ports = [p.id for p in conn.network.ports()
             if p.device_id in ids]
    allocations = [u for u in st['consumers'] if u in ids]
    build_requests = [u for u in st['build_requests'] if u in ids]
    locks = [lock for lock in st['zookeeper'].get('locks', [])
             if lock.split('/', 1)[1] in ids]
    left = [s.id for s in conn.compute.servers(all_projects=True)
            if s.id in ids]
    print('%s: %d servers deleted during their builds in %.1fs; left: '
          'servers %d, guests %d, ports %d, allocations %d, build requests '
          '%d, locks %d' % (args.mode, args.servers, took, len(left),
                            len(guests), len(ports), len(allocations),
                            len(build_requests), len(locks)), flush=True)
    bad = left or guests or ports or allocations or build_requests or locks
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
