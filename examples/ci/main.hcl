# A configuration that CI plans on every pull request and applies on merge
# (see README.md here, github-actions.yml and gitlab-ci.yml).
#
# Nothing in it lives in one checkout: the state is in a PostgreSQL database
# shared by every checkout and every CI run, the server is reached by url, and
# passwords are kept in AWS Secrets Manager. The urls come from the CI's
# secret store through the environment.

dbctl {
  state {
    backend = "postgres"
    url     = env("DBCTL_STATE_URL")
    key     = "prod"
  }
}

provider "aws" {
  region = env("AWS_REGION", "eu-west-1")
  # Empty: the real AWS endpoints (a local stand-in such as moto otherwise).
  endpoint = env("AWS_ENDPOINT_URL", "")
}

server "main" {
  engine = "postgres"
  url    = env("DBCTL_SERVER_URL")
}

role "readers" {
  server = server.main
}

database "orders" {
  server = server.main
}

secret "shop" {
  store = "aws"
  name  = "prod/shop/db"
  generate {
    length = 32
  }
}

user "shop" {
  server           = server.main
  password         = secret.shop
  member_of        = [role.readers]
  connection_limit = 20

  grant {
    database   = database.orders
    privileges = ["CONNECT", "TEMPORARY"]
  }
}
