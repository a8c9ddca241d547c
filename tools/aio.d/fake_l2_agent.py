"""Minimal stand-in for neutron-openvswitch-agent for tools/aio (no OVS).

For each host in AGENT_HOSTS (comma separated, e.g. aio-compute1,aio-compute2)
it reports an 'Open vSwitch agent' heartbeat over neutron's own agent RPC
API, so the stock ML2 'openvswitch' mechanism driver binds ports on that host
(vif_type=ovs), and it marks ports bound to that host ACTIVE through the same
RPC calls a real L2 agent makes (get_devices_details_list_and_failed_devices
+ update_device_list): neutron then sends nova network-vif-plugged and the
build goes on.  Port discovery is a read-only query on neutron's database.
A small stand-in for an L2 agent, written for this all-in-one.

Usage: AGENT_HOSTS=h1,h2 python fake_l2_agent.py --config-file neutron.conf
"""
import os
import sys
import time

from oslo_config import cfg
from oslo_db import options as db_options
from oslo_log import log as logging
import sqlalchemy as sa

from neutron.agent import rpc as agent_rpc
from neutron.common import config as common_config
from neutron.conf.agent import common as agent_conf
from neutron.conf.agent.database import agents_db
from neutron_lib.agent import topics
from neutron_lib import context as n_ctx

db_options.set_defaults(cfg.CONF)
common_config.register_common_config_options()
agent_conf.register_agent_state_opts_helper(cfg.CONF)
agents_db.register_db_agents_opts()
common_config.init(sys.argv[1:])
common_config.setup_logging()
LOG = logging.getLogger('fake_l2_agent')
HOSTS = [h for h in os.environ.get(
    'AGENT_HOSTS', os.environ.get('AGENT_HOST', '')).split(',') if h]


def agent_state(host):
    return {
        'binary': 'neutron-openvswitch-agent', 'host': host, 'topic': 'N/A',
        'availability_zone': 'nova', 'agent_type': 'Open vSwitch agent',
        'start_flag': True,
        'configurations': {
            'bridge_mappings': {}, 'tunnel_types': ['vxlan'],
            'tunneling_ip': '127.0.0.1', 'l2_population': False,
            'integration_bridge': 'br-int', 'datapath_type': 'system',
            'ovs_hybrid_plug': False,
            'ovs_capabilities': {'datapath_types': ['system'],
                                 'iface_types': ['internal', 'tap', 'vxlan']},
            'devices': 0}}


Q = sa.text(
    "SELECT p.id FROM ports p JOIN ml2_port_bindings b ON b.port_id = p.id "
    "WHERE b.host = :h AND b.status = 'ACTIVE' AND b.vif_type = 'ovs' "
    "AND p.status <> 'ACTIVE' AND p.admin_state_up")


def main():
    engine = sa.create_engine(cfg.CONF.database.connection)
    ctx = n_ctx.get_admin_context_without_session()
    state_rpc = agent_rpc.PluginReportStateAPI(topics.REPORTS)
    plugin_rpc = agent_rpc.PluginApi(topics.PLUGIN)
    states = {h: agent_state(h) for h in HOSTS}
    last_report = 0
    LOG.info('fake L2 agent for hosts %s', HOSTS)
    while True:
        try:
            if time.time() - last_report > 10:
                for st in states.values():
                    state_rpc.report_state(ctx, st, use_call=True)
                    st.pop('start_flag', None)
                last_report = time.time()
            for host in HOSTS:
                with engine.connect() as c:
                    ports = [r[0] for r in c.execute(Q, {'h': host})]
                if ports:
                    agent_id = 'fake-ovs-agent-%s' % host
                    plugin_rpc.get_devices_details_list_and_failed_devices(
                        ctx, ports, agent_id, host)
                    r = plugin_rpc.update_device_list(ctx, ports, [],
                                                      agent_id, host)
                    LOG.info('ports up on %s: %s -> %s', host, ports, r)
        except Exception:
            LOG.exception('loop error')
            time.sleep(3)
        time.sleep(1)


if __name__ == '__main__':
    main()
