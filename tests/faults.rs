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

/// Round `r` of the kill test: its own databases, role and users (with
/// grants, passwords and a router), so each apply both drops the previous
/// round's objects and creates its own.
fn round_config(r: usize, dbs: usize, users: usize) -> String {
    let mut s = String::from(SERVER);
    let _ = write!(s, "\nrole \"staff{r}\" {{\n  server = server.main\n}}\n");
    for d in 0..dbs {
        let _ = write!(s, "\ndatabase \"r{r}_d{d}\" {{\n  server = server.main\n}}\n");
    }
    for u in 0..users {
        let _ = write!(
            s,
            "\nsecret \"r{r}_u{u}\" {{\n  generate {{\n    length = 24\n  }}\n}}\n\nuser \"r{r}_u{u}\" {{\n  server    = server.main\n  password  = secret.r{r}_u{u}\n  member_of = [role.staff{r}]\n  grant {{\n    database   = database.r{r}_d{}\n    privileges = [\"CONNECT\"]\n  }}\n}}\n",
            u % dbs
        );
    }
    let _ = write!(
        s,
        "\nsecret \"r{r}_svc\" {{\n}}\n\nuser \"r{r}_svc\" {{\n  server   = server.main\n  password = secret.r{r}_svc\n}}\n\nrouter \"svc{r}\" {{\n  user = user.r{r}_svc\n  route \"app\" {{\n    database = database.r{r}_d0\n  }}\n}}\n"
    );
    s
}

/// An apply whose output is read line by line as it runs.
struct Running {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl Running {
    fn start(p: &Project) -> Running {
        let mut child = spawn(p, &["apply", "--auto-approve"]);
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
            s
        });
        Running { child, lines, seen: Vec::new(), stderr }
    }

    /// Wait for the first progress line that `pick` accepts; false if the apply ended first.
    fn until(&mut self, mut pick: impl FnMut(&str) -> bool) -> bool {
        while let Ok(l) = self.lines.recv_timeout(std::time::Duration::from_secs(120)) {
            self.seen.push(l.clone());
            if l.starts_with('[') && pick(&l) {
                return true;
            }
        }
        false
    }

    fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    fn wait(mut self) -> (Option<i32>, String) {
        let status = self.child.wait().unwrap();
        while let Ok(l) = self.lines.recv_timeout(std::time::Duration::from_secs(5)) {
            self.seen.push(l);
        }
        let err = self.stderr.join().unwrap();
        (status.code(), format!("{}\n{err}", self.seen.join("\n")))
    }
}

/// The step the last progress line started: where the kill landed.
fn run_point(out: &str) -> usize {
    out.lines().filter(|l| l.starts_with('[')).last().and_then(|l| l[1..].split('/').next()?.parse().ok()).unwrap_or(0)
}

