# Migrations: ordered SQL files for one database, planned and applied with
# the rest of the fleet.
#
#   dbctl -C examples/migrations migrate lint
#   dbctl -C examples/migrations plan --verbose
#   dbctl -C examples/migrations apply --auto-approve
#   dbctl -C examples/migrations migrate status --format json
#   dbctl -C examples/migrations migrate new add_due_date

server "main" {
  engine   = "postgres"
  embedded = true
}

database "loans" {
  server = server.main
}

# Runs after database.loans exists and before the grant below, whose
# tables = "*" then covers the tables the migrations create.
migrations "loans" {
  database = database.loans
  dir      = "migrations/loans"
  lint     = "error"
}

role "loans_reader" {
  server = server.main

  grant {
    database   = database.loans
    schema     = "public"
    tables     = "*"
    privileges = ["SELECT"]
  }
}
