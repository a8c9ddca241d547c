"""The slow-spawn fake virt drivers (``nova/virt/orc_fake``)."""

import os
from unittest import mock

import fixtures

from oslo_utils.fixture import uuidsentinel as uuids

from nova import exception
from nova import objects
from nova import test
from nova.virt import driver as virt_driver
from nova.virt import fake


class SlowSpawnDriverTest(test.NoDBTestCase):

    def _spawn(self, driver):
        instance = objects.Instance(
            uuid=uuids.instance, id=1, flavor=objects.Flavor(
                vcpus=1, memory_mb=512, root_gb=1))
        driver.spawn(None, instance, None, [], None, {})
        return instance

    @mock.patch('time.sleep')
    def test_loaded_by_compute_driver_and_spawn_sleeps_first(self, sleep):
        for name in ('orc_fake.SlowSpawnDriver',
                     'orc_fake.SlowSpawnDriverWithoutFakeNodes'):
            driver = virt_driver.load_compute_driver(fake.FakeVirtAPI(),
                                                     name)
            self.assertIsInstance(driver, fake.FakeDriver)
            sleep.reset_mock()
            self.flags(spawn_delay=2.5, group='orc_fake')
            sleep.side_effect = lambda s: self.assertEqual(
                [], driver.list_instance_uuids())
            self._spawn(driver)
            sleep.assert_called_once_with(2.5)
            self.assertEqual([uuids.instance], driver.list_instance_uuids())

    @mock.patch('time.sleep')
    def test_no_delay_by_default(self, sleep):
        driver = virt_driver.load_compute_driver(
            fake.FakeVirtAPI(), 'orc_fake.SlowSpawnDriver')
        self._spawn(driver)
        sleep.assert_not_called()
        self.assertEqual([uuids.instance], driver.list_instance_uuids())

    def test_guests_are_files_and_spawn_fails_on_named_hosts(self):
        folder = self.useFixture(fixtures.TempDir()).path
        driver = virt_driver.load_compute_driver(
            fake.FakeVirtAPI(), 'orc_fake.SlowSpawnDriver')
        self.flags(host='hostA')
        self.flags(guests_dir=folder + '/guests',
                   fail_spawn_file=folder + '/fail', group='orc_fake')
        instance = self._spawn(driver)
        guest = os.path.join(folder, 'guests', 'hostA', uuids.instance)
        self.assertTrue(os.path.exists(guest))
        driver.destroy(None, instance, [])
        self.assertFalse(os.path.exists(guest))
        with open(folder + '/fail', 'w') as f:
            f.write('hostB hostA\n')
        self.assertRaises(exception.HypervisorUnavailable, self._spawn,
                          driver)
        self.assertFalse(os.path.exists(guest))
