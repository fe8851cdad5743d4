# The dbctl quickstart: everything runs on this machine, nothing to set up.
#
#   dbctl -C examples/quickstart validate
#   dbctl -C examples/quickstart apply --auto-approve
#
# `embedded = true` makes dbctl initialise and run a PostgreSQL server under
# examples/quickstart/.dbctl/servers/main, with the machine's server binaries.

server "main" {
  engine   = "postgres"
  embedded = true
}

# One login password per service, generated once and kept in
# .dbctl/secrets.json (mode 0600). Never shown in a plan.
secret "shop" {
  generate {
    length = 32
  }
}

user "shop" {
  server           = server.main
  password         = secret.shop
  connection_limit = 20
}

database "orders" {
  server = server.main
}

database "catalog" {
  server = server.main
}

# The shop service: its "orders" app writes orders, its "catalog" app only reads.
router "shop" {
  user   = user.shop
  access = "readwrite"

  route "orders" {
    database = database.orders
  }
  route "catalog" {
    database = database.catalog
    access   = "readonly"
  }
  default = "orders"

  publish {
    file   = "deploy/shop/databases.json"
    format = "json"
  }
}

backup_policy "nightly" {
  databases   = [database.orders, database.catalog]
  schedule    = "0 3 * * *"
  storage     = "file://.dbctl/backups"
  compression = "zstd"

  keep {
    last  = 3
    daily = 7
  }
}
