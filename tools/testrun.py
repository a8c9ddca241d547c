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
"""

import gc
import importlib
import os
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


class _Result(unittest.TextTestResult):
    """Prints the stacks of the process when a test timed out."""

    def addError(self, test, err):
        # testtools wraps the exception (with its details) in a
        # _StringException: recognise the timeout by its text
        if 'TimeoutException' in '%s %s' % (err[0].__name__, err[1]):
            print('%s TIMED OUT after %ss; stacks of every thread and green '
                  'thread:\n%s' % (test.id(), os.environ.get(
                      'OS_TEST_TIMEOUT'), stacks()), flush=True)
        super().addError(test, err)


def run(label, test_ids, verbose=False, before_summary=None, timeout=None):
    """Run ``test_ids`` (modules, classes or methods); returns
    ``(passed, failed, skipped)`` after printing the closing line.

    :param timeout: seconds per test (``OS_TEST_TIMEOUT``); None keeps the
        environment's, else :data:`DEFAULT_TIMEOUT`
    """
    if timeout is not None:
        os.environ['OS_TEST_TIMEOUT'] = str(int(timeout))
    os.environ.setdefault('OS_TEST_TIMEOUT', str(DEFAULT_TIMEOUT))
    suite = load(test_ids)
    stream = sys.stdout if verbose else open('/dev/null', 'w')
    result = unittest.TextTestRunner(
        stream=stream, verbosity=2 if verbose else 0,
        resultclass=_Result).run(suite)
    failed = (len(result.failures) + len(result.errors) +
              len(result.unexpectedSuccesses))
    skipped = len(result.skipped)
    passed = result.testsRun - failed - skipped
    for test, trace in result.failures + result.errors:
        print('%s FAILED: %s\n%s' % (label, test.id(), trace))
    for test in result.unexpectedSuccesses:
        print('%s UNEXPECTED SUCCESS: %s' % (label, test.id()))
    for test, reason in result.skipped:
        print('%s SKIPPED: %s (%s)' % (label, test.id(), reason))
    if before_summary is not None:
        before_summary()
    print('%s: %d passed, %d failed, %d skipped' % (
        label, passed, failed, skipped))
    sys.stdout.flush()
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
