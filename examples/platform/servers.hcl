# A platform team's fleet, as one declaration. Spread over several files:
# dbctl reads every *.hcl in the directory.
#
#   dbctl -C examples/platform validate
#   dbctl -C examples/platform graph | dot -Tsvg > graph.svg

variable "env" {
  description = "Deployment environment, used in secret names."
  default     = "dev"
}

locals {
  # Logical databases of the monolith, one per bounded context.
  contexts = ["users", "billing", "workflow", "search"]
}

server "main" {
  engine   = "postgres"
  embedded = true
}
