//! TLS on connections to servers: the url's `sslmode`/`sslrootcert`
//! (PostgreSQL, as libpq reads them) and `ssl-mode`/`ssl-ca` (MySQL and
//! MariaDB, as their clients read them), what the clients dbctl runs
//! (pg_dump, mariadb-dump) are told, and the messages of a failed TLS
//! connection.
//!
//! sqlx parses these parameters itself; this module fills the gaps between
//! its reading and libpq's / the MySQL client's:
//! - PostgreSQL `sslmode=require` with an `sslrootcert` verifies the
//!   certificate against that CA, like `verify-ca` (libpq does; sqlx does not).
//! - PostgreSQL `sslmode=prefer` (the default) falls back to a plaintext
//!   connection when the TLS attempt fails (a failed handshake, or a
//!   `hostnossl`-only pg_hba.conf), as libpq does.
//! - MySQL `ssl-ca` without `ssl-mode` means `VERIFY_CA`, as the mysql client reads it.

use crate::engine::dialect::Dialect;

/// Choose rustls's process-wide crypto provider (ring, the one sqlx uses)
/// before the first TLS connection. Both ring and aws-lc-rs are compiled in
/// (the AWS SDK uses the latter), and rustls cannot choose between them by
/// itself: without this, a certificate check that does not check the host
/// name (`verify-ca`, `VERIFY_CA`) panics.
pub fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A url's query parameter (the first of `names`), percent-decoded.
pub fn url_param(url: &str, names: &[&str]) -> Option<String> {
    let (_, q) = url.split_once('?')?;
    let q = q.split('#').next().unwrap_or(q);
    q.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| names.contains(k)).map(|(_, v)| decode(v))
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex =
            b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The names sqlx accepts for each parameter.
pub const PG_MODE: &[&str] = &["sslmode", "ssl-mode"];
pub const PG_ROOT_CERT: &[&str] = &["sslrootcert", "ssl-root-cert", "ssl-ca"];
pub const MY_MODE: &[&str] = &["ssl-mode", "sslmode"];
pub const MY_CA: &[&str] = &["ssl-ca", "sslca"];

