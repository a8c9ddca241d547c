"""Create what Tempest needs on the all-in-one and write its tempest.conf.

Run by ``tools/tempest`` with the aio venv's python (it has openstacksdk),
the admin ``openrc`` of the deployment in the environment. Idempotent: every
resource is looked up by name first, so a second run reuses them.

Creates two public raw images (``image_ref`` and ``image_ref_alt``: tests
that rebuild or compare need two different ids), two flavors
(``flavor_ref`` and ``flavor_ref_alt``), and makes sure the external
network ``public`` exists (``tools/aio up --with-neutron`` creates it; it is
the gateway of the router Tempest gives each test project).

Usage: cloud_setup.py STATE_DIR CONF_OUT [COMPUTES]
"""
import os
import sys
import time
import warnings

warnings.simplefilter('ignore')

import openstack  # noqa: E402

IMAGES = ('tempest-image', 'tempest-image-alt')
# (name, ram MiB, disk GiB): small enough that the fake computes hold many
FLAVORS = (('tempest-flavor', 128, 1), ('tempest-flavor-alt', 192, 2))
HOST = '127.0.0.1'


def ensure_image(conn, name, data_file):
    image = conn.image.find_image(name)
    if image is None:
        if not os.path.exists(data_file):
            with open(data_file, 'wb') as f:
                f.write(b'\0' * 1048576)
        image = conn.image.create_image(
            name=name, filename=data_file, disk_format='raw',
            container_format='bare', visibility='public')
    deadline = time.monotonic() + 120
    while image.status != 'active':
        if time.monotonic() > deadline or image.status in ('killed',
                                                            'deleted'):
            raise SystemExit('image %s: status %s' % (name, image.status))
        time.sleep(1)
        image = conn.image.get_image(image.id)
    return image.id


def ensure_flavor(conn, name, ram, disk):
    flavor = conn.compute.find_flavor(name)
    if flavor is None:
        flavor = conn.compute.create_flavor(name=name, ram=ram, disk=disk,
                                            vcpus=1, is_public=True)
    return flavor.id


def ensure_public_network(conn):
    net = conn.network.find_network('public')
    if net is None:
        net = conn.network.create_network(
            name='public', is_router_external=True, is_default=True)
    if not list(conn.network.subnets(network_id=net.id)):
        conn.network.create_subnet(network_id=net.id, name='public-subnet',
                                   ip_version=4, cidr='172.24.4.0/24',
                                   is_dhcp_enabled=False)
    return net.id


def main(argv):
    state, conf_out = argv[1], argv[2]
    computes = int(argv[3]) if len(argv) > 3 else 1
    conn = openstack.connect()
    data = os.path.join(state, 'data', 'tempest-image.img')
    images = [ensure_image(conn, n, data) for n in IMAGES]
    flavors = [ensure_flavor(conn, *f) for f in FLAVORS]
    public = ensure_public_network(conn)
    password = os.environ['OS_PASSWORD']
    workspace = os.path.dirname(os.path.dirname(os.path.abspath(conf_out)))
    conf = CONF_TEMPLATE.format(
        h=HOST, pw=password, image=images[0], image_alt=images[1],
        flavor=flavors[0], flavor_alt=flavors[1], public=public,
        computes=computes, workspace=workspace)
    with open(conf_out + '.tmp', 'w') as f:
        f.write(conf)
    os.replace(conf_out + '.tmp', conf_out)
    print('images %s, flavors %s, public network %s' % (
        ' '.join(images), ' '.join(flavors), public))
    return 0


CONF_TEMPLATE = """\
# written by tools/tempest (tools/tempest.d/cloud_setup.py): do not edit,
# the next run writes it again from the deployment
[DEFAULT]
log_dir = {workspace}/logs
log_file = tempest.log
debug = true
[oslo_concurrency]
lock_path = {workspace}/lock
[auth]
admin_username = admin
admin_password = {pw}
admin_project_name = admin
admin_domain_name = Default
# a project, user and network per test class, cleaned up after it
use_dynamic_credentials = true
create_isolated_networks = true
[identity]
uri_v3 = http://{h}:5000/v3
auth_version = v3
region = RegionOne
[identity-feature-enabled]
api_v2 = false
[service_available]
nova = true
glance = true
neutron = true
cinder = false
swift = false
horizon = false
[compute]
image_ref = {image}
image_ref_alt = {image_alt}
flavor_ref = {flavor}
flavor_ref_alt = {flavor_alt}
min_compute_nodes = {computes}
min_microversion = 2.1
max_microversion = latest
region = RegionOne
[compute-feature-enabled]
# the fake virt driver's snapshot() returns without uploading anything: the
# snapshot image stays 'queued' for ever and every snapshot test times out
snapshot = false
# off by default in Tempest; the fake virt driver does them (resize and
# cold migration, set_admin_password, injected files), both sides alike
resize = true
change_password = true
personality = true
[network]
# ML2 with a fake L2 agent: ports bind and go ACTIVE, nothing forwards
# packets; the per-project routers get their gateway on 'public'
public_network_id = {public}
floating_network_name = public
project_network_cidr = 10.100.0.0/16
[validation]
# no dataplane (fake driver, fake L2 agent): no guest answers ssh or ping
run_validation = false
"""


if __name__ == '__main__':
    sys.exit(main(sys.argv))
