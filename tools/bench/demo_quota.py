"""The demo project's compute limits as ``openstack quota set`` options.

Reads ``openstack quota show demo -f json`` on stdin and prints
``--instances N --cores N --ram N``, which the benchmarks that lift the
limits for a run (tools/bench/aio-boot, tools/bench/soak) pass back to
``quota set`` on exit. The client prints a list of ``{Resource, Limit}``
rows (a dict in older clients); both are read. Exits non-zero, naming what
it read, when a limit is missing: a benchmark must not lift limits it
cannot put back.
"""

import json
import sys

LIMITS = ('instances', 'cores', 'ram')


def quota_set_options(shown):
    """:param shown: the parsed JSON of ``quota show``: a list of
        ``{'Resource': str, 'Limit': int}`` or a dict of limits
    :returns: str, ``--instances N --cores N --ram N``
    :raises ValueError: a limit of :data:`LIMITS` is missing
    """
    if isinstance(shown, list):
        shown = {row['Resource']: row['Limit'] for row in shown}
    missing = [k for k in LIMITS if k not in shown]
    if missing:
        raise ValueError('quota show demo: no %s limit in %r' % (
            '/'.join(missing), shown))
    return ' '.join('--%s %s' % (k, shown[k]) for k in LIMITS)


def main():
    try:
        print(quota_set_options(json.load(sys.stdin)))
    except ValueError as e:
        sys.exit(str(e))


if __name__ == '__main__':
    main()
