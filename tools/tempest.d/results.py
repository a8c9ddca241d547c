"""Read Tempest's subunit results; compare a stock run with ours.

Run by ``tools/tempest`` with the Tempest venv's python (python-subunit and
testtools come with Tempest).

  results.py summary SUBUNIT RESULTS_OUT
      prints ``N passed, N failed, N skipped`` and the failing test ids;
      writes RESULTS_OUT, one ``STATUS TEST_ID`` a line (STATUS: pass, fail
      or skip), which ``compare`` reads.
  results.py compare STOCK_RESULTS ORC_RESULTS REGRESSIONS_OUT
      prints the tests that pass on stock and fail on ours, plus failures
      only ours has (the regressions), and the reverse, writes the
      regressions to REGRESSIONS_OUT (one id a line, empty when none)
      and exits 1 when there is any.

A test that ran on one side only (a class whose setUpClass failed shows as
one ``setUpClass (CLASS)`` failure instead of its tests) is listed apart.
"""
import sys

import subunit
import testtools

# subunit v2 statuses; xfail counts as a pass, an unexpected success as a
# failure, as stestr does
STATUS = {'success': 'pass', 'xfail': 'pass', 'fail': 'fail',
          'uxsuccess': 'fail', 'skip': 'skip'}


def read_subunit(path):
    results = {}

    def on_test(test):
        status = STATUS.get(test['status'])
        if status is not None:  # 'exists', 'inprogress': not a result
            results[test['id']] = status

    with open(path, 'rb') as stream:
        case = subunit.ByteStreamToStreamResult(stream,
                                                non_subunit_name='stdout')
        result = testtools.StreamToDict(on_test)
        result.startTestRun()
        try:
            case.run(result)
        finally:
            result.stopTestRun()
    return results


def read_results(path):
    results = {}
    with open(path) as f:
        for line in f:
            status, _, test_id = line.strip().partition(' ')
            if test_id:
                results[test_id] = status
    return results


def summary(subunit_path, out_path):
    results = read_subunit(subunit_path)
    with open(out_path, 'w') as f:
        for test_id in sorted(results):
            f.write('%s %s\n' % (results[test_id], test_id))
    counts = {s: sum(1 for v in results.values() if v == s)
              for s in ('pass', 'fail', 'skip')}
    print('%d passed, %d failed, %d skipped' % (
        counts['pass'], counts['fail'], counts['skip']))
    for test_id in sorted(t for t, s in results.items() if s == 'fail'):
        print('  FAILED %s' % test_id)
    return 0


def compare(stock_path, orc_path, out_path):
    stock, orc = read_results(stock_path), read_results(orc_path)
    both = set(stock) & set(orc)
    regressions = sorted(t for t in both
                         if stock[t] == 'pass' and orc[t] == 'fail')
    fixed = sorted(t for t in both
                   if stock[t] == 'fail' and orc[t] == 'pass')
    one_side = sorted(set(stock) ^ set(orc))
    # a failure only ours has (a setUpClass that fails on ours and not on
    # stock, whose tests passed there) is a regression too
    regressions += [t for t in one_side if orc.get(t) == 'fail']
    with open(out_path, 'w') as f:
        f.writelines(t + '\n' for t in regressions)
    print('regressions (fail on ours, pass or absent on stock): %d'
          % len(regressions))
    for t in regressions:
        print('  %s' % t)
    print('pass on ours, fail on stock: %d' % len(fixed))
    for t in fixed:
        print('  %s' % t)
    if one_side:
        print('ran on one side only: %d' % len(one_side))
        for t in one_side:
            side = 'stock' if t in stock else 'orc'
            status = (stock if t in stock else orc)[t]
            print('  %s only (%s): %s' % (side, status, t))
    return 1 if regressions else 0


def main(argv):
    if len(argv) == 4 and argv[1] == 'summary':
        return summary(argv[2], argv[3])
    if len(argv) == 5 and argv[1] == 'compare':
        return compare(argv[2], argv[3], argv[4])
    sys.stderr.write(__doc__)
    return 2


if __name__ == '__main__':
    sys.exit(main(sys.argv))
