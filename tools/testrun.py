"""Run test ids with unittest and print one closing line.

``python tools/testrun.py LABEL TEST_ID...`` prints failures with their
tracebacks, then ``LABEL: N passed, N failed, N skipped``; exits 1 when a
test failed or errored (expected failures count as passed, unexpected
successes as failed). Shared by ``run_tests.sh`` and ``tools/compat``.
"""

import importlib
import os
import sys
import unittest


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


def run(label, test_ids, verbose=False, before_summary=None):
    """Run ``test_ids`` (modules, classes or methods); returns
    ``(passed, failed, skipped)`` after printing the closing line."""
    suite = load(test_ids)
    stream = sys.stdout if verbose else open('/dev/null', 'w')
    result = unittest.TextTestRunner(
        stream=stream, verbosity=2 if verbose else 0).run(suite)
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
    if len(argv) < 2:
        print('usage: testrun.py [-v] LABEL TEST_ID...', file=sys.stderr)
        return 2
    _passed, failed, _skipped = run(argv[0], argv[1:], verbose=verbose)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