/// Kills spread over the whole apply: SIGKILL at a random step, SIGKILL while
/// `CREATE DATABASE` is in flight, Ctrl-C (SIGINT), SIGTERM, and a double
/// Ctrl-C. After each, a plain `apply --auto-approve` must succeed (no
/// `import`, no `force-unlock`) and leave nothing to do.
#[test]
fn an_apply_killed_at_random_points_always_converges() {
    let (dbs, users) = (4, 16);
    let p = Project::new(SERVER);
    p.ok(&["dev", "up"], 0);
    bystander(&p);
    let mut rng = StdRng::seed_from_u64(11);
    let kinds = ["kill", "kill-create-db", "int", "kill", "term", "kill-create-db", "int", "int-int"];
    let rounds = 20;
    let mut landed = std::collections::BTreeMap::<&str, usize>::new();
    let mut failed_reruns = Vec::new();
    let mut points = Vec::new();
    for r in 0..rounds {
        p.write(&round_config(r, dbs, users));
        let kind = kinds[r % kinds.len()];
        let mut run = Running::start(&p);
        // Steps in this apply: learned from the first progress line, "[1/N] ...".
        let mut total = 0usize;
        let mut k = 0usize;
        let mut creates_seen = 0;
        let nth_create = rng.random_range(1..=dbs);
        let in_flight = run.until(|l| {
            let n: usize = l[1..].split('/').next().and_then(|x| x.parse().ok()).unwrap_or(0);
            if total == 0 {
                total = l.split('/').nth(1).and_then(|x| x.split(']').next()?.parse().ok()).unwrap_or(1);
                k = rng.random_range(1..=total);
            }
            if kind == "kill-create-db" {
                creates_seen += usize::from(l.contains("CREATE DATABASE"));
                creates_seen == nth_create && l.contains("CREATE DATABASE")
            } else {
                n >= k
            }
        });
        if !in_flight {
            panic!("round {r}: the apply ended before the kill point:\n{}", run.wait().1);
        }
        match kind {
            "kill" | "kill-create-db" => run.signal(libc::SIGKILL),
            "int" => run.signal(libc::SIGINT),
            "term" => run.signal(libc::SIGTERM),
            _ => {
                run.signal(libc::SIGINT);
                std::thread::sleep(std::time::Duration::from_millis(5));
                run.signal(libc::SIGINT);
            }
        }
        let (code, out) = run.wait();
        match kind {
            "int" | "term" => {
                // Unless the apply finished just as the signal came, it stopped cleanly and said so.
                if code != Some(0) {
                    assert_eq!(code, Some(1), "round {r} ({kind}):\n{out}");
                    assert!(out.contains("Apply interrupted."), "round {r} ({kind}):\n{out}");
                    assert!(out.contains("not started ("), "round {r} ({kind}):\n{out}");
                }
            }
            "int-int" => assert!(matches!(code, Some(0) | Some(1) | Some(130)), "round {r}: {code:?}\n{out}"),
            _ => assert_eq!(code, None, "round {r}: killed by a signal"),
        }
        *landed.entry(kind).or_default() += 1;
        points.push(format!("{}/{total}", run_point(&out)));
        // A plain apply goes on from wherever the kill left it.
        let rerun = p.dbctl(&["apply", "--auto-approve"]);
        if rerun.status.code() != Some(0) {
            failed_reruns.push(format!(
                "round {r} ({kind}, step {k} of {total}):\n{}{}",
                common::text(&rerun.stdout),
                common::text(&rerun.stderr)
            ));
            continue;
        }
        p.converged();
    }
    eprintln!(
        "kills: {rounds}, by kind {landed:?}; at steps {}; reruns: {rounds}; failed reruns: {}",
        points.join(" "),
        failed_reruns.len()
    );
    assert!(failed_reruns.is_empty(), "{} rerun(s) failed:\n{}", failed_reruns.len(), failed_reruns.join("\n\n"));
    // Only the last round's objects are left, and nothing unmanaged was touched.
    assert_eq!(
        p.sql("postgres", "SELECT count(*) FROM pg_roles WHERE rolname ~ '^r[0-9]+_u[0-9]+$'"),
        users.to_string()
    );
    assert_eq!(
        p.sql("postgres", "SELECT count(*) FROM pg_database WHERE datname ~ '^r[0-9]+_d[0-9]+$'"),
        dbs.to_string()
    );
    bystander_untouched(&p);
}

/// The fault test's configuration shape at scale: the state survives kills
/// that land while thousands of steps are recorded.
#[test]
fn a_large_apply_killed_mid_way_converges() {
    let p = Project::new(SERVER);
    p.ok(&["dev", "up"], 0);
    bystander(&p);
    p.write(&big_config(1200, 8));
    let mut rng = StdRng::seed_from_u64(9);
    for _ in 0..3 {
        let mut run = Running::start(&p);
        let k = rng.random_range(20..2000);
        let mut n = 0;
        let in_flight = run.until(|_| {
            n += 1;
            n >= k
        });
        run.signal(libc::SIGKILL);
        let _ = run.wait();
        assert!(in_flight || n > 0);
        // What was done is recorded; the state always loads.
        p.ok(&["state", "list"], 0);
    }
    p.apply();
    p.converged();
    assert_eq!(p.sql("postgres", "SELECT count(*) FROM pg_roles WHERE rolname ~ '^u[0-9]+$'"), "1200");
    // The server (made by `dev up`, recorded by the apply), the role, 8 databases, 1,200 users and their grants.
    assert_eq!(p.ok(&["state", "list"], 0).lines().count(), 1 + 1 + 8 + 1200 * 2);
    bystander_untouched(&p);
}

#[test]
fn a_server_lost_mid_apply_is_a_clear_error_and_the_rerun_converges() {
    let p = Project::new(SERVER);
    p.ok(&["dev", "up"], 0);
    bystander(&p);
    p.write(&big_config(1200, 4));
    // The server goes away early in the apply (its 20th step), whatever the machine's speed.
    let mut run = Running::start(&p);
    assert!(run.until(|l| l.starts_with("[20/")), "the apply ran no step");
    p.ok(&["dev", "down"], 0);
    let (code, text) = run.wait();
    assert_eq!(code, Some(1), "{text}");
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
    // Killed once it is running steps: it holds the lock by then, however loaded the machine.
    let mut run = Running::start(&p);
    assert!(run.until(|l| l.starts_with("[2/")), "the apply ran no step");
    let pid = run.child.id();
    run.signal(libc::SIGKILL);
    let _ = run.wait();
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
