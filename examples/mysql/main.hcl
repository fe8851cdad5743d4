# The same workflow on MySQL / MariaDB: an embedded MariaDB on this machine,
# two databases, a read-only role, an application user whose password is a
# generated secret, a router, and nightly backups.
#
#   dbctl -C examples/mysql apply
#   dbctl -C examples/mysql backup run

server "main" {
  engine   = "mysql"
  embedded = true
}

database "orders" {
  server    = server.main
  encoding  = "utf8mb4"
  collation = "utf8mb4_unicode_ci"
}

database "reports" {
  server = server.main
}

role "analysts" {
  server = server.main
  grant {
    database   = database.reports
    privileges = ["SELECT", "SHOW VIEW"]
  }
}

secret "shop" {
  store = "local"
  name  = "shop-db-password"
}

user "shop" {
  server           = server.main
  password         = secret.shop
  host             = "%"
  connection_limit = 20
  member_of        = [role.analysts]
}

router "shop" {
  user   = user.shop
  access = "readwrite"

  route "orders" {
    database = database.orders
  }
  default = "orders"
}

backup_policy "nightly" {
  databases   = [database.orders, database.reports]
  schedule    = "0 3 * * *"
  storage     = "file://.dbctl/backups"
  compression = "zstd"
  keep {
    last  = 3
    daily = 7
  }
  verify = true
}
