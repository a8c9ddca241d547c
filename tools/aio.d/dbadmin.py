"""Create, drop or probe the databases of tools/aio (run with the aio venv).

Usage:
  dbadmin.py URL probe               exit 0 when the server answers
  dbadmin.py URL create NAME...      create each database unless it exists
  dbadmin.py URL drop NAME...        drop each database if it exists

URL is a server URL without a database name, as tools/aio writes it:
postgresql+psycopg2://postgres@127.0.0.1:5432, mysql+pymysql://root@127.0.0.1:3306
or sqlite:////path/to/folder (one file NAME.sqlite per database).
"""
import os
import sys

import sqlalchemy as sa


def _engine(url):
    if url.startswith('postgresql'):
        return sa.create_engine(url + '/postgres', isolation_level='AUTOCOMMIT',
                                connect_args={'connect_timeout': 5})
    return sa.create_engine(url + '/', isolation_level='AUTOCOMMIT',
                            connect_args={'connect_timeout': 5})


def main(argv):
    url, action, names = argv[1], argv[2], argv[3:]
    if url.startswith('sqlite'):
        folder = url[len('sqlite:///'):]
        os.makedirs(folder, exist_ok=True)
        for name in names:
            path = os.path.join(folder, name + '.sqlite')
            if action == 'drop' and os.path.exists(path):
                os.unlink(path)
        return 0
    eng = _engine(url)
    with eng.connect() as c:
        if action == 'probe':
            c.execute(sa.text('SELECT 1'))
            return 0
        pg = url.startswith('postgresql')
        for name in names:
            if pg:
                exists = c.execute(sa.text(
                    'SELECT 1 FROM pg_database WHERE datname = :n'),
                    {'n': name}).first() is not None
                if action == 'create' and not exists:
                    c.execute(sa.text('CREATE DATABASE "%s"' % name))
                elif action == 'drop' and exists:
                    c.execute(sa.text('DROP DATABASE "%s" WITH (FORCE)' % name))
            else:
                if action == 'create':
                    c.execute(sa.text(
                        'CREATE DATABASE IF NOT EXISTS `%s` CHARACTER SET '
                        'utf8mb4 COLLATE utf8mb4_general_ci' % name))
                elif action == 'drop':
                    c.execute(sa.text('DROP DATABASE IF EXISTS `%s`' % name))
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main(sys.argv))
    except Exception as e:  # a short message for the caller's log
        print('dbadmin: %s: %s' % (type(e).__name__, e), file=sys.stderr)
        sys.exit(1)
