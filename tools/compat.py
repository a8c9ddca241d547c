"""Runner behind ``tools/compat``: upstream Nova tests, ours or stock.

Loads the named tests from the installed ``nova.tests.functional`` package,
installs :func:`nova.tests.functional.orc.fixtures.install` unless
``--stock`` is given, and prints ``<label>: N passed, N failed, N skipped``
(label ``orc`` or ``stock``) through :mod:`testrun`.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testrun  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(prog='tools/compat')
    parser.add_argument('--stock', action='store_true',
                        help='run on stock Nova managers')
    parser.add_argument('-v', '--verbose', action='store_true')
    parser.add_argument('--timeout', type=int, default=testrun.DEFAULT_TIMEOUT,
                        help='seconds per test before it fails with the '
                             'stacks of every (green) thread printed '
                             '(default %(default)s; 0: none)')
    parser.add_argument('tests', nargs='+', metavar='TEST_ID')
    args = parser.parse_args(argv)
    from nova.tests.functional.orc import fixtures
    if not args.stock:
        fixtures.install()
    label = 'stock' if args.stock else 'orc'
    _passed, failed, _skipped = testrun.run(
        label, args.tests, verbose=args.verbose, timeout=args.timeout,
        before_summary=lambda: print(
            '%s: flows run (name, end state): %s' % (
                label, sorted(fixtures.FlowTracker.finished.items()))))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
