# Group roles: cannot log in, hold privileges for their members.
role "owners" {
  server = server.main
}

role "readers" {
  server = server.main

  grant {
    database   = database.analytics
    privileges = ["CONNECT"]
  }
  grant {
    database   = database.analytics
    schema     = "public"
    privileges = ["USAGE"]
  }
  grant {
    database   = database.analytics
    schema     = "public"
    tables     = "*"
    privileges = ["SELECT"]
  }
}

# Analysts: one login each, all members of readers.
user "analyst" {
  for_each = {
    ada   = 5
    grace = 2
  }

  server           = server.main
  name             = "analyst_${each.key}"
  password         = secret.analyst[each.key]
  member_of        = [role.readers]
  connection_limit = each.value
}

# One generated password per analyst: secret.analyst["ada"], secret.analyst["grace"].
secret "analyst" {
  for_each = toset(["ada", "grace"])

  name = "${var.env}/analysts/${each.key}"
  generate {
    length  = 40
    special = true
  }
  rotate_every = "90d"
}
