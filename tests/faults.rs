//! Faults: an apply killed with SIGKILL at random points, and a server that
//! goes away mid-apply. Every rerun must converge, with nothing lost and
//! nothing unmanaged touched.

mod common;

use std::fmt::Write as _;

use common::{Project, SERVER};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn big_config(users: usize, dbs: usize) -> String {
    let mut s = String::from(SERVER);
    s.push_str("\nrole \"staff\" {\n  server = server.main\n}\n");
    for d in 0..dbs {
        let _ = write!(s, "\ndatabase \"d{d}\" {{\n  server = server.main\n}}\n");
    }
    for u in 0..users {
        let _ = write!(
            s,
            "\nuser \"u{u}\" {{\n  server    = server.main\n  member_of = [role.staff]\n  grant {{\n    database   = database.d{}\n    privileges = [\"CONNECT\"]\n  }}\n}}\n",
            u % dbs
        );
    }
    s
}

fn spawn(p: &Project, args: &[&str]) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_dbctl"))
        .args(["--no-color", "-C"])
        .arg(p.path())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn bystander(p: &Project) {
    p.sql("postgres", "CREATE ROLE bystander LOGIN");
    p.sql("postgres", "CREATE DATABASE bystander_db OWNER bystander");
}

fn bystander_untouched(p: &Project) {
    assert_eq!(
        p.sql("postgres", "SELECT count(*) FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE d.datname = 'bystander_db' AND r.rolname = 'bystander'"),
        "1"
    );
}

#[test]
fn an_apply_killed_at_random_points_always_converges() {
    let p = Project::new(SERVER);
    p.ok(&["dev", "up"], 0);
    bystander(&p);
    p.write(&big_config(1200, 8));
    let mut rng = StdRng::seed_from_u64(9);
    let mut killed_mid_apply = 0;
    for _ in 0..5 {
        let mut child = spawn(&p, &["apply", "--auto-approve"]);
        std::thread::sleep(std::time::Duration::from_millis(rng.random_range(150..700)));
        if child.try_wait().unwrap().is_none() {
            killed_mid_apply += 1;
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        // What was done is recorded; the state always loads.
        p.ok(&["state", "list"], 0);
    }
    assert_eq!(killed_mid_apply, 5, "every kill landed mid-apply");
    p.apply();
    p.converged();
    assert_eq!(p.sql("postgres", "SELECT count(*) FROM pg_roles WHERE rolname ~ '^u[0-9]+$'"), "1200");
    // The role, 8 databases, 1,200 users and their grants (the server came from `dev up`, not an apply).
    assert_eq!(p.ok(&["state", "list"], 0).lines().count(), 1 + 8 + 1200 * 2);
    bystander_untouched(&p);
}

#[test]
fn a_server_lost_mid_apply_is_a_clear_error_and_the_rerun_converges() {
    let p = Project::new(SERVER);
    p.ok(&["dev", "up"], 0);
    bystander(&p);
    p.write(&big_config(400, 4));
    let child = spawn(&p, &["apply", "--auto-approve"]);
    std::thread::sleep(std::time::Duration::from_millis(700));
    p.ok(&["dev", "down"], 0);
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", common::text(&out.stdout), common::text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("Apply failed. Nothing more was started."), "{text}");
    assert!(text.contains("not started ("), "{text}");
    p.ok(&["dev", "up"], 0);
    p.apply();
    p.converged();
    bystander_untouched(&p);
}

#[test]
fn force_unlock_after_a_killed_apply_explains_and_clears() {
    let p = Project::new(SERVER);
    p.ok(&["dev", "up"], 0);
    p.write(&big_config(600, 4));
    let mut child = spawn(&p, &["apply", "--auto-approve"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "killed mid-apply");
    let pid = child.id();
    let _ = child.kill();
    let _ = child.wait();
    let out = p.ok(&["force-unlock"], 0);
    assert!(out.contains("No running dbctl holds the state lock"), "{out}");
    assert!(out.contains(&format!("\"pid\":{pid}")), "names the process that held it: {out}");
    assert!(p.ok(&["force-unlock"], 0).contains("The state is not locked."));
    p.apply();
    p.converged();
}

#[test]
fn four_servers_apply_in_parallel() {
    let mut hcl = String::new();
    for s in 0..4 {
        let _ = write!(hcl, "\nserver \"s{s}\" {{\n  engine   = \"postgres\"\n  embedded = true\n}}\n");
        for d in 0..3 {
            let _ = write!(hcl, "\ndatabase \"s{s}_d{d}\" {{\n  server = server.s{s}\n}}\n");
        }
        for u in 0..30 {
            let _ = write!(
                hcl,
                "\nuser \"s{s}_u{u}\" {{\n  server = server.s{s}\n  grant {{\n    database   = database.s{s}_d{}\n    privileges = [\"CONNECT\"]\n  }}\n}}\n",
                u % 3
            );
        }
    }
    let p = Project::new(&hcl);
    let out = p.ok(&["apply", "--auto-approve", "--parallelism", "4"], 0);
    assert!(out.contains("Apply complete! Resources: 256 added"), "{out}");
    // Steps of different servers interleave: the servers ran at the same time.
    let servers: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with('['))
        .filter_map(|l| l.split(": ").next()?.split(' ').nth(1)?.split('_').next())
        .filter(|s| s.starts_with("database.s") || s.starts_with("user.s"))
        .collect();
    let switches = servers.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(switches > 8, "servers interleave ({switches} switches)");
    p.converged();
    for s in 0..4 {
        std::fs::read_to_string(p.path().join(format!(".dbctl/servers/s{s}/port"))).unwrap();
    }
    let _ = p.dbctl(&["dev", "down"]);
}
