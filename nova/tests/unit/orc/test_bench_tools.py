"""The benchmarks put back what they change: ``tools/bench/demo_quota.py``
reads the demo project's limits in either shape ``openstack quota show -f
json`` prints, and refuses (non-zero, naming what it read) when one is
missing, so that ``tools/bench/aio-boot`` and ``tools/bench/soak`` never
lift limits they cannot restore; ``tools/bench/profile_boot.py`` reads
py-spy's raw profiles and reports per boot. Runs the real tools;
``ORC_TOOLS`` (set by ``run_tests.sh``) locates them.
"""

import importlib.util
import json
import os
import subprocess
import sys

import fixtures

from nova import test


def _tool(name):
    path = os.path.join(os.environ['ORC_TOOLS'], 'bench', name + '.py')
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class DemoQuotaTest(test.NoDBTestCase):

    def _run(self, shown):
        tool = os.path.join(os.environ['ORC_TOOLS'], 'bench', 'demo_quota.py')
        return subprocess.run([sys.executable, tool],
                              input=json.dumps(shown), capture_output=True,
                              text=True, timeout=60)

    def test_the_list_of_rows_todays_client_prints(self):
        result = self._run([{'Resource': 'instances', 'Limit': 10},
                            {'Resource': 'cores', 'Limit': 20},
                            {'Resource': 'ram', 'Limit': 51200},
                            {'Resource': 'key-pairs', 'Limit': 100}])
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertEqual('--instances 10 --cores 20 --ram 51200\n',
                         result.stdout)

    def test_the_dict_older_clients_print(self):
        result = self._run({'instances': -1, 'cores': 4, 'ram': 2048})
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertEqual('--instances -1 --cores 4 --ram 2048\n',
                         result.stdout)

    def test_a_missing_limit_fails_naming_it(self):
        result = self._run([{'Resource': 'instances', 'Limit': 10}])
        self.assertNotEqual(0, result.returncode)
        self.assertEqual('', result.stdout)
        self.assertIn('no cores/ram limit', result.stderr)


#: py-spy --format raw --subprocesses: process frames first, then the
#: stack outermost first, then the sample count
RAW = (
    'process 10:"nova-conductor: ServiceWrapper worker(0)";'
    'process 11:"nova-conductor: worker";run (nova/orc/engine.py:700);'
    'wait (threading.py:320) 30\n'
    'process 10:"nova-conductor";run (nova/orc/engine.py:712);'
    'save (nova/orc/persistence/backend.py:40) 10\n'
    # uwsgi's command line holds ';'; no Python frame: not counted
    'process 12:"uwsgi --env FILES=nova.conf;local.conf" 500\n'
    'garbage line\n')


class ProfileReportTest(test.NoDBTestCase):

    def setUp(self):
        super().setUp()
        self.tool = _tool('profile_boot')
        self.dir = self.useFixture(fixtures.TempDir()).path

    def test_samples_per_function_self_and_inclusive(self):
        path = os.path.join(self.dir, 'orc.nova-conductor1.txt')
        with open(path, 'w') as f:
            f.write(RAW)
        own, inclusive, total = self.tool.read_raw(path)
        self.assertEqual(40, total)
        self.assertEqual({'wait (threading.py)': 30,
                          'save (nova/orc/persistence/backend.py)': 10},
                         dict(own))
        # lines of one function are one function; process frames are not
        self.assertEqual(40, inclusive['run (nova/orc/engine.py)'])
        self.assertNotIn('process 10', ' '.join(inclusive))

    def _counters(self, mode, when, cpu, packets, commits):
        with open(os.path.join(self.dir, 'counters.%s.%s.json' % (
                mode, when)), 'w') as f:
            json.dump({'cpu': cpu, 'zookeeper_packets': packets,
                       'transactions': {'aio_nova_api': commits}}, f)

    def test_report_gives_per_boot_figures_and_ratios(self):
        self._counters('stock', 'before', {'nova-conductor': 10.0}, None, 100)
        self._counters('stock', 'after', {'nova-conductor': 12.0}, None, 300)
        self._counters('orc', 'before', {'nova-conductor': 5.0}, 1000, 100)
        self._counters('orc', 'after', {'nova-conductor': 8.0}, 1400, 700)
        with open(os.path.join(self.dir, 'orc.nova-conductor1.txt'),
                  'w') as f:
            f.write(RAW)
        out = self.useFixture(fixtures.StringStream('stdout'))
        self.useFixture(fixtures.MonkeyPatch('sys.stdout', out.stream))
        self.tool.report(self.dir, servers=4, top=5, rate=10)
        out.stream.flush()
        lines = out.getDetails()['stdout'].as_text().splitlines()
        # 2 s and 3 s of conductor CPU for 4 boots: 0.5 and 0.75 per boot
        self.assertIn(['CPU', 's,', 'nova-conductor', '0.500', '0.750',
                       '1.50'], [line.split() for line in lines])
        self.assertIn(['ZooKeeper', 'packets', 'received', '-', '100.0',
                       '-'], [line.split() for line in lines])
        self.assertIn(['transactions,', 'aio_nova_api', '50.0', '150.0',
                       '3.00'], [line.split() for line in lines])
        # 40 samples at 10 a second over 4 boots: 1 s per boot
        self.assertIn('orc, nova-conductor1: 40 samples, 1.000 s per boot',
                      lines)
