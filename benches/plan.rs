//! Benchmark: a no-change `dbctl plan` at scale against its floor, one
//! `psql` process reading the same catalogs; and `dbctl apply` from empty
//! against one `psql` process running the same DDL. Prints ratios and peak
//! memory. Not a timed test: run it by hand.
//!
//!     cargo bench --bench plan -- 10000
//!
//! The configuration has N objects on one embedded server: databases (N/40),
//! group roles (N/1000), users, one grant block per user (CONNECT on a
//! database) and one per database (SELECT on its tables, now and in future,
//! for a group role) — so the plan reads inside every database.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn config(n: usize) -> (String, usize) {
    let dbs = (n / 40).max(1);
    let roles = (n / 1000).max(1);
    let users = (n - dbs - roles - dbs) / 2;
    let mut s = String::from("server \"main\" {\n  engine   = \"postgres\"\n  embedded = true\n}\n");
    for r in 0..roles {
        let _ = write!(s, "\nrole \"r{r}\" {{\n  server = server.main\n");
        for d in (0..dbs).filter(|d| d % roles == r) {
            let _ = write!(
                s,
                "  grant {{\n    database   = database.d{d}\n    schema     = \"public\"\n    tables     = \"*\"\n    privileges = [\"SELECT\"]\n  }}\n"
            );
        }
        s.push_str("}\n");
    }
    for d in 0..dbs {
        let _ = write!(s, "\ndatabase \"d{d}\" {{\n  server = server.main\n}}\n");
    }
    for u in 0..users {
        let _ = write!(
            s,
            "\nuser \"u{u}\" {{\n  server    = server.main\n  member_of = [role.r{}]\n  grant {{\n    database   = database.d{}\n    privileges = [\"CONNECT\"]\n  }}\n}}\n",
            u % roles,
            u % dbs
        );
    }
    (s, dbs + roles + users * 2 + dbs)
}

/// The second shape: N/2 users each with one database-level grant, N/40
/// databases, N/1000 group roles, nothing to read inside the databases, so
/// the plan's server reads are a few catalog queries and its time is CPU.
fn config_flat(n: usize) -> (String, usize) {
    let dbs = (n / 40).max(1);
    let roles = (n / 1000).max(1);
    let users = n / 2;
    let mut s = String::from("server \"main\" {\n  engine   = \"postgres\"\n  embedded = true\n}\n");
    for r in 0..roles {
        let _ = write!(s, "\nrole \"r{r}\" {{\n  server = server.main\n}}\n");
    }
    for d in 0..dbs {
        let _ = write!(s, "\ndatabase \"d{d}\" {{\n  server = server.main\n}}\n");
    }
    for u in 0..users {
        let _ = write!(
            s,
            "\nuser \"u{u}\" {{\n  server    = server.main\n  member_of = [role.r{}]\n  grant {{\n    database   = database.d{}\n    privileges = [\"CONNECT\"]\n  }}\n}}\n",
            u % roles,
            u % dbs
        );
    }
    (s, dbs + roles + users * 2)
}

/// A configuration of `n` users made by one block with for_each.
fn config_for_each(n: usize) -> String {
    let keys: Vec<String> = (0..n).map(|i| format!("\"u{i}\"")).collect();
    format!(
        "server \"main\" {{\n  engine   = \"postgres\"\n  embedded = true\n}}\n\ndatabase \"app\" {{\n  server = server.main\n}}\n\nlocals {{\n  names = toset([{}])\n}}\n\nuser \"team\" {{\n  for_each = local.names\n  server   = server.main\n  name     = each.key\n  grant {{\n    database   = database.app\n    privileges = [\"CONNECT\"]\n  }}\n}}\n",
        keys.join(", ")
    )
}

/// Milliseconds of the phases a plan logs at debug level: (load, refresh, diff).
fn phases(dir: &Path) -> (u64, u64, u64) {
    let out = dbctl(dir).args(["plan"]).env("DBCTL_LOG", "dbctl=debug").output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    let grab = |prefix: &str| -> u64 {
        text.lines()
            .filter_map(|l| l.split_once(prefix).map(|(_, r)| r))
            .filter_map(|r| {
                r.split(" ms").next().and_then(|n| n.rsplit(' ').next()).and_then(|n| n.parse::<u64>().ok())
            })
            .sum()
    };
    (grab("configuration loaded in "), grab("refresh: "), grab("diff: "))
}

