# One database per context: database.context["users"], database.context["billing"], ...
database "context" {
  for_each = toset(local.contexts)

  server    = server.main
  name      = "app_${each.key}"
  owner     = role.owners
  encoding  = "UTF8"
  collation = "C"

  lifecycle {
    prevent_destroy = true
  }
}

database "analytics" {
  server     = server.main
  extensions = ["pg_trgm"]
}
