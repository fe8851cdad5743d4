//! The MySQL / MariaDB engine against a real MariaDB that dbctl starts
//! (`embedded = true`): create, no-op, every attribute, drift, destroy,
//! hostile names, and passwords that really log in.

mod common;

use common::{steps, text, Project};

const SERVER: &str = "server \"main\" {\n  engine   = \"mysql\"\n  embedded = true\n}\n";

/// Run SQL with the mariadb client; rows as tab-separated lines.
fn my_as(p: &Project, user: &str, password: &str, sql: &str) -> Result<String, String> {
    let out = std::process::Command::new("mariadb")
        .args(["--no-defaults", "--protocol=tcp", "-h", "127.0.0.1", "-N", "-B", "-u", user])
        .arg(format!("--port={}", p.port()))
        .arg(format!("--password={password}"))
        .args(["-e", sql])
        .output()
        .expect("mariadb client");
    if out.status.success() {
        Ok(text(&out.stdout).trim().to_string())
    } else {
        Err(text(&out.stderr))
    }
}

fn my(p: &Project, sql: &str) -> String {
    my_as(p, "root", &p.admin_password(), sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn config(db: &str, user: &str, extra_user: &str, privileges: &str, collation: &str) -> String {
    format!(
        r#"{SERVER}
database "shop" {{
  server    = server.main
  name      = "{db}"
  encoding  = "utf8mb4"
  collation = "{collation}"
}}

role "readers" {{
  server = server.main
  grant {{
    database   = database.shop
    privileges = ["SELECT"]
  }}
}}

secret "app_pw" {{
  store = "local"
  name  = "app-pw"
}}

user "app" {{
  server   = server.main
  name     = "{user}"
  password = secret.app_pw
{extra_user}
  grant {{
    database   = database.shop
    privileges = {privileges}
  }}
}}
"#
    )
}

#[test]
fn create_noop_every_attribute_drift_and_destroy() {
    let v1 = config(
        "shop_db",
        "app",
        "  member_of        = [role.readers]\n  connection_limit = 5",
        "[\"SELECT\", \"INSERT\"]",
        "utf8mb4_unicode_ci",
    );
    let p = Project::new(&v1);
    let plan = p.plan_json();
    assert_eq!(
        steps(&plan).iter().filter(|s| s.contains("CREATE") || s.contains("GRANT")).cloned().collect::<Vec<_>>(),
        [
            "CREATE DATABASE `shop_db` CHARACTER SET 'utf8mb4' COLLATE 'utf8mb4_unicode_ci'",
            "CREATE ROLE 'readers'",
            "GRANT SELECT ON `shop\\_db`.* TO 'readers'",
            "CREATE USER 'app'@'%' WITH MAX_USER_CONNECTIONS 5 ACCOUNT LOCK",
            "GRANT 'readers' TO 'app'@'%'",
            "GRANT INSERT, SELECT ON `shop\\_db`.* TO 'app'@'%'",
        ],
        "{plan}"
    );
    let out = p.apply();
    assert!(out.contains("Apply complete! Resources: 7 added, 0 changed, 0 destroyed."), "{out}");
    p.converged();

    // What the server holds.
    assert_eq!(
        my(&p, "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'shop_db'"),
        "utf8mb4\tutf8mb4_unicode_ci"
    );
    assert_eq!(my(&p, "SELECT max_user_connections FROM mysql.user WHERE User = 'app'"), "5");
    // The password really logs in, with the role active; a wrong one does not.
    let pw = p.secret("app-pw");
    let who = my_as(&p, "app", &pw, "SELECT CURRENT_USER(), CURRENT_ROLE(); INSERT INTO shop_db.t VALUES (1)");
    assert!(who.is_err(), "no table yet, but the login itself must work: {who:?}");
    assert!(!who.as_ref().unwrap_err().contains("Access denied for user"), "{who:?}");
    assert_eq!(my_as(&p, "app", &pw, "SELECT CURRENT_USER(), CURRENT_ROLE()").unwrap(), "app@%\treaders");
    assert!(my_as(&p, "app", "wrong", "SELECT 1").unwrap_err().contains("Access denied"));
    my(&p, "CREATE TABLE shop_db.t (x int)");
    my_as(&p, "app", &pw, "INSERT INTO shop_db.t VALUES (1); SELECT * FROM shop_db.t").unwrap();
    assert!(my_as(&p, "app", &pw, "DELETE FROM shop_db.t").unwrap_err().contains("denied"));

    // Every attribute: host, connection limit, member_of, privileges (a delta), collation.
    p.write(&config(
        "shop_db",
        "app",
        "  host             = \"127.0.0.1\"\n  connection_limit = 10",
        "[\"SELECT\", \"UPDATE\"]",
        "utf8mb4_bin",
    ));
    let plan = p.plan_json();
    assert_eq!(
        steps(&plan).into_iter().filter(|s| !s.starts_with("write")).collect::<Vec<_>>(),
        [
            "ALTER DATABASE `shop_db` CHARACTER SET 'utf8mb4' COLLATE 'utf8mb4_bin'",
            "RENAME USER 'app'@'%' TO 'app'@'127.0.0.1'",
            "ALTER USER 'app'@'127.0.0.1' WITH MAX_USER_CONNECTIONS 10",
            "REVOKE 'readers' FROM 'app'@'127.0.0.1'",
            "SET DEFAULT ROLE NONE FOR 'app'@'127.0.0.1'",
            "GRANT UPDATE ON `shop\\_db`.* TO 'app'@'127.0.0.1'",
            "REVOKE INSERT ON `shop\\_db`.* FROM 'app'@'127.0.0.1'",
        ],
        "{plan}"
    );
    p.apply();
    p.converged();
    assert_eq!(my(&p, "SELECT Host, max_user_connections FROM mysql.user WHERE User = 'app'"), "127.0.0.1\t10");
    assert_eq!(
        my(&p, "SELECT DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'shop_db'"),
        "utf8mb4_bin"
    );
    assert_eq!(my_as(&p, "app", &pw, "SELECT CURRENT_ROLE()").unwrap(), "NULL");
    my_as(&p, "app", &pw, "UPDATE shop_db.t SET x = 2").unwrap();

    // Drift: changed outside dbctl, reported and put back.
    my(
        &p,
        "GRANT DELETE ON `shop\\_db`.* TO 'app'@'127.0.0.1'; ALTER USER 'app'@'127.0.0.1' WITH MAX_USER_CONNECTIONS 99",
    );
    let out = p.ok(&["plan"], 0);
    assert!(
        out.contains("Objects have changed outside of dbctl") && out.contains("connection_limit changed from 10 to 99"),
        "{out}"
    );
    let plan = p.plan_json();
    assert_eq!(
        steps(&plan),
        [
            "ALTER USER 'app'@'127.0.0.1' WITH MAX_USER_CONNECTIONS 10",
            "REVOKE DELETE ON `shop\\_db`.* FROM 'app'@'127.0.0.1'",
        ]
    );
    p.apply();
    p.converged();

    // A rotated secret changes the password the server accepts.
    p.ok(&["secret", "rotate", "secret.app_pw"], 0);
    p.apply();
    let new_pw = p.secret("app-pw");
    assert_ne!(new_pw, pw);
    assert!(my_as(&p, "app", &pw, "SELECT 1").is_err());
    assert_eq!(my_as(&p, "app", &new_pw, "SELECT 1").unwrap(), "1");
    p.converged();

    // Destroy removes what dbctl created, and nothing else.
    my(&p, "CREATE DATABASE unmanaged; CREATE USER 'other'@'%'");
    let out = p.ok(&["destroy", "--auto-approve"], 0);
    assert!(out.contains("destroyed"), "{out}");
    assert_eq!(my(&p, "SELECT count(*) FROM mysql.user WHERE User IN ('app', 'readers')"), "0");
    assert_eq!(my(&p, "SELECT count(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'shop_db'"), "0");
    assert_eq!(my(&p, "SELECT count(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'unmanaged'"), "1");
    assert_eq!(my(&p, "SELECT count(*) FROM mysql.user WHERE User = 'other'"), "1");
}

#[test]
fn hostile_names_round_trip_and_passwords_never_leak() {
    // Quotes, backticks, a semicolon, unicode, and `_`/`%` (wildcards in grants).
    let db = "we`ird'; db_%ü";
    let user = "o'k; `x` ü\\";
    let hcl = config(
        &db.replace('\\', "\\\\"),
        &user.replace('\\', "\\\\"),
        "  member_of = [role.readers]",
        "[\"SELECT\"]",
        "utf8mb4_general_ci",
    );
    let p = Project::new(&hcl);
    let out = p.apply();
    p.converged();
    let pw = p.secret("app-pw");
    assert!(!out.contains(&pw), "the password is never printed");
    for f in ["state.json", "state.journal"] {
        let s = std::fs::read_to_string(p.path().join(".dbctl").join(f)).unwrap_or_default();
        assert!(!s.contains(&pw), "{f} holds the password");
    }
    assert_eq!(
        my(
            &p,
            &format!(
                "SELECT count(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{}'",
                db.replace('\'', "''")
            )
        ),
        "1"
    );
    // Exactly that database is granted, not every name the wildcards match.
    let grants = my_as(&p, user, &pw, "SHOW GRANTS").unwrap();
    assert!(grants.contains("we``ird'; db\\\\_\\\\%ü"), "{grants}");
    my(&p, &format!("CREATE TABLE `{}`.t (x int)", db.replace('`', "``")));
    my(&p, "CREATE DATABASE `weXird'; dbY%ü`");
    my(&p, "CREATE TABLE `weXird'; dbY%ü`.t (x int)");
    assert_eq!(my_as(&p, user, &pw, &format!("SELECT count(*) FROM `{}`.t", db.replace('`', "``"))).unwrap(), "0");
    assert!(my_as(&p, user, &pw, "SELECT count(*) FROM `weXird'; dbY%ü`.t").unwrap_err().contains("denied"));
    p.ok(&["destroy", "--auto-approve"], 0);
    assert_eq!(my(&p, "SELECT count(*) FROM mysql.user WHERE User LIKE 'o''k%'"), "0");
}

#[test]
fn router_access_levels_map_to_mysql_privileges() {
    let hcl = format!(
        r#"{SERVER}
database "orders" {{
  server = server.main
}}

database "stats" {{
  server = server.main
}}

secret "api_pw" {{
  store = "local"
  name  = "api-pw"
}}

user "api" {{
  server   = server.main
  password = secret.api_pw
}}

router "api" {{
  user   = user.api
  access = "readwrite"

  route "orders" {{
    database = database.orders
  }}
  route "stats" {{
    database = database.stats
    access   = "readonly"
  }}
  default = "orders"
}}
"#
    );
    let p = Project::new(&hcl);
    p.apply();
    p.converged();
    let grants = my(&p, "SHOW GRANTS FOR 'api'@'%'");
    assert!(
        grants.contains(
            "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE TEMPORARY TABLES, LOCK TABLES, SHOW VIEW ON `orders`.*"
        ),
        "{grants}"
    );
    assert!(grants.contains("GRANT SELECT, SHOW VIEW ON `stats`.*"), "{grants}");
    // The secret has the RDS shape for MySQL.
    let doc: serde_json::Value = serde_json::from_str(&p.secret_document("api-pw")).unwrap();
    assert_eq!(doc["engine"], "mysql");
    assert_eq!(doc["port"], p.port());
    assert_eq!(doc["dbname"], "orders");
}

#[test]
fn an_embedded_mariadb_starts_and_stops() {
    let p = Project::new(SERVER);
    let out = p.ok(&["dev", "up"], 0);
    assert!(out.contains("server.main: MariaDB running on 127.0.0.1:"), "{out}");
    assert!(p.ok(&["dev", "status"], 0).contains("server.main: running"));
    assert_eq!(my(&p, "SELECT 40 + 2"), "42");
    p.ok(&["dev", "down"], 0);
    assert!(p.ok(&["dev", "status"], 0).contains("server.main: stopped"));
    p.ok(&["dev", "up"], 0);
    p.ok(&["dev", "down"], 0);
}

#[test]
fn backups_run_list_restore_verify_and_a_corrupted_one_fails() {
    let hcl = format!(
        r#"{SERVER}
database "shop" {{
  server = server.main
  name   = "shop db"
}}

user "svc" {{
  server = server.main
  grant {{
    database   = database.shop
    privileges = ["SELECT"]
  }}
}}

backup_policy "nightly" {{
  databases   = [database.shop]
  schedule    = "0 3 * * *"
  storage     = "file://.dbctl/backups"
  compression = "zstd"
}}
"#
    );
    let p = Project::new(&hcl);
    p.apply();
    my(
        &p,
        "CREATE TABLE `shop db`.orders (id int PRIMARY KEY, note text, b blob); \
         INSERT INTO `shop db`.orders SELECT seq, CONCAT('line\\n', seq, ' it''s'), UNHEX('00FF0A') FROM `shop db`.seq_1_to_3000; \
         CREATE TABLE `shop db`.`we``ird; ü` (x int); INSERT INTO `shop db`.`we``ird; ü` VALUES (1), (NULL); \
         CREATE TABLE `shop db`.empty (x int)",
    );
    let out = p.ok(&["backup", "run"], 0);
    assert!(out.contains("backup_policy.nightly: database.shop -> "), "{out}");
    let all: Vec<serde_json::Value> =
        serde_json::from_slice(&p.dbctl(&["backup", "list", "--format", "json"]).stdout).unwrap();
    assert_eq!(all.len(), 1);
    let m = &all[0];
    let id = m["id"].as_str().unwrap().to_string();
    assert_eq!(m["engine"], "mysql");
    assert_eq!(m["tables"]["`orders`"]["rows"], 3000);
    assert_eq!(m["tables"]["`we``ird; ü`"]["rows"], 2);
    assert_eq!(m["tables"]["`empty`"]["rows"], 0);
    assert!(m["compressed_size"].as_u64().unwrap() < m["size"].as_u64().unwrap());

    p.ok(&["backup", "restore", &id, "--to", "shop copy"], 0);
    let sum = |db: &str| my(&p, &format!("CHECKSUM TABLE `{db}`.orders, `{db}`.`we``ird; ü`"));
    assert_eq!(sum("shop copy").replace("shop copy", ""), sum("shop db").replace("shop db", ""));
    assert!(p.ok(&["backup", "restore", &id, "--to", "shop copy"], 1).contains("exists"));
    let out = p.ok(&["backup", "verify", &id], 0);
    assert!(out.contains("3 tables match"), "{out}");
    assert_eq!(my(&p, "SELECT count(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'dbctl_verify%'"), "0");

    // A manifest that recorded other rows fails verify, naming the table.
    let dir = p.path().join(".dbctl/backups/nightly/shop db");
    let manifest_path = dir.join(format!("{id}.manifest.json"));
    let original = std::fs::read_to_string(&manifest_path).unwrap();
    let mut edited: serde_json::Value = serde_json::from_str(&original).unwrap();
    edited["tables"]["`orders`"]["rows"] = 2999.into();
    std::fs::write(&manifest_path, edited.to_string()).unwrap();
    let out = p.ok(&["backup", "verify", &id], 1);
    assert!(out.contains("does not match what was recorded") && out.contains("`orders`: 3000 rows"), "{out}");
    std::fs::write(&manifest_path, original).unwrap();

    // One byte changed in the stored object: verify fails, clearly.
    let object = dir.join(m["object"].as_str().unwrap());
    let mut bytes = std::fs::read(&object).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&object, bytes).unwrap();
    let out = p.ok(&["backup", "verify", &id], 1);
    assert!(out.contains("is corrupted"), "{out}");
}

/// Spellings the server stores differently (a host and a character set in
/// capitals) and hand-made wildcard grants in `mysql.db` (`app\_%`, and
/// `app_db` unescaped, which also matches `appXdb`) are not differences:
/// the plan converges and leaves the wildcard grants alone.
#[test]
fn host_and_charset_spellings_and_wildcard_grants_converge() {
    let p = Project::new(&format!(
        r#"{SERVER}
database "app" {{
  server    = server.main
  name      = "app_db"
  encoding  = "UTF8MB4"
  collation = "UTF8MB4_Bin"
}}
database "legacy" {{
  server    = server.main
  encoding  = "UTF8"
  collation = "utf8_general_ci"
}}
user "app" {{
  server = server.main
  host   = "LocalHost"
  grant {{
    database   = database.app
    privileges = ["SELECT"]
  }}
}}
"#
    ));
    p.apply();
    p.converged();
    assert_eq!(my(&p, "SELECT Host FROM mysql.user WHERE User = 'app'"), "localhost");
    assert_eq!(
        my(&p, "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'app_db'"),
        "utf8mb4\tutf8mb4_bin"
    );
    assert_eq!(
        my(&p, "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'legacy'"),
        "utf8mb3\tutf8mb3_general_ci"
    );

    my(&p, "GRANT DELETE ON `app\\_%`.* TO 'app'@'localhost'; GRANT INSERT ON `app_db`.* TO 'app'@'localhost'");
    p.converged();
    assert_eq!(
        my(&p, "SELECT Db, Select_priv, Insert_priv, Delete_priv FROM mysql.db WHERE User = 'app' ORDER BY Db"),
        "app\\\\_%\tN\tN\tY\napp\\\\_db\tY\tN\tN\napp_db\tN\tY\tN"
    );
}

/// Changing `name`: a MySQL user is renamed (RENAME USER: same password,
/// grants kept, the old account gone); a database, which MySQL cannot
/// rename, is a visible drop and create, refused while it holds tables
/// unless --allow-data-loss.
#[test]
fn a_renamed_user_keeps_its_grants_and_a_renamed_database_is_replaced() {
    let v1 = format!(
        r#"{SERVER}
secret "pw" {{}}
database "shop" {{
  server = server.main
  name   = "shop_a"
}}
user "app" {{
  server   = server.main
  password = secret.pw
  grant {{
    database   = database.shop
    privileges = ["SELECT"]
  }}
}}
"#
    );
    let p = Project::new(&v1);
    p.apply();
    let pw = p.secret("secret.pw");
    my(&p, "CREATE TABLE shop_a.t (x int); INSERT INTO shop_a.t VALUES (7)");
    assert_eq!(my_as(&p, "app", &pw, "SELECT x FROM shop_a.t").unwrap(), "7");

    // The user alone first: renamed in place.
    let v2 = v1.replace("user \"app\" {\n", "user \"app\" {\n  name     = \"app2\"\n");
    p.write(&v2);
    let plan = p.plan_json();
    assert_eq!(steps(&plan), ["RENAME USER 'app'@'%' TO 'app2'@'%'"], "{plan}");
    p.apply();
    p.converged();
    assert_eq!(my(&p, "SELECT count(*) FROM mysql.user WHERE User = 'app'"), "0");
    assert!(my_as(&p, "app", &pw, "SELECT 1").is_err());
    assert_eq!(my_as(&p, "app2", &pw, "SELECT x FROM shop_a.t").unwrap(), "7");

    // The database: dropped and created, which loses its table.
    let v3 = v2.replace("name   = \"shop_a\"", "name   = \"shop_b\"");
    p.write(&v3);
    let out = p.ok(&["plan"], 0);
    assert!(out.contains("# database.shop drops database \"shop_a\", which holds 1 table"), "{out}");
    assert!(out.contains("MySQL and MariaDB cannot rename a database"), "{out}");
    let out = p.dbctl(&["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(my(&p, "SELECT x FROM shop_a.t"), "7");
    p.ok(&["apply", "--auto-approve", "--allow-data-loss"], 0);
    p.converged();
    assert_eq!(my(&p, "SELECT count(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'shop_a'"), "0");
    my(&p, "CREATE TABLE shop_b.t (x int); INSERT INTO shop_b.t VALUES (8)");
    assert_eq!(my_as(&p, "app2", &pw, "SELECT x FROM shop_b.t").unwrap(), "8");
    assert_eq!(my(&p, "SELECT count(*) FROM mysql.db WHERE Db LIKE 'shop%a'"), "0");
}

/// With the general log on, every statement dbctl sends is logged: a create
/// and a rotation leave only the native-password hash there, and the users
/// still log in with their passwords.
#[test]
fn passwords_reach_mariadb_only_hashed() {
    let p = Project::new(&config("shop", "app", "", "[\"SELECT\"]", "utf8mb4_general_ci"));
    p.ok(&["dev", "up"], 0);
    // In the server's own data directory: the only place its system user surely may write.
    my(&p, "SET GLOBAL general_log_file = 'dbctl-general.log'");
    my(&p, "SET GLOBAL general_log = ON");
    let log = std::path::Path::new(&my(&p, "SELECT @@datadir")).join("dbctl-general.log");
    p.apply();
    let first = p.secret("app-pw");
    assert_eq!(my_as(&p, "app", &first, "SELECT 1").unwrap(), "1");
    p.ok(&["secret", "rotate", "secret.app_pw"], 0);
    p.apply();
    let second = p.secret("app-pw");
    assert_ne!(first, second);
    assert_eq!(my_as(&p, "app", &second, "SELECT 1").unwrap(), "1");
    assert!(my_as(&p, "app", &first, "SELECT 1").is_err(), "the old password no longer works");
    let text = std::fs::read_to_string(&log).expect("the general log");
    assert!(text.contains("IDENTIFIED WITH mysql_native_password AS '*"), "the password statements are logged");
    for pw in [&first, &second] {
        assert!(!text.contains(pw.as_str()), "a password reached the general log");
    }
}

/// A plan stores the statement in its server's dialect, and apply runs that
/// text: a dropped database is ``DROP DATABASE `...` `` (not PostgreSQL's
/// `"..."`) in the human plan, the JSON plan and the saved plan, with a name
/// that backquotes, quotes, ends a statement and is not ASCII, and exactly
/// that statement reaches the server's general log and drops it. A user's
/// password statement is logged as the plan showed it, with only the hash
/// where the plan shows (sensitive).
#[test]
fn a_dropped_database_runs_as_the_plan_shows_it() {
    let db = "old`db\"'; x ü名";
    let user = "o'k`ü";
    let with_db = format!(
        r#"{SERVER}
secret "pw" {{}}
user "app" {{
  server   = server.main
  name     = "{user}"
  password = secret.pw
}}
database "old" {{
  server = server.main
  name   = "{}"
}}
"#,
        db.replace('"', "\\\"")
    );
    let p = Project::new(&with_db);
    p.ok(&["dev", "up"], 0);
    // In the server's own data directory: the only place its system user surely may write.
    my(&p, "SET GLOBAL general_log_file = 'dbctl-general.log'");
    my(&p, "SET GLOBAL general_log = ON");
    let log = std::path::Path::new(&my(&p, "SELECT @@datadir")).join("dbctl-general.log");

    let shown_password = "ALTER USER 'o''k`ü'@'%' IDENTIFIED WITH mysql_native_password AS (sensitive) ACCOUNT UNLOCK";
    let plan = p.plan_json();
    assert!(steps(&plan).contains(&shown_password.to_string()), "{plan}");
    assert!(steps(&plan).contains(&"CREATE DATABASE `old``db\"'; x ü名`".to_string()), "{plan}");
    p.apply();
    p.converged();
    let pw = p.secret("secret.pw");
    assert_eq!(my_as(&p, user, &pw, "SELECT 1").unwrap(), "1");
    let exists =
        format!("SELECT count(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{}'", db.replace('\'', "''"));
    assert_eq!(my(&p, &exists), "1");

    // The database leaves the configuration.
    p.write(&with_db[..with_db.find("database \"old\"").unwrap()]);
    let want = "DROP DATABASE `old``db\"'; x ü名`";
    let human = p.ok(&["plan", "--verbose"], 0);
    assert!(human.contains(&format!("#   {want}\n")), "{human}");
    assert!(!human.contains("DROP DATABASE \""), "PostgreSQL's quoting on a MariaDB server: {human}");
    assert_eq!(steps(&p.plan_json()), [want]);
    let saved = p.path().join("drop.plan");
    p.ok(&["plan", "--out", saved.to_str().unwrap()], 0);
    let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    let step = &file["changes"][0]["steps"][0];
    assert_eq!((step["op"].as_str(), step["sql"].as_str()), (Some("drop_database"), Some(want)), "{file}");
    let out = p.ok(&["apply", saved.to_str().unwrap()], 0);
    assert!(out.contains(want), "apply says what it runs: {out}");
    assert_eq!(my(&p, &exists), "0", "the database is gone");
    p.converged();

    // What ran is what the plans showed.
    let text = std::fs::read_to_string(&log).expect("the general log");
    let logged: Vec<&str> = text.lines().filter(|l| l.contains("DROP DATABASE")).collect();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(logged[0].ends_with(&format!("Query\t{want}")), "{logged:?}");
    let hash = {
        use sha1::{Digest, Sha1};
        format!("'*{}'", hex::encode_upper(Sha1::digest(Sha1::digest(pw.as_bytes()))))
    };
    assert!(text.contains(&shown_password.replace("(sensitive)", &hash)), "{text}");
    assert!(!text.contains(pw.as_str()), "a password reached the general log");
}
