"""``[orc]`` options: validated at start-up, naming the option."""

from oslo_config import cfg

from nova.orc import conf as orc_conf
from nova.orc import engine
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

    def test_memory_locks_with_several_workers_warn_at_start(self):
        self.flags(workers=2, group='conductor')
        orchestrator = engine.Orchestrator(manager=None)
        self.assertTrue(orchestrator._warn_if_locks_are_not_shared())
        self.flags(workers=1, group='conductor')
        self.assertFalse(orchestrator._warn_if_locks_are_not_shared())
        self.flags(workers=2, group='conductor')
        self.flags(coordination_url='zookeeper://127.0.0.1:2181/x',
                   group='orc')
        self.assertFalse(engine.Orchestrator(
            manager=None)._warn_if_locks_are_not_shared())
