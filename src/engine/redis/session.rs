//! Running a plan's statements on one Redis server: one connection; a
//! statement may be several command lines (dropping a namespace).

use redis::aio::MultiplexedConnection;

use crate::engine::endpoint::Endpoint;
use crate::engine::{BoxFut, EngineError, EngineSession};
use crate::migrate::MigrationStep;

pub struct RedisSession {
    server: String,
    url: String,
    conn: Option<MultiplexedConnection>,
}

impl RedisSession {
    pub fn new(ep: &Endpoint) -> RedisSession {
        RedisSession { server: ep.address.to_string(), url: ep.url.clone(), conn: None }
    }

    async fn run(&mut self, sql: &str) -> Result<(), EngineError> {
        if self.conn.is_none() {
            self.conn = Some(super::connect(&self.server, &self.url).await?);
        }
        let conn = self.conn.as_mut().expect("connected");
        for line in sql.lines().filter(|l| !l.trim().is_empty()) {
            super::run_on(conn, line, None).await?;
        }
        Ok(())
    }
}

impl EngineSession for RedisSession {
    fn execute<'a>(
        &'a mut self,
        _address: &'a str,
        _database: Option<&'a str>,
        sql: String,
    ) -> BoxFut<'a, Result<(), EngineError>> {
        Box::pin(async move { self.run(&sql).await })
    }

    fn execute_secret<'a>(&'a mut self, _address: &'a str, sql: String) -> BoxFut<'a, Result<(), EngineError>> {
        // run_on scrubs a password hash from the server's messages.
        Box::pin(async move { self.run(&sql).await })
    }

    fn drop_database<'a>(
        &'a mut self,
        _address: &'a str,
        _name: &'a str,
        _force: bool,
        sql: String,
    ) -> BoxFut<'a, Result<(), EngineError>> {
        // Clients of a namespace are not its connections: Redis has one keyspace.
        Box::pin(async move { self.run(&sql).await })
    }

    fn migrate<'a>(&'a mut self, database: &'a str, _m: &'a MigrationStep) -> BoxFut<'a, Result<(), EngineError>> {
        Box::pin(async move { Err(EngineError::Refused(format!("Redis has no migrations (database \"{database}\")"))) })
    }

    fn close(self: Box<Self>) -> BoxFut<'static, ()> {
        Box::pin(async {})
    }
}
