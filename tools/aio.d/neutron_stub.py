"""An empty, read-only Networking API for tools/aio without neutron.

Nova 34 asks neutron for the ports of a server whenever it shows one (the
security groups of GET /servers/{id}), when it heals its network info cache
and when it deletes a server, even for servers booted with --nic none.  With
no 'network' endpoint at all those calls fail (HTTP 500 on GET /servers).
This stub answers every GET with an empty collection, so --nic none servers
work without neutron; nova finds it through [neutron] endpoint_override.
Anything else is answered 404 NotFound, as neutron does for a missing item.

Usage: python neutron_stub.py HOST PORT
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import re


class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = self.path.split('?', 1)[0].rstrip('/')
        if path in ('', '/v2.0'):
            return self._send(200, {'versions': [{
                'id': 'v2.0', 'status': 'CURRENT', 'links': [{
                    'rel': 'self', 'href': 'http://%s:%s/v2.0/' %
                    self.server.server_address[:2]}]}]})
        m = re.match(r'^/v2\.0/([a-z0-9_-]+)(?:\.json)?$', path)
        if m:  # a collection: ports, security-groups, extensions, networks...
            return self._send(200, {m.group(1).replace('-', '_'): []})
        return self._send(404, {'NeutronError': {
            'type': 'NotFound', 'message': 'not found (aio neutron stub)',
            'detail': ''}})

    def _not_found(self):
        length = int(self.headers.get('Content-Length') or 0)
        if length:
            self.rfile.read(length)
        self._send(404, {'NeutronError': {
            'type': 'NotFound', 'message': 'aio neutron stub: read only',
            'detail': ''}})

    do_POST = do_PUT = do_DELETE = _not_found

    def log_message(self, fmt, *args):
        sys.stderr.write('%s %s\n' % (self.log_date_time_string(), fmt % args))


if __name__ == '__main__':
    server = ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Handler)
    server.daemon_threads = True
    server.serve_forever()
