"""``tools/compat`` reports listed upstream tests apart from real failures.

``tools/compat.d/replaced-internals.yaml`` lists the upstream tests that
cannot pass with our services by construction (they patch or wait for a
stock internal our boot flow does not call). With our services a listed test
that fails as its entry expects counts as ``listed``, not ``failed``; a
listed test that passes is a stale entry, reported loudly, and the run
exits non-zero; any other failure is a real one. ``--stock`` lists nothing.

Runs the real tool in a subprocess on a sample module, with a listing of its
own (``--listing``), and checks that the repository's listing names tests
that exist. ``ORC_TOOLS`` (set by ``run_tests.sh``) locates the tool.
"""

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
import unittest

import fixtures

from nova import test

SAMPLE = textwrap.dedent('''
    import threading

    from nova import test


    class Sample(test.NoDBTestCase):

        def test_listed_waits_forever(self):
            threading.Event().wait()

        def test_listed_but_passes(self):
            self.assertTrue(True)

        def test_listed_but_fails_otherwise(self):
            self.fail('not the failure its entry explains')

        def test_unlisted_fails(self):
            self.fail('a real failure')

        def test_passes(self):
            self.assertTrue(True)
''')

LISTING = textwrap.dedent('''
    orc_listing_sample.Sample.test_listed_waits_forever:
      patches: a stock internal
      why: our flow does not call it
      intent: some.intent.Test
      fails_with: TimeoutException
      timeout: 2
    orc_listing_sample.Sample.test_listed_but_passes:
      patches: another stock internal
      why: our flow does not call it
      intent: some.intent.Test
    orc_listing_sample.Sample.test_listed_but_fails_otherwise:
      patches: a third stock internal
      why: our flow does not call it
      intent: some.intent.Test
      fails_with: TimeoutException
''')

#: run_tests.sh's pattern for a suite's closing line
RUN_TESTS_LINE = re.compile(r'^([a-z-]+: )?[0-9]+ passed, [0-9]+ failed',
                            re.M)


def _tools():
    return os.environ.get('ORC_TOOLS')