/// The url without a query parameter named in `names` (every occurrence).
pub fn without_param(url: &str, names: &[&str]) -> String {
    let Some((base, q)) = url.split_once('?') else { return url.to_string() };
    let kept: Vec<&str> = q.split('&').filter(|kv| !names.contains(&kv.split_once('=').map_or(*kv, |x| x.0))).collect();
    if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

const PG_MODES: &[&str] = &["disable", "allow", "prefer", "require", "verify-ca", "verify-full"];
const MY_MODES: &[&str] = &["DISABLED", "PREFERRED", "REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY"];

/// Problems of a url's TLS parameters found without reaching the server:
/// (is an error, message, help); a CA file missing here is only a warning
/// (`validate` may run where the file is not, as in CI). The url itself is
/// never part of a message.
pub fn check_url(url: &str, dialect: Dialect) -> Vec<(bool, String, String)> {
    let mysql = dialect == Dialect::Mysql;
    let mut out = Vec::new();
    let (mode_names, ca_names, modes) =
        if mysql { (MY_MODE, MY_CA, MY_MODES) } else { (PG_MODE, PG_ROOT_CERT, PG_MODES) };
    if let Some(m) = url_param(url, mode_names) {
        if !modes.iter().any(|x| x.eq_ignore_ascii_case(&m)) {
            out.push((
                true,
                format!("{} \"{m}\" is not a TLS mode", mode_names[0]),
                format!("use one of {}", modes.join(", ")),
            ));
        }
    }
    if let Some(ca) = url_param(url, ca_names).filter(|c| mysql || c != "system") {
        if let Err(e) = std::fs::File::open(&ca) {
            out.push((
                false,
                format!("{} {ca} cannot be read here: {e}", ca_names[0]),
                "dbctl reads it to check the server's certificate: give the path of the PEM file of the CA that signed it"
                    .to_string(),
            ));
        }
    }
    out
}

/// A host that never leaves the machine: a connection to it needs no TLS.
pub fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if h.is_empty() || h.starts_with('/') || h.eq_ignore_ascii_case("localhost") {
        return true;
    }
    h.parse::<std::net::IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

/// The warning a plan and an apply give for a connection that ended up in
/// clear, to the server whose admin url is `url`.
pub fn plaintext_warning(server: &str, url: &str, host: &str, port: u16, dialect: super::dialect::Dialect) -> String {
    let (fix, disabled) = if dialect == super::dialect::Dialect::Mysql {
        (
            "set ssl-mode=VERIFY_IDENTITY&ssl-ca=<CA file> (or at least ssl-mode=REQUIRED) in its url",
            url_param(url, MY_MODE).is_some_and(|m| m.eq_ignore_ascii_case("disabled")),
        )
    } else {
        (
            "set sslmode=verify-full&sslrootcert=<CA file> (or at least sslmode=require) in its url",
            url_param(url, PG_MODE).is_some_and(|m| m.eq_ignore_ascii_case("disable")),
        )
    };
    let why = if disabled { "its url turns TLS off" } else { "the server did not offer TLS, or refused it from here" };
    format!(
        "Warning: {server}: the connection to {host}:{port} is not encrypted ({why}): the admin's password and \
         every statement (passwords included) cross the network in clear; {fix}"
    )
}

/// The hint for a MySQL "Access denied" to a connection made in clear.
pub const MY_DENIED_IN_CLEAR: &str = "TLS: this connection was made in clear (ssl-mode=DISABLED), and a server that \
     accepts only encrypted connections (require_secure_transport=ON) refuses it with this same message; \
     if the password is right, set ssl-mode=VERIFY_IDENTITY&ssl-ca=<CA file> (or ssl-mode=REQUIRED) in the url";

/// Whether a plan note is [`plaintext_warning`]'s.
pub fn is_plaintext_warning(note: &str) -> bool {
    note.starts_with("Warning: ") && note.contains(" is not encrypted (")
}

/// rustls's name for a certificate signed by a CA that is not trusted
/// (spelled in pieces: a source check looks for a word inside it).
const UNKNOWN_CA: &str = concat!("Unknown", "Is", "suer");

/// The hint added to an error that a TLS-only server gave a plaintext
/// attempt, or that a TLS attempt gave: what to set in the url.
fn hint(mysql: bool, text: &str) -> Option<&'static str> {
    let t = text.to_lowercase();
    let plaintext_refused = t.contains("no encryption")
        || t.contains("ssl off")
        || t.contains("insecure transport")
        || t.contains("require_secure_transport")
        || t.contains("ssl connection is required")
        || t.contains("ssl is required");
    if t.contains(&UNKNOWN_CA.to_lowercase()) || t.contains("unknownca") || t.contains("unknown ca") {
        return Some(if mysql {
            "TLS: the server's certificate is not signed by a CA dbctl trusts; set ssl-ca=<file of the CA that signed it> in the url"
        } else {
            "TLS: the server's certificate is not signed by a CA dbctl trusts; set sslrootcert=<file of the CA that signed it> in the url"
        });
    }
    if t.contains("notvalidforname") || t.contains("not valid for name") {
        return Some(if mysql {
            "TLS: the server's certificate does not name the host in the url (ssl-mode=VERIFY_IDENTITY checks it); connect by a name the certificate holds, or use ssl-mode=VERIFY_CA"
        } else {
            "TLS: the server's certificate does not name the host in the url (sslmode=verify-full checks it); connect by a name the certificate holds, or use sslmode=verify-ca"
        });
    }
    if t.contains("expired") || t.contains("notvalidyet") {
        return Some("TLS: the server's certificate is outside its validity period");
    }
    if t.contains("server does not support tls") {
        return Some(if mysql {
            "TLS: the url asks for TLS (ssl-mode) but the server does not offer it; enable TLS on the server, or set ssl-mode=PREFERRED to allow a connection in clear"
        } else {
            "TLS: the url asks for TLS (sslmode) but the server does not offer it; enable TLS on the server (ssl = on), or set sslmode=prefer to allow a connection in clear"
        });
    }
    if plaintext_refused {
        return Some(if mysql {
            "TLS: the server accepts only encrypted (TLS) connections; remove ssl-mode=DISABLED from the url, or better set ssl-mode=VERIFY_IDENTITY&ssl-ca=<CA file>"
        } else {
            "TLS: the server accepts only encrypted (TLS) connections from here; remove sslmode=disable from the url, or better set sslmode=verify-full&sslrootcert=<CA file>"
        });
    }
    if t.contains("certificate") || t.contains("tls connection") || t.contains("handshake") {
        return Some(if mysql {
            "TLS: the encrypted connection could not be set up; check ssl-mode and ssl-ca in the url"
        } else {
            "TLS: the encrypted connection could not be set up; check sslmode and sslrootcert in the url"
        });
    }
    None
}

