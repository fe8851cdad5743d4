"""Settings of the test project: a service's databases come from the module
dbctl published for it (DBCTL_SERVICE_MODULE names it; it is on PYTHONPATH)."""
import importlib
import os

_service = importlib.import_module(os.environ["DBCTL_SERVICE_MODULE"])
DATABASES = _service.DATABASES
DATABASE_ROUTERS = _service.DATABASE_ROUTERS

SECRET_KEY = "test-only"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["workflow", "builds", "reports", "crawler"]