/// Run a command to completion; wall time and its peak RSS in KiB.
///
/// The peak RSS comes from `/usr/bin/time` (package `time`) when present: a
/// child's own `ru_maxrss` also counts the pages of the process that spawned
/// it, as they were before `exec` — here this benchmark, which holds a parsed
/// plan of 10,000 creates (the figure read 188 MiB for every command).
fn measure(cmd: &mut Command) -> (Duration, i64, bool) {
    let report = tempfile::NamedTempFile::new().expect("temp file");
    let timed = Path::new("/usr/bin/time").exists();
    let mut wrapped = if timed {
        let mut w = Command::new("/usr/bin/time");
        w.arg("-f").arg("%M").arg("-o").arg(report.path()).arg(cmd.get_program()).args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => w.env(k, v),
                None => w.env_remove(k),
            };
        }
        w
    } else {
        std::mem::replace(cmd, Command::new("true"))
    };
    let t = Instant::now();
    let child = wrapped.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn");
    let mut status = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child and fills a rusage we own.
    unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    let elapsed = t.elapsed();
    let rss = if timed {
        std::fs::read_to_string(report.path()).ok().and_then(|s| s.trim().lines().last()?.parse().ok()).unwrap_or(0)
    } else {
        ru.ru_maxrss
    };
    (elapsed, rss, libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn project(dir: &Path, hcl: &str) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("main.hcl"), hcl).unwrap();
}

fn dbctl(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dbctl"));
    c.arg("-C").arg(dir);
    c
}

fn port(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(".dbctl/servers/main/port")).unwrap().trim().to_string()
}

fn psql(dir: &Path, script: &Path) -> Command {
    let mut c = Command::new("psql");
    c.args([
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        "127.0.0.1",
        "-p",
        &port(dir),
        "-U",
        "postgres",
        "-d",
        "postgres",
        "-f",
    ])
    .arg(script)
    // The embedded server asks for its admin password over TCP.
    .env("PGPASSWORD", std::fs::read_to_string(dir.join(".dbctl/servers/main/password")).unwrap_or_default().trim());
    c
}

