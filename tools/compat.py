"""Runner behind ``tools/compat``: upstream Nova tests, ours or stock.

Loads the named tests from the installed ``nova.tests.functional`` package,
installs :func:`nova.tests.functional.orc.fixtures.install` unless
``--stock`` is given, and prints ``<label>: N passed, N failed, N skipped``
(label ``orc`` or ``stock``) through :mod:`testrun`.

With our services, the upstream tests listed in
``tools/compat.d/replaced-internals.yaml`` (next to this file, in the
repository: see that file for its format) are reported apart: they patch or
wait for a stock internal our boot flow does not call, so they cannot pass
by construction, and each names a test of ours with the same intent. Such a
test that fails as its entry expects counts as ``listed``, not failed
(``orc: N passed, N failed, N skipped, N listed, N stale``); one that passes
is a stale entry, printed loudly, and the run exits non-zero. With
``--stock`` nothing is listed.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testrun  # noqa: E402

#: the list of upstream tests that cannot pass with our services
LISTING = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       'compat.d', 'replaced-internals.yaml')
#: the fields every entry of the list has
FIELDS = ('patches', 'why', 'intent')


def load_listing(path):
    """``{test id: testrun.Listed}`` from the YAML list at ``path``.

    Every entry needs :data:`FIELDS` (strings); ``timeout`` (seconds) and
    ``fails_with`` (a regular expression) are optional. A malformed file
    raises ``ValueError`` naming the entry: a list that silently lists
    nothing would turn listed tests into failures no one can explain.
    """
    import yaml
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError('%s: a mapping of test ids expected' % path)
    listing = {}
    for test_id, entry in data.items():
        if not isinstance(entry, dict):
            raise ValueError('%s: %s: a mapping expected' % (path, test_id))
        missing = [f for f in FIELDS if not entry.get(f)]
        unknown = set(entry) - set(FIELDS) - {'timeout', 'fails_with'}
        if missing or unknown:
            raise ValueError('%s: %s: missing %s, unknown %s' % (
                path, test_id, missing, sorted(unknown)))
        listing[test_id] = testrun.Listed(
            reason='patches %s; our intent test: %s' % (
                ' '.join(str(entry['patches']).split()), entry['intent']),
            timeout=entry.get('timeout'), fails_with=entry.get('fails_with'))
    return listing


def main(argv=None):
    parser = argparse.ArgumentParser(prog='tools/compat')
    parser.add_argument('--stock', action='store_true',
                        help='run on stock Nova managers (nothing listed)')
    parser.add_argument('-v', '--verbose', action='store_true')
    parser.add_argument('--timeout', type=int, default=testrun.DEFAULT_TIMEOUT,
                        help='seconds per test before it fails with the '
                             'stacks of every (green) thread printed '
                             '(default %(default)s; 0: none)')
    parser.add_argument('--listing', default=LISTING, metavar='FILE',
                        help='upstream tests that cannot pass with our '
                             'services (default %(default)s)')
    parser.add_argument('tests', nargs='+', metavar='TEST_ID')
    args = parser.parse_args(argv)
    listed = None if args.stock else load_listing(args.listing)
    from nova.tests.functional.orc import fixtures
    if not args.stock:
        fixtures.install()
    label = 'stock' if args.stock else 'orc'
    counts = {}
    testrun.run(
        label, args.tests, verbose=args.verbose, timeout=args.timeout,
        listed=listed, counts=counts,
        before_summary=lambda: print(
            '%s: flows run (name, end state): %s' % (
                label, sorted(fixtures.FlowTracker.finished.items()))))
    return 1 if counts['failed'] or counts['stale'] else 0


if __name__ == '__main__':
    sys.exit(main())
