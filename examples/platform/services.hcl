# Two services. Each routes its app labels to logical databases; the same
# label ("accounts") maps to different databases in different services.

secret "buildsense" {
  name = "${var.env}/buildsense/db"
  generate {
    length = 32
  }
  rotate_every = "90d"
}

user "buildsense" {
  server           = server.main
  password         = secret.buildsense
  connection_limit = 20
}

router "buildsense" {
  user   = user.buildsense
  access = "readwrite"

  route "workflow" {
    database = database.context["workflow"]
  }
  route "accounts" {
    database = database.context["users"]
    access   = "readonly"
  }
  default = "workflow"

  publish {
    file   = "deploy/buildsense/databases.json"
    format = "json"
  }
}

secret "billing" {
  name = "${var.env}/billing/db"
  generate {
    length = 32
  }
}

user "billing" {
  server   = server.main
  password = secret.billing
}

router "billing" {
  user = user.billing

  route "accounts" {
    database = database.context["billing"]
  }
  route "search" {
    database = database.context["search"]
    access   = "readonly"
  }

  publish {
    file   = "deploy/billing/settings_databases.py"
    format = "django"
  }
}
