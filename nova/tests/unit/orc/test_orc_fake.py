"""The slow-spawn fake virt drivers (``nova/virt/orc_fake``)."""

import os
from unittest import mock

import fixtures

from oslo_utils.fixture import uuidsentinel as uuids

from nova import context
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

    def test_fetch_image_downloads_with_the_spawn_context(self):
        """``fetch_image``: Nova's image download runs with the context the
        spawn was given, its user and project land in the guest's file, and
        a refused download fails the spawn with no guest."""
        folder = self.useFixture(fixtures.TempDir()).path
        driver = virt_driver.load_compute_driver(
            fake.FakeVirtAPI(), 'orc_fake.SlowSpawnDriver')
        self.flags(host='hostA')
        self.flags(guests_dir=folder, fetch_image=True, group='orc_fake')
        ctxt = context.RequestContext('demo-user', 'demo-project',
                                      auth_token='user-token')
        instance = objects.Instance(
            uuid=uuids.instance, id=1, image_ref=uuids.image,
            flavor=objects.Flavor(vcpus=1, memory_mb=512, root_gb=1))

        def download(ctxt_, image_id, dest_path=None, trusted_certs=None):
            self.assertIs(ctxt, ctxt_)
            self.assertEqual(uuids.image, image_id)
            with open(dest_path, 'wb') as f:
                f.write(b'x' * 1234)
        with mock.patch('nova.virt.images.IMAGE_API.download',
                        side_effect=download) as dl:
            driver.spawn(ctxt, instance, None, [], None, {})
        dl.assert_called_once()
        with open(os.path.join(folder, 'hostA', uuids.instance)) as f:
            self.assertEqual('demo-user demo-project 1234\n', f.read())
        driver.destroy(ctxt, instance, [])

        with mock.patch('nova.virt.images.IMAGE_API.download',
                        side_effect=exception.ImageNotAuthorized(
                            image_id=uuids.image)):
            self.assertRaises(exception.ImageNotAuthorized, driver.spawn,
                              ctxt, instance, None, [], None, {})
        self.assertEqual([], driver.list_instance_uuids())
        self.assertFalse(os.path.exists(
            os.path.join(folder, 'hostA', uuids.instance)))
