"""A service that opens a new connection every 50 ms, as a busy worker does,
until the file named by argv[1] exists. Touches argv[1] + ".ready" after its
first connection. Prints "connections N failures F" and the first errors
(never a password: they are the driver's messages)."""
import os
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
import django  # noqa: E402

django.setup()

from django.db import connections  # noqa: E402

stop = sys.argv[1]
alias = sys.argv[2] if len(sys.argv) > 2 else "default"
made = failed = 0
errors = []
while not os.path.exists(stop):
    connection = connections[alias]
    connection.close()
    try:
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)
        made += 1
        if made == 1:
            open(stop + ".ready", "w").close()
    except Exception as e:
        failed += 1
        errors.append(f"{type(e).__name__}: {str(e).strip().splitlines()[-1]}")
    time.sleep(0.05)
connections[alias].close()
print(f"connections {made} failures {failed}")
for e in errors[:5]:
    print("error:", e)