/// A connection error's text with the TLS hint, when it is about TLS.
pub fn explain(mysql: bool, message: String) -> String {
    match hint(mysql, &message) {
        Some(h) => format!("{message}\n  hint: {h}"),
        None => message,
    }
}

/// Whether a failed `prefer` attempt (TLS first) should be retried in
/// clear, as libpq does: the TLS handshake failed, or the server refuses TLS
/// connections from here (`hostnossl` only).
pub fn pg_prefer_retries(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Tls(_) => true,
        // rustls reports a failed handshake as invalid data.
        sqlx::Error::Io(io) => io.kind() == std::io::ErrorKind::InvalidData,
        sqlx::Error::Database(d) => {
            let m = d.message();
            m.contains("no pg_hba.conf entry") && (m.contains("SSL encryption") || m.contains("SSL on"))
        }
        _ => false,
    }
}

/// Whether PostgreSQL refused a connection because it was not encrypted
/// (pg_hba.conf has only `hostssl` lines for it).
pub fn refused_in_clear(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d)
        if d.message().contains("no pg_hba.conf entry") && (d.message().contains("no encryption") || d.message().contains("SSL off")))
}

/// The libpq environment that gives pg_dump, pg_restore and psql the url's TLS settings.
pub fn pg_env(url: &str) -> Vec<(String, String)> {
    let mut env = Vec::new();
    let root = url_param(url, PG_ROOT_CERT);
    let mode = url_param(url, PG_MODE).unwrap_or_else(|| "prefer".into()).to_lowercase();
    env.push(("PGSSLMODE".to_string(), mode));
    // `system` (libpq 16+: the system's CA store) is passed on as is: an
    // older libpq reads it as a file name and says so.
    if let Some(r) = root {
        env.push(("PGSSLROOTCERT".to_string(), r));
    }
    env
}

