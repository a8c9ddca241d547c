"""Wait until nova RPC servers answer oslo.messaging's ping (run with the aio venv).

Every nova service of tools/aio runs with [DEFAULT] rpc_ping_enabled = true,
so each RPC server answers 'oslo_rpc_server_ping': an answer means the
service consumes its queue, i.e. it is really up.

Usage: rpc_ping.py NOVA_CONF ELAPSED TIMEOUT NAME=TOPIC:SERVER:PID ...
Prints '[Ns] NAME: waiting for rpc TOPIC.SERVER ... up' per target as it
answers (N counted from ELAPSED, the caller's clock); on a dead PID or the
timeout prints 'FAILED NAME' and exits 1.
"""
import os
import sys
import time
import warnings

warnings.simplefilter('ignore')

from oslo_config import cfg  # noqa: E402
import oslo_messaging as messaging  # noqa: E402


def main(argv):
    conf_file, elapsed, timeout = argv[1], float(argv[2]), float(argv[3])
    t0 = time.monotonic() - elapsed
    targets = []
    for spec in argv[4:]:
        name, rest = spec.split('=', 1)
        topic, server, pid = rest.split(':')
        targets.append((name, topic, server, int(pid or 0)))
    conf = cfg.CONF  # oslo.messaging registers some options there only
    conf([], project='nova', default_config_files=[conf_file])
    messaging.set_transport_defaults('nova')
    transport = messaging.get_rpc_transport(conf)
    pending = list(targets)
    deadline = time.monotonic() + timeout
    while pending:
        for t in list(pending):
            name, topic, server, pid = t
            if pid:
                try:
                    os.kill(pid, 0)
                except OSError:
                    print('[%ds] %s: waiting for rpc %s.%s ... FAILED '
                          '(process %d exited)' % (time.monotonic() - t0, name,
                                                   topic, server, pid),
                          flush=True)
                    print('FAILED %s' % name, flush=True)
                    return 1
            client = messaging.get_rpc_client(
                transport, messaging.Target(topic=topic, server=server,
                                            version='1.0'), timeout=2)
            try:
                client.call({}, 'oslo_rpc_server_ping')
            except Exception:
                continue
            print('[%ds] %s: waiting for rpc %s.%s ... up' % (
                time.monotonic() - t0, name, topic, server), flush=True)
            pending.remove(t)
        if pending:
            if time.monotonic() > deadline:
                for name, topic, server, _ in pending:
                    print('[%ds] %s: waiting for rpc %s.%s ... TIMEOUT' % (
                        time.monotonic() - t0, name, topic, server), flush=True)
                    print('FAILED %s' % name, flush=True)
                return 1
            time.sleep(0.5)
    transport.cleanup()
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
