"""Run test ids with unittest and print one closing line.

``python tools/testrun.py [--timeout SECONDS] LABEL TEST_ID...`` prints
failures with their tracebacks, then ``LABEL: N passed, N failed, N
skipped``; exits 1 when a test failed or errored (expected failures count as
passed, unexpected successes as failed). Shared by ``run_tests.sh`` and
``tools/compat``.

No run can hang: every test gets ``--timeout`` seconds (default 300, 0 for
none) through ``OS_TEST_TIMEOUT``, which oslotest's base test case (Nova's
included) turns into a ``fixtures.TimeoutException`` in the test; such a
failure is printed with the stacks of every thread and green thread of the
process at that moment, and the run goes on with the next test.

``run(..., listed=...)`` (used by ``tools/compat``) takes tests known not to
pass by construction: a listed test that fails, errors or times out is
printed as ``LABEL LISTED: ...`` with its reason and counted as listed, not
failed, and the closing line becomes ``LABEL: N passed, N failed, N
skipped, N listed, N stale``; a listed test that passes is printed as
``LABEL STALE LISTING: ...`` (the list is out of date) and counted as
passed and stale (``tools/compat`` then exits non-zero). An entry may give
its own time limit and the failure it expects (any other failure of the
test stays a real one).
"""

import gc
import importlib
import os
import re
import sys
import traceback
import unittest

#: seconds a test may take (``OS_TEST_TIMEOUT``)
DEFAULT_TIMEOUT = 300


def load(test_ids):
    """A suite of ``test_ids``: packages are discovered (``test_*.py``
    below them), modules, classes and methods loaded by name."""
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for test_id in test_ids:
        try:
            module = importlib.import_module(test_id)
        except ImportError:
            module = None
        if module is not None and hasattr(module, '__path__'):
            top = test_id.split('.')[0]
            top_dir = os.path.dirname(
                importlib.import_module(top).__path__[0])
            suite.addTests(loader.discover(
                module.__path__[0], pattern='test_*.py', top_level_dir=top_dir))
        else:
            suite.addTests(loader.loadTestsFromName(test_id))
    return suite


def stacks():
    """The stacks of every thread and green thread of this process (str)."""
    out = []
    for ident, frame in sys._current_frames().items():
        out.append('--- thread %s\n%s' % (
            ident, ''.join(traceback.format_stack(frame))))
    try:
        import greenlet
    except ImportError:
        greenlet = None
    if greenlet is not None:
        for obj in gc.get_objects():
            if isinstance(obj, greenlet.greenlet) and obj.gr_frame:
                out.append('--- green thread %r\n%s' % (
                    obj, ''.join(traceback.format_stack(obj.gr_frame))))
    return '\n'.join(out)


class Listed:
    """A test known not to pass by construction (see ``tools/compat``).

    :param reason: one line printed when it fails as expected
    :param timeout: seconds it gets instead of the run's limit (it may wait
        forever for a call that never comes); None keeps the run's
    :param fails_with: a regular expression its traceback must match for
        the failure to count as listed (the failure the listing explains);
        a failure that does not match is a real one. None: any failure
    """

    def __init__(self, reason, timeout=None, fails_with=None):
        self.reason = reason
        self.timeout = timeout
        self.fails_with = fails_with

    def explains(self, trace):
        """Whether ``trace`` (a failure's text) is the expected failure."""
        return (self.fails_with is None or
                re.search(self.fails_with, trace) is not None)


class _Result(unittest.TextTestResult):
    """Prints the stacks of the process when a test timed out (not for a
    listed test: it is known to wait), gives a listed test its own time
    limit, and records the ids of the tests that passed."""

    #: test id -> :class:`Listed`; set by :func:`run`
    listed = {}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.passed_ids = set()
        self._saved_timeout = None

    def startTest(self, test):
        # oslotest reads OS_TEST_TIMEOUT in setUp, after startTest
        entry = self.listed.get(test.id())
        self._saved_timeout = None
        if entry is not None and entry.timeout:
            self._saved_timeout = os.environ.get('OS_TEST_TIMEOUT')
            os.environ['OS_TEST_TIMEOUT'] = str(int(entry.timeout))
        super().startTest(test)

    def stopTest(self, test):
        super().stopTest(test)
        if self._saved_timeout is not None:
            os.environ['OS_TEST_TIMEOUT'] = self._saved_timeout
            self._saved_timeout = None

    def addSuccess(self, test):
        self.passed_ids.add(test.id())
        super().addSuccess(test)

    def addError(self, test, err):
        # testtools wraps the exception (with its details) in a
        # _StringException: recognise the timeout by its text
        if 'TimeoutException' in '%s %s' % (err[0].__name__, err[1]):
            if test.id() in self.listed:
                print('%s TIMED OUT after %ss (listed)' % (
                    test.id(), os.environ.get('OS_TEST_TIMEOUT')),
                    flush=True)
            else:
                print('%s TIMED OUT after %ss; stacks of every thread and '
                      'green thread:\n%s' % (test.id(), os.environ.get(
                          'OS_TEST_TIMEOUT'), stacks()), flush=True)
        super().addError(test, err)


