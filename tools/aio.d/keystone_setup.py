"""Idempotent keystone setup for tools/aio (run with the aio venv).

Creates (when missing) the projects 'service' and 'demo', the user 'demo'
(member + reader of demo), a user per service (admin + service roles in
'service'), and a catalog entry with public/internal/admin endpoints per
service.  Safe to run again: everything is looked up first.

Usage: keystone_setup.py PASSWORD USERS SERVICES
  USERS     comma separated, e.g. nova,glance,placement,neutron
  SERVICES  comma separated TYPE=NAME=URL, e.g. compute=nova=http://127.0.0.1:8774/v2.1
Authenticates with the OS_* environment (admin openrc).
"""
import sys
import warnings

warnings.simplefilter('ignore')

import openstack  # noqa: E402


def main(argv):
    password, users, services = argv[1], argv[2].split(','), argv[3].split(',')
    conn = openstack.connect()
    idn = conn.identity
    domain = idn.find_domain('default', ignore_missing=False)

    def project(name):
        return (idn.find_project(name, domain_id=domain.id) or
                idn.create_project(name=name, domain_id=domain.id))

    def user(name):
        return (idn.find_user(name, domain_id=domain.id) or
                idn.create_user(name=name, domain_id=domain.id,
                                password=password))

    roles = {r.name: r for r in idn.roles()}

    def grant(proj, usr, role):
        role = roles[role]
        if not idn.validate_user_has_project_role(proj, usr, role):
            idn.assign_project_role_to_user(proj, usr, role)

    service_p, demo_p = project('service'), project('demo')
    demo_u = user('demo')
    for r in ('member', 'reader'):
        grant(demo_p, demo_u, r)
    for name in users:
        u = user(name)
        for r in ('admin', 'service'):
            grant(service_p, u, r)
    existing = {s.type: s for s in idn.services()}
    for spec in services:
        stype, name, url = spec.split('=', 2)
        svc = existing.get(stype) or idn.create_service(name=name, type=stype)
        have = {e.interface for e in idn.endpoints(service_id=svc.id)}
        for iface in ('public', 'internal', 'admin'):
            if iface not in have:
                idn.create_endpoint(service_id=svc.id, interface=iface,
                                    url=url, region_id='RegionOne')
        print('%s %s %s' % (stype, name, url))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
