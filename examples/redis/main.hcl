# A Redis server beside the databases: each service gets key namespaces and
# an ACL user confined to them.
#
#   dbctl -C examples/redis apply --auto-approve
#
# `embedded = true` runs the machine's redis-server under
# examples/redis/.dbctl/servers/cache (admin `dbctl`, password in a 0600
# file, the `default` user switched off).

server "cache" {
  engine   = "redis"
  embedded = true
}

secret "shop" {
  generate {
    length = 32
  }
}

# An ACL user: its password is sent to Redis as a SHA-256 hash only.
user "shop" {
  server   = server.cache
  password = secret.shop
}

# A database is a key namespace: "sessions:*".
database "sessions" {
  server = server.cache
}

database "catalog" {
  server = server.cache
}

# The shop may read and write its sessions, only read the catalog, and
# nothing else (FLUSHALL, CONFIG, KEYS and other keys get NOPERM).
router "shop" {
  user   = user.shop
  access = "readwrite"

  route "sessions" {
    database = database.sessions
  }
  route "catalog" {
    database = database.catalog
    access   = "readonly"
  }
  default = "sessions"

  publish {
    file   = "deploy/shop/redis.json"
    format = "json"
  }
}

# An RDB snapshot of the server, verified by counting the namespace's keys
# in a throwaway redis-server loaded with it.
backup_policy "nightly" {
  databases   = [database.sessions]
  schedule    = "0 3 * * *"
  storage     = "file://.dbctl/backups"
  compression = "zstd"
  verify      = true
}