def run(label, test_ids, verbose=False, before_summary=None, timeout=None,
        listed=None, counts=None):
    """Run ``test_ids`` (modules, classes or methods); returns
    ``(passed, failed, skipped)`` after printing the closing line.

    :param timeout: seconds per test (``OS_TEST_TIMEOUT``); None keeps the
        environment's, else :data:`DEFAULT_TIMEOUT`
    :param listed: test id -> :class:`Listed`, tests that cannot pass by
        construction: when one fails it counts as listed, not failed; when
        one passes it counts as passed and stale. None: no list, and the
        closing line has no listed/stale counts
    :param counts: a dict updated with every count (``passed``,
        ``failed``, ``skipped``, ``listed``, ``stale``)
    """
    if timeout is not None:
        os.environ['OS_TEST_TIMEOUT'] = str(int(timeout))
    os.environ.setdefault('OS_TEST_TIMEOUT', str(DEFAULT_TIMEOUT))
    _Result.listed = dict(listed or {})
    suite = load(test_ids)
    stream = sys.stdout if verbose else open('/dev/null', 'w')
    result = unittest.TextTestRunner(
        stream=stream, verbosity=2 if verbose else 0,
        resultclass=_Result).run(suite)
    _Result.listed = {}
    listing = dict(listed or {})
    not_passed = [(test, trace) for test, trace in
                  result.failures + result.errors]
    expected = [(test, trace) for test, trace in not_passed
                if test.id() in listing and listing[test.id()].explains(trace)]
    real = [(test, trace) for test, trace in not_passed
            if (test, trace) not in expected]
    unexpected = list(result.unexpectedSuccesses)
    stale = sorted(set(listing) & result.passed_ids)
    failed = len(real) + len(unexpected)
    skipped = len(result.skipped)
    passed = result.testsRun - failed - len(expected) - skipped
    for test, trace in real:
        note = ''
        if test.id() in listing:
            note = (' (listed, but its failure does not match %r: a real '
                    'failure)' % listing[test.id()].fails_with)
        print('%s FAILED: %s%s\n%s' % (label, test.id(), note, trace))
    for test in unexpected:
        print('%s UNEXPECTED SUCCESS: %s' % (label, test.id()))
    for test, reason in result.skipped:
        print('%s SKIPPED: %s (%s)' % (label, test.id(), reason))
    for test, trace in expected:
        last = trace.strip().splitlines()[-1] if trace.strip() else ''
        print('%s LISTED: %s (%s; it ended with: %s)' % (
            label, test.id(), listing[test.id()].reason, last[:300]))
    for test_id in stale:
        print('%s STALE LISTING: %s PASSED although it is listed as unable '
              'to pass (%s): remove its entry' % (
                  label, test_id, listing[test_id].reason))
    if before_summary is not None:
        before_summary()
    line = '%s: %d passed, %d failed, %d skipped' % (
        label, passed, failed, skipped)
    if listed is not None:
        line += ', %d listed, %d stale' % (len(expected), len(stale))
    print(line)
    sys.stdout.flush()
    if counts is not None:
        counts.update(passed=passed, failed=failed, skipped=skipped,
                      listed=len(expected), stale=len(stale))
    return passed, failed, skipped


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    verbose = '-v' in argv
    argv = [a for a in argv if a != '-v']
    timeout = None
    if argv[:1] == ['--timeout'] and len(argv) > 1:
        timeout, argv = int(argv[1]), argv[2:]
    if len(argv) < 2:
        print('usage: testrun.py [-v] [--timeout SECONDS] LABEL TEST_ID...',
              file=sys.stderr)
        return 2
    _passed, failed, _skipped = run(argv[0], argv[1:], verbose=verbose,
                                    timeout=timeout)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
