from django.test import TestCase

from builds.models import Build
from workflow.models import Task


class BuildTests(TestCase):
    """Runs in a test database the service's user creates (createdb)."""

    def test_a_build_belongs_to_a_task(self):
        task = Task.objects.create(name="compile")
        Build.objects.create(task=task, status="ok")
        self.assertEqual(Build.objects.get().task.name, "compile")
