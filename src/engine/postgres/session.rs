//! Running a plan's statements on one PostgreSQL server: a connection to
//! the admin database and at most one other, each under the step time
//! limits; a statement that waits says on what.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnection;
use sqlx::Connection;

use crate::engine::endpoint::Endpoint;
use crate::engine::{limits, BoxFut, EngineError, EngineSession};
use crate::migrate::MigrationStep;

pub struct PgSession {
    server: String,
    url: String,
    /// Per database (`None`: the admin database): the connection and its backend pid.
    conns: HashMap<Option<String>, (PgConnection, i32)>,
}

impl PgSession {
    pub fn new(ep: &Endpoint) -> PgSession {
        PgSession { server: ep.address.to_string(), url: ep.url.clone(), conns: HashMap::new() }
    }

    async fn close_others(&mut self, keep: &Option<String>) {
        let others: Vec<Option<String>> = self.conns.keys().filter(|k| k.is_some() && *k != keep).cloned().collect();
        for k in others {
            if let Some((c, _)) = self.conns.remove(&k) {
                let _ = c.close().await;
            }
        }
    }

    async fn conn(&mut self, database: Option<&str>) -> Result<(&mut PgConnection, i32), EngineError> {
        let key = database.map(str::to_string);
        if !self.conns.contains_key(&key) {
            // Keep the admin connection and one other: a queue that walks
            // hundreds of databases must not hold a connection to each.
            self.close_others(&None).await;
            let mut c = super::connect(&self.server, &self.url, database).await?;
            let pid = limits::pg_limit(&mut c).await.map_err(|e| EngineError::Query(super::server_message(&e)))?;
            self.conns.insert(key.clone(), (c, pid));
        }
        let (c, pid) = self.conns.get_mut(&key).expect("just inserted");
        Ok((c, *pid))
    }

    /// Run `sql`, watched: a step that waits says on what, and one that
    /// gives up says who held it up.
    async fn run(&mut self, address: &str, database: Option<&str>, sql: String) -> Result<(), EngineError> {
        let (server, url) = (self.server.clone(), self.url.clone());
        let (conn, pid) = self.conn(database).await?;
        let run = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(conn);
        let (r, blockers) = limits::pg_watched(&server, &url, address, pid, run).await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if limits::pg_timed_out(&e) => Err(EngineError::TimedOut(limits::timed_out_message(&blockers))),
            Err(e) => Err(EngineError::Query(super::server_message(&e))),
        }
    }
}

impl EngineSession for PgSession {
    fn execute<'a>(
        &'a mut self,
        address: &'a str,
        database: Option<&'a str>,
        sql: String,
    ) -> BoxFut<'a, Result<(), EngineError>> {
        Box::pin(async move {
            if database.is_none() && sql.starts_with("ALTER DATABASE ") && sql.contains(" RENAME TO ") {
                // A database being renamed must have no session: dbctl's own from
                // the steps before (REASSIGN OWNED, grants) goes first.
                self.close_others(&None).await;
            }
            self.run(address, database, sql).await
        })
    }

    fn execute_secret<'a>(&'a mut self, address: &'a str, sql: String) -> BoxFut<'a, Result<(), EngineError>> {
        // PostgreSQL's messages do not quote the statement: the server's
        // reason (say, a password-check hook's) is kept.
        Box::pin(self.run(address, None, sql))
    }

    fn drop_database<'a>(
        &'a mut self,
        address: &'a str,
        name: &'a str,
        force: bool,
        sql: String,
    ) -> BoxFut<'a, Result<(), EngineError>> {
        Box::pin(async move {
            // dbctl's own connection to it (from earlier steps) is not an open connection to refuse on.
            if let Some((own, _)) = self.conns.remove(&Some(name.to_string())) {
                let _ = own.close().await;
            }
            if !force {
                let (conn, _) = self.conn(None).await?;
                // A connection that just closed (dbctl's own, or a client's) leaves the
                // server a moment later: wait as PostgreSQL's own DROP DATABASE does.
                let mut open = super::open_connections(conn, name).await?;
                let since = Instant::now();
                while open > 0 && since.elapsed() < Duration::from_secs(5) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    open = super::open_connections(conn, name).await?;
                }
                if open > 0 {
                    return Err(EngineError::Refused(format!(
                        "database \"{name}\" has {open} open connection(s); close them, or run again with --force"
                    )));
                }
            }
            self.run(address, None, sql).await
        })
    }

    fn migrate<'a>(&'a mut self, database: &'a str, m: &'a MigrationStep) -> BoxFut<'a, Result<(), EngineError>> {
        Box::pin(async move {
            let (conn, _) = self.conn(Some(database)).await?;
            super::migrate::run(conn, m).await.map_err(EngineError::Migration)
        })
    }

    fn close(self: Box<Self>) -> BoxFut<'static, ()> {
        Box::pin(async move {
            for (_, (c, _)) in self.conns {
                let _ = c.close().await;
            }
        })
    }
}
