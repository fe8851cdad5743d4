# The production setup in one configuration: an Aurora PostgreSQL cluster,
# the server on it, logical databases, users whose passwords live in AWS
# Secrets Manager, routers that publish to Secrets Manager, and the
# cluster's backups.
#
#   dbctl -C examples/aurora plan
#
# dbctl reaches the cluster from a devbox through a tunnel (SSM or SSH port
# forwarding to the cluster endpoint on 127.0.0.1:var.tunnel_port), with TLS
# verify-full against the RDS CA bundle (see docs/rds.md for where to get it).

variable "env" {
  description = "Deployment environment, used in names."
  default     = "prod"
}

variable "tunnel_port" {
  description = "Local port of the tunnel to the cluster endpoint."
  default     = 15432
}

variable "rds_ca" {
  description = "The RDS CA bundle (https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem)."
  default     = "certs/global-bundle.pem"
}

locals {
  contexts = ["users", "billing", "workflow"]
}

provider "aws" {
  region   = "us-east-1"
  endpoint = env("AWS_ENDPOINT_URL", "") # empty: the real AWS endpoints
}

backup_policy "aurora" {
  schedule = "0 3 * * *" # -> preferred backup window 03:00-03:30 UTC
  keep {
    daily = 14 # -> backup retention period, days
  }
}

rds_cluster "aurora" {
  engine                      = "aurora-postgresql"
  engine_version              = "15.4"
  instance_class              = "db.r6g.large"
  instances                   = 2
  master_username             = "admin"
  manage_master_user_password = true # RDS keeps it in Secrets Manager; dbctl reads it
  backup_policy               = backup_policy.aurora
  deletion_protection         = true
  final_snapshot              = true
  apply_immediately           = false
}

server "main" {
  engine      = "postgres"
  rds_cluster = rds_cluster.aurora
  sslrootcert = var.rds_ca

  connect {
    host = "127.0.0.1"
    port = var.tunnel_port
  }
}

role "owners" {
  server = server.main
}

# One database per bounded context: database.context["users"], ...
database "context" {
  for_each = toset(local.contexts)

  server = server.main
  name   = "app_${each.key}"
  owner  = role.owners
}

secret "buildsense" {
  store = "aws"
  name  = "${var.env}/buildsense/db"
  generate {
    length = 32
  }
  rotate_every = "90d"
}

secret "buildsense_routing" {
  store = "aws"
  name  = "${var.env}/buildsense/routing"
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
    secret = secret.buildsense_routing
    format = "json"
  }
}

secret "billing" {
  store = "aws"
  name  = "${var.env}/billing/db"
  generate {
    length = 32
  }
  rotate_every = "90d"
}

secret "billing_routing" {
  store = "aws"
  name  = "${var.env}/billing/routing"
}

user "billing" {
  server   = server.main
  password = secret.billing
}

router "billing" {
  user   = user.billing
  access = "readwrite"

  route "billing" {
    database = database.context["billing"]
  }
  route "accounts" {
    database = database.context["users"]
    access   = "readonly"
  }

  publish {
    secret = secret.billing_routing
    format = "json"
  }
}
