"""Boot N servers through Nova's functional harness, stock vs nova-orc.

Each round starts a fresh harness (API, placement, scheduler, conductor,
two fake-driver computes, Neutron/Glance/Cinder fixtures), POSTs N servers
(separate requests, ``networks: none``), and waits until all are ACTIVE;
the wall time from the first POST to the last ACTIVE is the round's time.
Stock and orc rounds alternate (stock first) so machine noise hits both.
Printed: every round, the medians, the ratio orc/stock of the medians, and
the journal cost per boot (TaskFlow persistence calls, wall and CPU ms
spent in them, measured by ``nova.orc.persistence.backend.STATS``) from
boots run one at a time after the rounds (``--journal-boots``).

Usage: tools/bench/boot [-n 20] [--rounds 3] [--zookeeper 127.0.0.1:2181]
(without --zookeeper the orc rounds use memory:// coordination).
"""

import argparse
import statistics
import sys
import time
import unittest

from nova.orc.persistence import backend as journal
from nova.tests.functional import integrated_helpers
from nova.tests.functional.orc import fixtures as orc_fixtures

OPTIONS = {'servers': 20, 'orc': False, 'zookeeper': None}
RESULTS = []


class BootBench(integrated_helpers._IntegratedTestBase):
    """One round; configured through OPTIONS."""

    ADMIN_API = True
    microversion = 'latest'

    def setUp(self):
        if OPTIONS['orc']:
            self.useFixture(orc_fixtures.OrcFixture(
                zookeeper=OPTIONS['zookeeper']))
        super().setUp()
        self.flags(instances=-1, cores=-1, ram=-1, group='quota')
        self._start_compute('host2')

    def _setup_compute_service(self):
        # room for 2 x 32 one-vCPU servers on the fake driver's 8 vCPUs
        self.flags(cpu_allocation_ratio=8.0, ram_allocation_ratio=4.0)
        self._start_compute('host1')

    def test_boot(self):
        n = OPTIONS['servers']
        journal.STATS.reset()
        before = sum(orc_fixtures.FlowTracker.finished.values())
        t0 = time.perf_counter()
        servers = [self.api.post_server(
            {'server': self._build_server(networks='none')})
            for _ in range(n)]
        for server in servers:
            self._wait_for_state_change(server, 'ACTIVE', max_retries=600)
        wall = time.perf_counter() - t0
        flows = sum(orc_fixtures.FlowTracker.finished.values()) - before
        if OPTIONS['orc']:
            self.assertEqual(n, flows, 'every boot must run as a flow')
        RESULTS.append({'orc': OPTIONS['orc'], 'wall': wall, 'flows': flows,
                        'journal': journal.STATS.snapshot()})

    def test_journal_cost(self):
        """Boots one at a time: with no other boot running, the CPU time
        of the threads inside journal calls is the journal's own (under
        eventlet, a call that yields would otherwise be charged with the
        other boots' work)."""
        n = OPTIONS['servers']
        samples = []
        for _ in range(n):
            journal.STATS.reset()
            server = self.api.post_server(
                {'server': self._build_server(networks='none')})
            self._wait_for_state_change(server, 'ACTIVE', max_retries=600)
            samples.append(journal.STATS.snapshot())
        RESULTS.append({'orc': True, 'journal_samples': samples})


def run_round(orc, test='test_boot'):
    OPTIONS['orc'] = orc
    result = unittest.TestResult()
    BootBench(test).run(result)
    for _test, trace in result.errors + result.failures:
        print(trace, file=sys.stderr)
        raise SystemExit('round failed (%s)' % ('orc' if orc else 'stock'))
    return RESULTS[-1]


def main(argv=None):
    parser = argparse.ArgumentParser(prog='tools/bench/boot')
    parser.add_argument('-n', '--servers', type=int, default=20)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--journal-boots', type=int, default=5,
                        help='boots, one at a time, to measure the journal')
    parser.add_argument('--zookeeper', default=None,
                        help='host:port of ZooKeeper for the orc rounds')
    args = parser.parse_args(argv)
    OPTIONS['servers'] = args.servers
    OPTIONS['zookeeper'] = args.zookeeper
    print('boot benchmark: %d servers per round, %d rounds each, '
          'coordination %s' % (args.servers, args.rounds,
                               'zookeeper://' + args.zookeeper
                               if args.zookeeper else 'memory://'))
    stock, orc = [], []
    for i in range(args.rounds):
        s = run_round(False)
        o = run_round(True)
        stock.append(s['wall'])
        orc.append(o)
        j = o['journal']
        print('round %d: stock %.2fs  orc %.2fs  (orc flows %d, journal '
              '%d calls, %.1f ms wall, %.1f ms CPU)' % (
                  i + 1, s['wall'], o['wall'], o['flows'], j['calls'],
                  j['seconds'] * 1000, j['cpu_seconds'] * 1000))
        sys.stdout.flush()
    stock_median = statistics.median(stock)
    orc_median = statistics.median([o['wall'] for o in orc])
    n = args.servers
    OPTIONS['servers'] = args.journal_boots
    samples = run_round(True, 'test_journal_cost')['journal_samples']
    per_boot_wall = statistics.median(s['seconds'] * 1000 for s in samples)
    per_boot_cpu = statistics.median(
        s['cpu_seconds'] * 1000 for s in samples)
    per_boot_calls = statistics.median(s['calls'] for s in samples)
    concurrent_cpu = statistics.median(
        [o['journal']['cpu_seconds'] * 1000 / n for o in orc])
    print('median wall: stock %.2fs (%.0f ms/boot), orc %.2fs '
          '(%.0f ms/boot)' % (stock_median, stock_median * 1000 / n,
                              orc_median, orc_median * 1000 / n))
    print('ratio orc/stock (wall, medians): %.2f' % (
        orc_median / stock_median))
    print('journal per boot (median of %d boots one at a time): %d calls, '
          '%.2f ms wall, %.2f ms CPU' % (len(samples), per_boot_calls,
                                         per_boot_wall, per_boot_cpu))
    print('journal per boot during the concurrent rounds: %.2f ms CPU '
          '(includes other boots\' work run while a journal call yields)'
          % concurrent_cpu)
    return 0


if __name__ == '__main__':
    sys.exit(main())
