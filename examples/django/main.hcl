# Django services on one PostgreSQL server (see docs/django.md).
#
#   dbctl -C examples/django apply --auto-approve
#
# Two services route their Django apps to two logical databases; the same
# app label (workflow) lives in a different database in each service. The
# admin service "toolshed" owns both databases and runs every migration:
#
#   (in a Django project whose settings import out/toolshed.py)
#   python -c "import django; django.setup(); import toolshed; toolshed.migrate_all()"
#
# Each router publishes a Django settings module under out/; settings need
# only `from buildsense import DATABASES, DATABASE_ROUTERS`.

server "main" {
  engine   = "postgres"
  embedded = true
}

database "buildsense" {
  server = server.main
}

database "maven" {
  server = server.main
}

secret "buildsense" {
  generate {
    length = 24
  }
}

user "buildsense" {
  server   = server.main
  password = secret.buildsense
  createdb = true
}

router "buildsense" {
  user    = user.buildsense
  default = "workflow"
  route "workflow" {
    database = database.buildsense
  }
  route "builds" {
    database = database.buildsense
  }
  route "reports" {
    database = database.maven
    access   = "readonly"
  }
  publish {
    file   = "out/buildsense.py"
    format = "django"
  }
}

secret "maven" {
  generate {
    length = 24
  }
}

user "maven" {
  server   = server.main
  password = secret.maven
  inherit  = false # its grants are its own; not for an owner (public schema rights come through pg_database_owner)
}

router "maven_crawler" {
  user = user.maven
  route "crawler" {
    database = database.maven
  }
  route "workflow" {
    database = database.maven
  }
  publish {
    file   = "out/maven.py"
    format = "django"
  }
}

secret "toolshed" {
  generate {
    length = 24
  }
}

user "toolshed" {
  server   = server.main
  password = secret.toolshed
}

router "toolshed" {
  user     = user.toolshed
  access   = "owner"
  migrates = [router.buildsense, router.maven_crawler]
  publish {
    file   = "out/toolshed.py"
    format = "django"
  }
}
