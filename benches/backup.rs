//! Benchmark: `dbctl backup run` of a database of at least 1 GiB against its
//! floor, `pg_dump -Fc -Z0 | zstd -3 > file`, on the same server in the same
//! run. Prints throughput of both and the ratio. Not a timed test.
//!
//!     cargo bench --bench backup -- 1024      # MiB of table data

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Instant;

fn dbctl(dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dbctl"));
    c.arg("-C").arg(dir);
    c
}

fn main() {
    let mib: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1024);
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        dir.path().join("main.hcl"),
        "server \"main\" {\n  engine   = \"postgres\"\n  embedded = true\n}\n\ndatabase \"big\" {\n  server = server.main\n}\n\nuser \"u\" {\n  server = server.main\n  grant {\n    database   = database.big\n    privileges = [\"CONNECT\"]\n  }\n}\n\nbackup_policy \"bench\" {\n  databases   = [database.big]\n  schedule    = \"0 3 * * *\"\n  storage     = \"file://backups\"\n  compression = \"zstd\"\n}\n",
    )
    .unwrap();
    assert!(dbctl(dir.path()).args(["apply", "--auto-approve"]).stdout(Stdio::null()).status().unwrap().success());
    let port = std::fs::read_to_string(dir.path().join(".dbctl/servers/main/port")).unwrap().trim().to_string();
    let psql = |sql: &str| {
        let ok = Command::new("psql")
            .args(["-X", "-q", "-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-d", "big", "-c", sql])
            .status()
            .unwrap()
            .success();
        assert!(ok, "{sql}");
    };
    // Rows of ~200 bytes of mixed, partly compressible text.
    let rows = mib * 1024 * 1024 / 200;
    println!("filling {mib} MiB ({rows} rows)...");
    psql(&format!(
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) || repeat(md5((g % 1000)::text), 4) || md5(random()::text) AS v FROM generate_series(1, {rows}) g"
    ));
    psql("VACUUM ANALYZE t");

    // Floor: pg_dump -Fc -Z0 | zstd -3 > file.
    let floor_file = dir.path().join("floor.dump.zst");
    let t = Instant::now();
    let floor = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "PGHOST=127.0.0.1 PGPORT={port} PGUSER=postgres pg_dump -Fc -Z0 big | zstd -q -3 -o {}",
            floor_file.display()
        ))
        .status()
        .unwrap();
    let floor_secs = t.elapsed().as_secs_f64();
    assert!(floor.success());

    let t = Instant::now();
    let out = dbctl(dir.path()).args(["backup", "run"]).output().unwrap();
    let dbctl_secs = t.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dumped: serde_json::Value = serde_json::from_slice(
        &dbctl(dir.path()).args(["backup", "list", "--format", "json"]).output().unwrap().stdout,
    )
    .unwrap();
    let size = dumped[0]["size"].as_u64().unwrap() as f64 / 1048576.0;
    let stored = dumped[0]["compressed_size"].as_u64().unwrap() as f64 / 1048576.0;
    let floor_size = std::fs::metadata(&floor_file).unwrap().len() as f64 / 1048576.0;
    let _ = dbctl(dir.path()).args(["dev", "down"]).status();

    println!("| measure | seconds | MiB/s of dump | stored MiB |");
    println!("| --- | ---: | ---: | ---: |");
    println!("| pg_dump -Fc -Z0 \\| zstd -3 (floor) | {floor_secs:.1} | {:.0} | {floor_size:.0} |", size / floor_secs);
    println!(
        "| dbctl backup run (+ row counts and checksums) | {dbctl_secs:.1} | {:.0} | {stored:.0} |",
        size / dbctl_secs
    );
    println!("dump size {size:.0} MiB; throughput ratio dbctl/floor = {:.2} (target >= 0.9)", floor_secs / dbctl_secs);
}
