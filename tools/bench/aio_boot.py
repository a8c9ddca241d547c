"""One round of tools/bench/aio-boot: boot N servers, wait, delete.

Runs in the all-in-one venv with the demo user's OS_* environment; POSTs
N servers (``--nic none``, m1.nano, the aio image) one after the other
through openstacksdk, waits until all are ACTIVE, and prints
``LABEL wall SECONDS`` (first POST to last ACTIVE); then deletes them and
waits until they are gone. A server in ERROR fails the round.
``--when-active CMD``: a shell command run once all are ACTIVE, before the
deletes (tools/bench/aio-boot --profile stops its profilers there).
"""

import argparse
import subprocess
import sys
import time

import openstack


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--servers', type=int, default=20)
    parser.add_argument('--label', required=True)
    parser.add_argument('--when-active', metavar='CMD')
    args = parser.parse_args()
    conn = openstack.connect(compute_api_version='2.37')
    image = conn.image.find_image('cirros-fake')
    flavor = conn.compute.find_flavor('m1.nano')
    t0 = time.perf_counter()
    servers = [conn.compute.create_server(
        name='bench-%s-%d' % (args.label, i), image_id=image.id,
        flavor_id=flavor.id, networks='none') for i in range(args.servers)]
    pending = {s.id for s in servers}
    deadline = time.monotonic() + 1800
    while pending and time.monotonic() < deadline:
        for server in conn.compute.servers(
                name='^bench-%s-' % args.label):
            if server.id in pending and server.status == 'ACTIVE':
                pending.discard(server.id)
            elif server.id in pending and server.status == 'ERROR':
                sys.exit('server %s went to ERROR' % server.id)
        time.sleep(0.2 if len(servers) <= 20 else 1.0)
    wall = time.perf_counter() - t0
    if pending:
        sys.exit('%d servers not ACTIVE after 1800 s' % len(pending))
    if args.when_active:
        subprocess.run(args.when_active, shell=True, check=True)
    print('%s wall %.2f' % (args.label, wall))
    sys.stdout.flush()
    for server in servers:
        conn.compute.delete_server(server)
    for server in servers:
        conn.compute.wait_for_delete(server, wait=300)


if __name__ == '__main__':
    main()
