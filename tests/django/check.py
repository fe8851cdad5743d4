"""Checks the Rust test (tests/django.rs) runs against a service's module.
Usage: python check.py CHECK; prints "ok CHECK" or fails."""
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connections, transaction  # noqa: E402


def migrate_all():
    importlib = __import__("importlib")
    importlib.import_module(os.environ["DBCTL_SERVICE_MODULE"]).migrate_all(verbosity=0)


def tables():
    # alias=table,table per line
    for alias in settings.DATABASES:
        names = sorted(connections[alias].introspection.table_names())
        print(f"{alias}={','.join(names)}")


def foreign_key_in_one_transaction():
    from builds.models import Build
    from workflow.models import Task

    with transaction.atomic():
        task = Task.objects.create(name="compile")
        Build.objects.create(task=task, status="ok")
    assert Build.objects.get(task__name="compile").task_id == task.id

    class Rollback(Exception):
        pass

    try:
        with transaction.atomic():
            task = Task.objects.create(name="lost")
            Build.objects.create(task=task, status="lost")
            raise Rollback
    except Rollback:
        pass
    # Both apps' writes were in the one transaction that rolled back.
    assert not Task.objects.filter(name="lost").exists()
    assert not Build.objects.filter(status="lost").exists()


def readonly_refused():
    from django.db import OperationalError, ProgrammingError

    from reports.models import Report

    assert Report.objects.count() == 0
    try:
        Report.objects.create(title="x")
    except (ProgrammingError, OperationalError) as e:
        # PostgreSQL: "permission denied"; MariaDB: "INSERT command denied".
        assert "permission denied" in str(e) or "command denied" in str(e), e
        print("refused:", str(e).splitlines()[0])
    else:
        raise AssertionError("a readonly route accepted an INSERT")


def write_workflow():
    from workflow.models import Task

    Task.objects.create(name=os.environ["DBCTL_SERVICE_MODULE"])


def unrouted():
    from django.core.exceptions import ImproperlyConfigured

    from builds.models import Build

    try:
        Build.objects.count()
    except ImproperlyConfigured as e:
        print("error:", e)
    else:
        raise AssertionError("an unrouted app reached a database")


def unrouted_never_migrated():
    from django.db import router

    from builds.models import Build

    for alias in settings.DATABASES:
        assert not router.allow_migrate_model(alias, Build), alias


def password_read_on_connect():
    # The module reads the password when a connection opens: break the copy
    # held in the entry, close, and connect again.
    entry = settings.DATABASES["default"]
    dict.__setitem__(entry, "PASSWORD", "stale")
    connections["default"].close()
    connections["default"].ensure_connection()


def connect():
    # A new connection, as the store's current version and the server stand.
    connections["default"].ensure_connection()
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT current_user")
        print("user", cursor.fetchone()[0])


if __name__ == "__main__":
    check = sys.argv[1]
    globals()[check]()
    print("ok", check)