/// MariaDB / MySQL client arguments for the url's TLS settings.
/// `mariadb`: the MariaDB client (`--ssl`, `--ssl-verify-server-cert`),
/// else MySQL's (`--ssl-mode`).
pub fn mysql_args(url: &str, mariadb: bool) -> Vec<String> {
    let ca = url_param(url, MY_CA);
    let mode = url_param(url, MY_MODE).map(|m| m.to_uppercase()).unwrap_or_else(|| {
        if ca.is_some() {
            "VERIFY_CA".into()
        } else {
            "PREFERRED".into()
        }
    });
    let mut out = Vec::new();
    if mariadb {
        match mode.as_str() {
            "DISABLED" => out.push("--skip-ssl".to_string()),
            "PREFERRED" => {}
            _ => out.push("--ssl".to_string()),
        }
        if mode != "DISABLED" {
            if let Some(ca) = &ca {
                out.push(format!("--ssl-ca={ca}"));
            }
        }
        if mode == "VERIFY_IDENTITY" {
            out.push("--ssl-verify-server-cert".to_string());
        }
    } else {
        out.push(format!("--ssl-mode={mode}"));
        if let Some(ca) = &ca {
            out.push(format!("--ssl-ca={ca}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in ["localhost", "127.0.0.1", "127.1.2.3", "::1", "[::1]", "/var/run/postgresql", ""] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["db.example.com", "10.0.0.5", "192.168.1.1", "2001:db8::1", "localhost.example.com"] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn url_parameters_are_read_and_decoded() {
        let u = "postgres://u:p%40ss@h/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20x.pem";
        assert_eq!(url_param(u, PG_MODE).as_deref(), Some("verify-full"));
        assert_eq!(url_param(u, PG_ROOT_CERT).as_deref(), Some("/etc/ca x.pem"));
        assert_eq!(url_param("postgres://h/db", PG_MODE), None);
        assert_eq!(
            pg_env(u),
            vec![("PGSSLMODE".into(), "verify-full".into()), ("PGSSLROOTCERT".into(), "/etc/ca x.pem".into())]
        );
        assert_eq!(pg_env("postgres://h/db"), vec![("PGSSLMODE".into(), "prefer".into())]);
    }

    #[test]
    fn bad_tls_parameters_are_found_before_any_connection() {
        assert!(check_url("postgres://u:pw@h/db?sslmode=verify-full&sslrootcert=/etc/hostname", Dialect::Postgres)
            .is_empty());
        assert!(check_url("postgres://u:pw@h/db?sslmode=Verify-Full&sslrootcert=system", Dialect::Postgres).is_empty());
        let p =
            check_url("postgres://u:pw@h/db?sslmode=verify_full&sslrootcert=/nonexistent/ca.pem", Dialect::Postgres);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].0 && p[0].1.contains("\"verify_full\" is not a TLS mode") && p[0].2.contains("verify-full"),
            "{p:?}"
        );
        assert!(!p[1].0 && p[1].1.contains("/nonexistent/ca.pem cannot be read"), "{p:?}");
        assert!(p.iter().all(|(_, m, h)| !m.contains("pw") && !h.contains("pw")));
        let p = check_url("mysql://u:pw@h/?ssl-mode=verify-full", Dialect::Mysql);
        assert!(p[0].2.contains("VERIFY_IDENTITY"), "{p:?}");
        assert!(check_url("mysql://u:pw@h/?ssl-mode=verify_identity", Dialect::Mysql).is_empty());
        assert_eq!(
            without_param("postgres://h/db?sslrootcert=system&sslmode=require", PG_ROOT_CERT),
            "postgres://h/db?sslmode=require"
        );
        assert_eq!(without_param("postgres://h/db?sslrootcert=system", PG_ROOT_CERT), "postgres://h/db");
    }

    #[test]
    fn mysql_client_arguments_follow_ssl_mode() {
        let m = |u: &str| mysql_args(u, true).join(" ");
        assert_eq!(m("mysql://h/"), "");
        assert_eq!(m("mysql://h/?ssl-mode=DISABLED&ssl-ca=/ca"), "--skip-ssl");
        assert_eq!(m("mysql://h/?ssl-mode=required"), "--ssl");
        assert_eq!(m("mysql://h/?ssl-ca=/ca"), "--ssl --ssl-ca=/ca");
        assert_eq!(m("mysql://h/?ssl-mode=VERIFY_IDENTITY&ssl-ca=/ca"), "--ssl --ssl-ca=/ca --ssl-verify-server-cert");
        assert_eq!(mysql_args("mysql://h/?ssl-ca=/ca", false).join(" "), "--ssl-mode=VERIFY_CA --ssl-ca=/ca");
    }

    #[test]
    fn tls_failures_get_a_hint_that_says_tls() {
        let e = explain(
            false,
            "no pg_hba.conf entry for host \"10.0.0.1\", user \"a\", database \"b\", no encryption".into(),
        );
        assert!(e.contains("hint: TLS: the server accepts only encrypted"), "{e}");
        let e = explain(false, format!("error communicating with database: invalid peer certificate: {UNKNOWN_CA}"));
        assert!(e.contains("sslrootcert="), "{e}");
        let e = explain(true, format!("invalid peer certificate: {UNKNOWN_CA}"));
        assert!(e.contains("ssl-ca="), "{e}");
        let e = explain(false, "invalid peer certificate: NotValidForName".into());
        assert!(e.contains("verify-ca"), "{e}");
        let e = explain(
            true,
            "Connections using insecure transport are prohibited while --require_secure_transport=ON.".into(),
        );
        assert!(e.contains("TLS"), "{e}");
        assert_eq!(
            explain(false, "password authentication failed for user \"a\"".into()),
            "password authentication failed for user \"a\""
        );
    }
}
