//! MySQL / MariaDB: so far the embedded server (issue [7] builds the engine).

mod common;

use common::{text, Project};

#[test]
fn an_embedded_mariadb_starts_stops_and_the_engine_says_it_is_not_built() {
    let p = Project::new("server \"db\" {\n  engine   = \"mysql\"\n  embedded = true\n}\n");
    let out = p.ok(&["dev", "up"], 0);
    assert!(out.contains("server.db: MariaDB running on 127.0.0.1:"), "{out}");
    assert!(p.ok(&["dev", "status"], 0).contains("server.db: running"));
    let port = std::fs::read_to_string(p.path().join(".dbctl/servers/db/port")).unwrap();
    let q = std::process::Command::new("mariadb")
        .args(["--no-defaults", "--protocol=tcp", "-h", "127.0.0.1", "-u", "root", "-N", "-e", "SELECT 40 + 2"])
        .arg(format!("--port={}", port.trim()))
        .output()
        .unwrap();
    assert_eq!(text(&q.stdout).trim(), "42", "{}", text(&q.stderr));
    // Plans say plainly that the engine is not built yet.
    let out = p.ok(&["plan"], 1);
    assert!(out.contains("the MySQL/MariaDB engine arrives with issue [7]"), "{out}");
    p.ok(&["dev", "down"], 0);
    assert!(p.ok(&["dev", "status"], 0).contains("server.db: stopped"));
    p.ok(&["dev", "up"], 0);
    p.ok(&["dev", "down"], 0);
}