/// Wait (up to two minutes) until no autovacuum worker has run for three seconds.
fn settle(dir: &Path) {
    let probe = dir.join("probe.sql");
    std::fs::write(&probe, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker';\n")
        .unwrap();
    let start = Instant::now();
    let mut quiet = 0;
    while quiet < 6 && start.elapsed() < Duration::from_secs(120) {
        let out = psql(dir, &probe).arg("-At").output().unwrap();
        quiet = if String::from_utf8_lossy(&out.stdout).trim() == "0" { quiet + 1 } else { 0 };
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("server settled after {:.0} s", start.elapsed().as_secs_f64());
}

fn main() {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(10_000);
    let (hcl, objects) = config(n);
    println!("dbctl benchmark: {objects} objects on one embedded PostgreSQL server");

    // Floor for apply: the same DDL, as one psql script, on a fresh server.
    let floor_dir = tempfile::tempdir().unwrap();
    project(floor_dir.path(), &hcl);
    assert!(dbctl(floor_dir.path()).args(["dev", "up"]).status().unwrap().success());
    let plan = dbctl(floor_dir.path()).args(["plan", "--format", "json"]).output().unwrap();
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).expect("plan json");
    let mut ddl = String::new();
    let mut current: Option<String> = None;
    for s in plan["steps"].as_array().unwrap() {
        let Some(sql) =
            s["description"].as_str().filter(|_| s["op"] == "sql").map(|d| d.split(" -- in database").next().unwrap())
        else {
            continue;
        };
        let db = s["database"].as_str().map(str::to_string);
        if db != current {
            let _ = writeln!(ddl, "\\c {}", db.as_deref().unwrap_or("postgres"));
            current = db;
        }
        let _ = writeln!(ddl, "{sql};");
    }
    let ddl_file = floor_dir.path().join("apply.sql");
    std::fs::write(&ddl_file, &ddl).unwrap();
    let (floor_apply, _, ok) = measure(&mut psql(floor_dir.path(), &ddl_file));
    assert!(ok, "the DDL script failed");
    let _ = dbctl(floor_dir.path()).args(["dev", "down"]).status();

    // dbctl apply from empty (the server is created first, not timed).
    let dir = tempfile::tempdir().unwrap();
    project(dir.path(), &hcl);
    assert!(dbctl(dir.path()).args(["dev", "up"]).status().unwrap().success());
    let (apply, apply_rss, ok) = measure(dbctl(dir.path()).args(["apply", "--auto-approve"]));
    assert!(ok, "apply failed");

    settle(dir.path());
    // Validate (no I/O).
    let validate = median((0..5).map(|_| measure(dbctl(dir.path()).arg("validate")).0).collect());

    // No-change plan vs one psql process reading the same catalogs,
    // interleaved, once the server has finished the work the apply left it
    // (autovacuum visits each new database; that would slow whichever ran first).
    let mut read = format!("{};\n", dbctl::engine::postgres::SERVER_QUERY.trim());
    let db_query = dbctl::engine::postgres::db_query(&["public".to_string()]);
    for d in 0..(n / 40).max(1) {
        let _ = write!(read, "\\c d{d}\n{};\n", db_query.trim());
    }
    let read_file = dir.path().join("read.sql");
    std::fs::write(&read_file, read).unwrap();
    let mut plans = Vec::new();
    let mut floors = Vec::new();
    let mut plan_rss = 0;
    for _ in 0..5 {
        let (t, rss, ok) = measure(dbctl(dir.path()).args(["plan", "--detailed-exitcode"]));
        assert!(ok, "plan failed");
        plans.push(t);
        plan_rss = plan_rss.max(rss);
        floors.push(measure(&mut psql(dir.path(), &read_file)).0);
    }
    let floor_plan = median(floors);
    let out = dbctl(dir.path()).args(["plan", "--detailed-exitcode"]).output().unwrap();
    if out.status.code() != Some(0) {
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let _ = dbctl(dir.path()).args(["dev", "down"]).status();
        let head: Vec<&str> = text.lines().take(60).collect();
        panic!("the plan after apply must be a no-op; it says:\n{}", head.join("\n"));
    }

    let (load, refresh, diffms) = phases(dir.path());
    // Stopped while the flat shape is measured: its checkpoints and
    // autovacuum would share the two cores with the measurement.
    let _ = dbctl(dir.path()).args(["dev", "down"]).stdout(Stdio::null()).status();

    // The flat shape: the same number of objects, nothing read inside the databases.
    let (flat_hcl, flat_objects) = config_flat(n);
    let flat_dir = tempfile::tempdir().unwrap();
    project(flat_dir.path(), &flat_hcl);
    assert!(dbctl(flat_dir.path()).args(["dev", "up"]).status().unwrap().success());
    let (_, _, ok) = measure(dbctl(flat_dir.path()).args(["apply", "--auto-approve"]));
    assert!(ok, "apply of the flat shape failed");
    settle(flat_dir.path());
    let flat_read = flat_dir.path().join("read.sql");
    std::fs::write(&flat_read, format!("{};\n", dbctl::engine::postgres::SERVER_QUERY.trim())).unwrap();
    let mut flat_plans = Vec::new();
    let mut flat_floors = Vec::new();
    let mut flat_rss = 0;
    for _ in 0..5 {
        let (t, rss, ok) = measure(dbctl(flat_dir.path()).args(["plan", "--detailed-exitcode"]));
        assert!(ok, "plan of the flat shape failed or is not a no-op");
        flat_plans.push(t);
        flat_rss = flat_rss.max(rss);
        flat_floors.push(measure(&mut psql(flat_dir.path(), &flat_read)).0);
    }
    // Phases of 9 debug-logged plans: one run's phases move by a third on
    // these machines. Medians of each, and of load + diff per run.
    let runs: Vec<(u64, u64, u64)> = (0..9).map(|_| phases(flat_dir.path())).collect();
    let mid = |mut v: Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    let (flat_load, flat_refresh, flat_diff) = (
        mid(runs.iter().map(|r| r.0).collect()),
        mid(runs.iter().map(|r| r.1).collect()),
        mid(runs.iter().map(|r| r.2).collect()),
    );
    let load_diff: Vec<u64> = runs.iter().map(|r| r.0 + r.2).collect();
    let (load_diff_min, load_diff_max) =
        (load_diff.iter().min().copied().unwrap_or(0), load_diff.iter().max().copied().unwrap_or(0));
    let load_diff = mid(load_diff);
    let _ = dbctl(flat_dir.path()).args(["dev", "down"]).status();
    let (flat_plan, flat_floor) = (median(flat_plans), median(flat_floors));

    // for_each: validate one block of K keys (no server).
    let fe_dir = tempfile::tempdir().unwrap();
    let mut for_each = Vec::new();
    for k in [2_500, 5_000, 10_000, 20_000] {
        project(fe_dir.path(), &config_for_each(k));
        let t = median((0..3).map(|_| measure(dbctl(fe_dir.path()).arg("validate")).0).collect());
        for_each.push((k, t));
    }

    // A plan with 1% of the objects changed (every 100th user's connection limit).
    let mut changed = String::new();
    let mut n_user = 0;
    for line in hcl.lines() {
        changed.push_str(line);
        changed.push('\n');
        if line.starts_with("user \"") {
            n_user += 1;
            if n_user % 50 == 0 {
                changed.push_str("  connection_limit = 7\n");
            }
        }
    }
    std::fs::write(dir.path().join("main.hcl"), &changed).unwrap();
    assert!(dbctl(dir.path()).args(["dev", "up"]).stdout(Stdio::null()).status().unwrap().success());
    settle(dir.path());
    let plan_1pct = median((0..3).map(|_| measure(dbctl(dir.path()).args(["plan"])).0).collect());
    let _ = dbctl(dir.path()).args(["dev", "down"]).status();

    // Four servers at once: --parallelism 4 against 1 (each server gets a quarter of the objects).
    let quarter = config(n / 4).0;
    let mut four = String::new();
    for k in 0..4 {
        four.push_str(
            &quarter
                .replace("server \"main\"", &format!("server \"s{k}\""))
                .replace("server.main", &format!("server.s{k}"))
                .replace("role \"r", &format!("role \"s{k}r"))
                .replace("role.r", &format!("role.s{k}r"))
                .replace("database \"d", &format!("database \"s{k}d"))
                .replace("database.d", &format!("database.s{k}d"))
                .replace("user \"u", &format!("user \"s{k}u")),
        );
    }
    // The same with users, roles and grants only: each step waits on a round
    // trip and a commit rather than on the machine's disk and CPUs, which four
    // local servers share (CREATE DATABASE writes the template into the WAL).
    let mut light = String::new();
    for k in 0..4 {
        let _ = write!(
            light,
            "server \"s{k}\" {{\n  engine   = \"postgres\"\n  embedded = true\n}}\n\ndatabase \"s{k}d\" {{\n  server = server.s{k}\n}}\n\nrole \"s{k}r\" {{\n  server = server.s{k}\n}}\n"
        );
        for u in 0..(n / 16).max(1) {
            let _ = write!(
                light,
                "\nuser \"s{k}u{u}\" {{\n  server    = server.s{k}\n  member_of = [role.s{k}r]\n  grant {{\n    database   = database.s{k}d\n    privileges = [\"CONNECT\"]\n  }}\n}}\n"
            );
        }
    }
    let run_four = |hcl: &str, parallelism: &str| {
        let d = tempfile::tempdir().unwrap();
        project(d.path(), hcl);
        assert!(dbctl(d.path()).args(["dev", "up"]).status().unwrap().success());
        let (t, _, ok) = measure(dbctl(d.path()).args(["apply", "--auto-approve", "--parallelism", parallelism]));
        assert!(ok, "multi-server apply failed");
        let _ = dbctl(d.path()).args(["dev", "down"]).status();
        t
    };
    let multi = [run_four(&four, "1"), run_four(&four, "4")];
    let multi_light = [run_four(&light, "1"), run_four(&light, "4")];

    let plan = median(plans);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("| measure | dbctl | floor | ratio |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| no-change plan | {:.0} ms | {:.0} ms (psql, same catalog reads) | {:.2} |",
        ms(plan),
        ms(floor_plan),
        ms(plan) / ms(floor_plan)
    );
    println!(
        "| apply from empty | {:.0} ms | {:.0} ms (psql, same DDL) | {:.2} |",
        ms(apply),
        ms(floor_apply),
        ms(apply) / ms(floor_apply)
    );
    println!(
        "| no-change plan, flat shape ({flat_objects} objects, nothing read inside databases) | {:.0} ms | {:.0} ms (psql, same catalog reads) | {:.2} |",
        ms(flat_plan),
        ms(flat_floor),
        ms(flat_plan) / ms(flat_floor)
    );
    println!("| validate | {:.0} ms | | |", ms(validate));
    println!("| plan with 1% changed | {:.0} ms | | |", ms(plan_1pct));
    println!(
        "| apply on 4 servers ({} objects each) | {:.0} ms with --parallelism 4 | {:.0} ms with --parallelism 1 | {:.2} |",
        objects / 4,
        ms(multi[1]),
        ms(multi[0]),
        ms(multi[1]) / ms(multi[0])
    );
    println!(
        "| apply on 4 servers, users and grants only ({} users each) | {:.0} ms with --parallelism 4 | {:.0} ms with --parallelism 1 | {:.2} |",
        (n / 16).max(1),
        ms(multi_light[1]),
        ms(multi_light[0]),
        ms(multi_light[1]) / ms(multi_light[0])
    );
    println!("peak RSS: plan {:.1} MiB, apply {:.1} MiB", plan_rss as f64 / 1024.0, apply_rss as f64 / 1024.0);
    println!(
        "phases of a no-change plan (load + refresh + diff, ms): {load} + {refresh} + {diffms}; flat shape, medians of 9: {flat_load} + {flat_refresh} + {flat_diff} (load + diff {load_diff} ms, {load_diff_min}–{load_diff_max}; {:.2}× the flat shape's psql floor), peak RSS {:.1} MiB",
        // The same machine's speed in the same run: on these VMs it moves by
        // half from hour to hour, and the absolute figure with it.
        load_diff as f64 / ms(flat_floor),
        flat_rss as f64 / 1024.0
    );
    for (k, t) in for_each {
        println!("validate for_each with {k} keys: {:.0} ms", ms(t));
    }
}