class CompatListingTest(test.NoDBTestCase):

    def setUp(self):
        super().setUp()
        self.assertIsNotNone(_tools(), 'ORC_TOOLS (the repository tools/ '
                             'folder) must be set, as run_tests.sh does')
        self.folder = self.useFixture(fixtures.TempDir()).path
        with open(os.path.join(self.folder, 'orc_listing_sample.py'),
                  'w') as f:
            f.write(SAMPLE)
        self.listing = os.path.join(self.folder, 'listing.yaml')
        with open(self.listing, 'w') as f:
            f.write(LISTING)

    def _compat(self, *args):
        env = dict(os.environ, PYTHONPATH=self.folder)
        env.pop('OS_TEST_TIMEOUT', None)
        proc = subprocess.run(
            [sys.executable, os.path.join(_tools(), 'compat.py'),
             '--listing', self.listing] + list(args),
            cwd=self.folder, env=env, capture_output=True, text=True,
            timeout=180)
        return proc.returncode, proc.stdout + proc.stderr

    def _summary(self, out, label):
        lines = [line for line in out.splitlines()
                 if line.startswith(label + ': ') and ' passed, ' in line]
        self.assertEqual(1, len(lines), out)
        return lines[0]

    def test_listed_failures_apart_stale_loud_real_failures_failed(self):
        rc, out = self._compat('--timeout', '60', 'orc_listing_sample')
        self.assertEqual(1, rc, out)
        summary = self._summary(out, 'orc')
        self.assertEqual(
            'orc: 2 passed, 2 failed, 0 skipped, 1 listed, 1 stale', summary)
        # the closing line still reads as run_tests.sh expects
        self.assertRegex(summary, RUN_TESTS_LINE)
        sample = 'orc_listing_sample.Sample.'
        # the listed test waited past its own time limit (2 s, not 60),
        # without the stacks of every thread printed
        self.assertIn(sample + 'test_listed_waits_forever TIMED OUT after '
                      '2s (listed)', out)
        self.assertNotIn('stacks of every thread', out)
        self.assertRegex(out, r'orc LISTED: %stest_listed_waits_forever '
                         r'\(patches a stock internal; our intent test: '
                         r'some\.intent\.Test' % re.escape(sample))
        self.assertNotIn('orc FAILED: %stest_listed_waits_forever' % sample,
                         out)
        self.assertIn('orc STALE LISTING: %stest_listed_but_passes PASSED'
                      % sample, out)
        self.assertIn('orc FAILED: %stest_unlisted_fails' % sample, out)
        # a listed test failing otherwise than its entry says is real
        self.assertIn("orc FAILED: %stest_listed_but_fails_otherwise "
                      "(listed, but its failure does not match "
                      "'TimeoutException'" % sample, out)

    def test_only_listed_failures_is_a_passing_run(self):
        rc, out = self._compat(
            'orc_listing_sample.Sample.test_listed_waits_forever',
            'orc_listing_sample.Sample.test_passes')
        self.assertEqual(0, rc, out)
        self.assertEqual('orc: 1 passed, 0 failed, 0 skipped, 1 listed, '
                         '0 stale', self._summary(out, 'orc'))

    def test_stock_lists_nothing(self):
        rc, out = self._compat(
            '--stock', '--timeout', '2',
            'orc_listing_sample.Sample.test_listed_waits_forever',
            'orc_listing_sample.Sample.test_passes')
        self.assertEqual(1, rc, out)
        self.assertEqual('stock: 1 passed, 1 failed, 0 skipped',
                         self._summary(out, 'stock'))
        self.assertIn('orc_listing_sample.Sample.test_listed_waits_forever '
                      'TIMED OUT after 2s; stacks of every thread', out)
        self.assertNotIn('LISTED', out)

    def test_malformed_entry_stops_the_run(self):
        with open(self.listing, 'a') as f:
            f.write('orc_listing_sample.Sample.test_passes:\n'
                    '  patches: something\n')
        rc, out = self._compat('orc_listing_sample.Sample.test_passes')
        self.assertNotEqual(0, rc, out)
        self.assertIn("orc_listing_sample.Sample.test_passes: missing "
                      "['why', 'intent']", out)


class RepositoryListingTest(test.NoDBTestCase):
    """The repository's listing loads, and names upstream tests and intent
    tests of ours that exist."""

    def _load(self):
        self.assertIsNotNone(_tools(), 'ORC_TOOLS must be set')
        spec = importlib.util.spec_from_file_location(
            'orc_compat_tool', os.path.join(_tools(), 'compat.py'))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        import yaml
        with open(module.LISTING) as f:
            raw = yaml.safe_load(f)
        return module.load_listing(module.LISTING), raw

    def _assert_loads(self, test_id):
        suite = unittest.TestLoader().loadTestsFromName(test_id)
        self.assertGreater(suite.countTestCases(), 0, test_id)
        for case in _cases(suite):
            self.assertNotIsInstance(
                case, unittest.loader._FailedTest, test_id)

    def test_entries_name_existing_tests(self):
        listing, raw = self._load()
        self.assertIn('nova.tests.functional.regressions.test_bug_2088066.'
                      'TestDeleteInstanceWhileSchedulingWithBDM.'
                      'test_delete_instance_while_scheduling_with_bdm',
                      listing)
        for test_id, entry in raw.items():
            self.assertTrue(test_id.startswith('nova.tests.functional.'),
                            test_id)
            self._assert_loads(test_id)
            intents = entry['intent'].split()
            self.assertTrue(intents, test_id)
            for intent in intents:
                self.assertTrue(intent.startswith(
                    'nova.tests.functional.orc.'), intent)
                self._assert_loads(intent)


def _cases(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from _cases(item)
        else:
            yield item
