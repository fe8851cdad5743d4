backup_policy "nightly" {
  databases = [
    database.context["users"],
    database.context["billing"],
    database.context["workflow"],
  ]
  schedule    = "0 3 * * *"
  storage     = "file://.dbctl/backups"
  compression = "zstd"
  verify      = true

  keep {
    last    = 3
    daily   = 7
    weekly  = 4
    monthly = 6
  }
}
