"""No test run can hang: ``tools/testrun.py`` (behind ``run_tests.sh`` and
``tools/compat``) fails a test that blocks past its time limit, prints the
stacks of every thread and green thread, and goes on with the next test.

Runs the real tool in a subprocess on a sample test module that blocks
forever, as upstream's test_bug_2088066 does (a
``threading.Event`` waited on with no timeout). ``ORC_TOOLS`` (set by
``run_tests.sh``) locates the tool.
"""

import os
import subprocess
import sys
import textwrap

import fixtures

from nova import test

SAMPLE = textwrap.dedent('''
    import threading

    from nova import test


    class Sample(test.NoDBTestCase):

        def test_1_blocks_forever(self):
            threading.Event().wait()

        def test_2_runs_after(self):
            self.assertTrue(True)
''')


class TestRunTimeoutTest(test.NoDBTestCase):

    def test_a_test_blocking_forever_fails_with_stacks_and_the_run_goes_on(
            self):
        tools = os.environ.get('ORC_TOOLS')
        self.assertIsNotNone(tools, 'ORC_TOOLS (the repository tools/ '
                             'folder) must be set, as run_tests.sh does')
        folder = self.useFixture(fixtures.TempDir()).path
        with open(os.path.join(folder, 'orc_hang_sample.py'), 'w') as f:
            f.write(SAMPLE)
        env = dict(os.environ, PYTHONPATH=folder)
        env.pop('OS_TEST_TIMEOUT', None)
        proc = subprocess.run(
            [sys.executable, os.path.join(tools, 'testrun.py'), '--timeout',
             '3', 'sample', 'orc_hang_sample'],
            cwd=folder, env=env, capture_output=True, text=True, timeout=120)
        out = proc.stdout
        self.assertEqual(1, proc.returncode, out + proc.stderr)
        self.assertIn('orc_hang_sample.Sample.test_1_blocks_forever TIMED '
                      'OUT after 3s', out)
        # the stacks show where the test waits
        self.assertIn("in test_1_blocks_forever", out)
        self.assertIn('threading.Event().wait()', out)
        self.assertIn('sample: 1 passed, 1 failed, 0 skipped', out)
