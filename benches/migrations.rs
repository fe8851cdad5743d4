//! Benchmark: `dbctl apply` of 100 small pending migrations against its
//! floor, one `psql` running the same files (each in its own transaction) on
//! the same server in the same run; then `dbctl migrate status` with 1,000
//! applied migrations. Prints the times and the ratio. Not a timed test.
//!
//!     cargo bench --bench migrations

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Instant;

fn dbctl(dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dbctl"));
    c.arg("-C").arg(dir);
    c
}

fn write(dir: &std::path::Path, from: usize, to: usize) {
    for i in from..=to {
        std::fs::write(
            dir.join(format!("{i:04}_t{i}.up.sql")),
            format!("CREATE TABLE t{i} (id bigint PRIMARY KEY, v text);\nINSERT INTO t{i} VALUES (1, 'x');\n"),
        )
        .unwrap();
    }
}

fn apply(dir: &std::path::Path) -> f64 {
    let t = Instant::now();
    let out = dbctl(dir).args(["apply", "--auto-approve"]).output().unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    secs
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        dir.path().join("main.hcl"),
        "server \"main\" {\n  engine   = \"postgres\"\n  embedded = true\n}\n\ndatabase \"bench\" {\n  server = server.main\n}\n\ndatabase \"floor\" {\n  server = server.main\n}\n\nmigrations \"bench\" {\n  database = database.bench\n  dir      = \"m\"\n  lint     = \"off\"\n}\n",
    )
    .unwrap();
    let m = dir.path().join("m");
    std::fs::create_dir_all(&m).unwrap();
    apply(dir.path());
    let port = std::fs::read_to_string(dir.path().join(".dbctl/servers/main/port")).unwrap().trim().to_string();
    let password = std::fs::read_to_string(dir.path().join(".dbctl/servers/main/password")).unwrap().trim().to_string();
    write(&m, 1, 100);

    // Floor: one psql running the same 100 files, each in its own transaction.
    let mut script = String::new();
    for i in 1..=100 {
        script.push_str(&format!("BEGIN;\n\\i {}/{i:04}_t{i}.up.sql\nCOMMIT;\n", m.display()));
    }
    let script_file = dir.path().join("floor.sql");
    std::fs::write(&script_file, script).unwrap();
    let t = Instant::now();
    let floor = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            "floor",
            "-f",
        ])
        .arg(&script_file)
        .env("PGPASSWORD", &password)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    let floor_secs = t.elapsed().as_secs_f64();
    assert!(floor.success());

    let dbctl_secs = apply(dir.path());
    println!(
        "100 migrations: psql {:.0} ms, dbctl apply {:.0} ms (plan, refresh and apply in one process), ratio {:.2}",
        floor_secs * 1e3,
        dbctl_secs * 1e3,
        dbctl_secs / floor_secs
    );

    // 1,000 applied migrations: migrate status.
    write(&m, 101, 1000);
    apply(dir.path());
    let mut best = f64::MAX;
    let mut total = 0.0;
    for _ in 0..5 {
        let t = Instant::now();
        let out = dbctl(dir.path()).args(["migrate", "status", "--format", "json"]).output().unwrap();
        let s = t.elapsed().as_secs_f64();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["migrations"][0]["applied"].as_array().unwrap().len(), 1000);
        best = best.min(s);
        total += s;
    }
    println!(
        "migrate status with 1000 applied migrations: best {:.0} ms, mean {:.0} ms (whole process)",
        best * 1e3,
        total / 5.0 * 1e3
    );
    let _ = dbctl(dir.path()).args(["dev", "down", "--purge"]).stdout(Stdio::null()).status();
}
