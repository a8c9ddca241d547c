"""The benchmarks put back what they change: ``tools/bench/demo_quota.py``
reads the demo project's limits in either shape ``openstack quota show -f
json`` prints, and refuses (non-zero, naming what it read) when one is
missing, so that ``tools/bench/aio-boot`` and ``tools/bench/soak`` never
lift limits they cannot restore. Runs the real tool in a subprocess;
``ORC_TOOLS`` (set by ``run_tests.sh``) locates it.
"""

import json
import os
import subprocess
import sys

from nova import test


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
