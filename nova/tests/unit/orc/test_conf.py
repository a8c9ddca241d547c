"""``[orc]`` options: validated at start-up, naming the option."""

from oslo_config import cfg

from nova.orc import conf as orc_conf
from nova.orc import manager
from nova import test


class ConfTest(test.NoDBTestCase):

    def test_bad_scheme_names_the_option(self):
        self.flags(coordination_url='redis://localhost', group='orc')
        exc = self.assertRaises(cfg.ConfigFileValueError, orc_conf.validate)
        self.assertIn('[orc] coordination_url', str(exc))

    def test_zookeeper_without_host(self):
        self.flags(coordination_url='zookeeper:///nova', group='orc')
        self.assertRaises(cfg.ConfigFileValueError, orc_conf.validate)

    def test_defaults_are_valid_and_listed(self):
        orc_conf.validate()
        [(group, opts)] = orc_conf.list_opts()
        self.assertEqual('orc', group.name)
        self.assertIn('coordination_url', [o.name for o in opts])

    def test_engine_choice_is_enforced(self):
        self.assertRaises(ValueError, self.flags, engine='fast', group='orc')

    def test_conductor_refuses_to_start_on_bad_value(self):
        self.flags(coordination_url='zk://nowhere', group='orc')
        exc = self.assertRaises(cfg.ConfigFileValueError,
                                manager.OrcComputeTaskManager)
        self.assertIn('[orc] coordination_url', str(exc))
