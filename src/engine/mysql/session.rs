//! Running a plan's statements on one MySQL/MariaDB server: one connection,
//! under the step time limits; a statement that waits says on what.

use sqlx::{Connection, MySqlConnection};

use crate::engine::endpoint::Endpoint;
use crate::engine::{BoxFut, EngineError, EngineSession};
use crate::migrate::MigrationStep;

pub struct MySession {
    server: String,
    url: String,
    /// The connection and its CONNECTION_ID().
    conn: Option<(MySqlConnection, u64)>,
}

impl MySession {
    pub fn new(ep: &Endpoint) -> MySession {
        MySession { server: ep.address.to_string(), url: ep.url.clone(), conn: None }
    }

    async fn conn(&mut self) -> Result<&mut (MySqlConnection, u64), EngineError> {
        if self.conn.is_none() {
            let mut c = super::connect(&self.server, &self.url).await?;
            let id = super::limit(&mut c).await?;
            self.conn = Some((c, id));
        }
        Ok(self.conn.as_mut().expect("connected"))
    }

    async fn run(&mut self, address: &str, sql: String) -> Result<(), EngineError> {
        let (server, url) = (self.server.clone(), self.url.clone());
        let (conn, id) = self.conn().await?;
        super::execute_step(&server, &url, address, *id, conn, sql).await
    }
}

impl EngineSession for MySession {
    fn execute<'a>(
        &'a mut self,
        address: &'a str,
        _database: Option<&'a str>,
        sql: String,
    ) -> BoxFut<'a, Result<(), EngineError>> {
        Box::pin(self.run(address, sql))
    }

    fn execute_secret<'a>(&'a mut self, address: &'a str, sql: String) -> BoxFut<'a, Result<(), EngineError>> {
        // The server's reason is kept unless it quotes the statement.
        Box::pin(async move {
            self.run(address, sql).await.map_err(|e| EngineError::Query(super::password_error(address, &e.to_string())))
        })
    }

    fn drop_database<'a>(
        &'a mut self,
        address: &'a str,
        _name: &'a str,
        _force: bool,
        sql: String,
    ) -> BoxFut<'a, Result<(), EngineError>> {
        Box::pin(self.run(address, sql))
    }

    fn migrate<'a>(&'a mut self, database: &'a str, m: &'a MigrationStep) -> BoxFut<'a, Result<(), EngineError>> {
        Box::pin(async move {
            let (conn, _) = self.conn().await?;
            super::migrate::run(conn, database, m).await.map_err(EngineError::Migration)
        })
    }

    fn close(self: Box<Self>) -> BoxFut<'static, ()> {
        Box::pin(async move {
            if let Some((c, _)) = self.conn {
                let _ = c.close().await;
            }
        })
    }
}
