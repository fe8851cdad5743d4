//! The engines dbctl knows, by kind: the one `match` on the engine kind
//! that picks an implementation.

use super::dialect::Dialect;
use super::endpoint::Endpoint;
use super::{mysql, postgres, redis, BoxFut, DetailScope, Engine, EngineError, EngineSession, LiveServer};
use crate::migrate::Applied;
use crate::model::EngineKind as Kind;

/// The engine that serves servers of `kind`.
pub fn of(kind: Kind) -> &'static dyn Engine {
    match kind {
        Kind::Postgres => &Postgres,
        Kind::Mysql => &Mysql,
        Kind::Redis => &Redis,
    }
}

struct Postgres;

impl Engine for Postgres {
    fn kind(&self) -> Kind {
        Kind::Postgres
    }

    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn read<'a>(&'a self, ep: &'a Endpoint, scope: &'a DetailScope) -> BoxFut<'a, Result<LiveServer, EngineError>> {
        Box::pin(async move { postgres::read(&ep.address.to_string(), &ep.url, scope).await })
    }

    fn read_inside<'a>(
        &'a self,
        ep: &'a Endpoint,
        live: &'a mut LiveServer,
        scope: &'a DetailScope,
    ) -> BoxFut<'a, Result<(), EngineError>> {
        Box::pin(async move { postgres::read_inside(&ep.address.to_string(), &ep.url, live, scope).await })
    }

    fn count_tables<'a>(&'a self, ep: &'a Endpoint, database: &'a str) -> BoxFut<'a, Result<u64, EngineError>> {
        Box::pin(async move { postgres::count_tables(&ep.address.to_string(), &ep.url, database).await })
    }

    fn applied_migrations<'a>(
        &'a self,
        ep: &'a Endpoint,
        database: &'a str,
    ) -> BoxFut<'a, Result<Vec<Applied>, String>> {
        Box::pin(async move {
            let mut c =
                postgres::connect(&ep.address.to_string(), &ep.url, Some(database)).await.map_err(|e| e.to_string())?;
            let r = postgres::migrate::applied(&mut c).await;
            let _ = sqlx::Connection::close(c).await;
            r
        })
    }

    fn session(&self, ep: &Endpoint) -> Box<dyn EngineSession> {
        Box::new(postgres::session::PgSession::new(ep))
    }

    fn dial_host_port(&self, url: &str) -> (String, u16) {
        match postgres::options(url, None) {
            Ok(o) => (o.get_host().to_string(), o.get_port()),
            Err(_) => (String::new(), 5432),
        }
    }

    fn settle<'a>(&'a self, ep: &'a Endpoint, limit: std::time::Duration) -> BoxFut<'a, Option<u64>> {
        Box::pin(async move {
            let mut conn = postgres::connect(&ep.address.to_string(), &ep.url, None).await.ok()?;
            let n = postgres::wait_for_creates(&mut conn, limit).await.ok();
            let _ = sqlx::Connection::close(conn).await;
            n.filter(|n| *n > 0).map(|n| n as u64)
        })
    }
}

struct Mysql;

impl Engine for Mysql {
    fn kind(&self) -> Kind {
        Kind::Mysql
    }

    fn dialect(&self) -> Dialect {
        Dialect::Mysql
    }

    fn read<'a>(&'a self, ep: &'a Endpoint, _scope: &'a DetailScope) -> BoxFut<'a, Result<LiveServer, EngineError>> {
        Box::pin(async move { mysql::read(&ep.address.to_string(), &ep.url, &ep.user_hosts).await })
    }

    fn count_tables<'a>(&'a self, ep: &'a Endpoint, database: &'a str) -> BoxFut<'a, Result<u64, EngineError>> {
        Box::pin(async move { mysql::count_tables(&ep.address.to_string(), &ep.url, database).await })
    }

    fn applied_migrations<'a>(
        &'a self,
        ep: &'a Endpoint,
        database: &'a str,
    ) -> BoxFut<'a, Result<Vec<Applied>, String>> {
        Box::pin(async move {
            let mut c = mysql::connect(&ep.address.to_string(), &ep.url).await.map_err(|e| e.to_string())?;
            let r = mysql::migrate::applied(&mut c, database).await;
            let _ = sqlx::Connection::close(c).await;
            r
        })
    }

    fn session(&self, ep: &Endpoint) -> Box<dyn EngineSession> {
        Box::new(mysql::session::MySession::new(ep))
    }

    fn dial_host_port(&self, url: &str) -> (String, u16) {
        use std::str::FromStr;
        match sqlx::mysql::MySqlConnectOptions::from_str(url) {
            Ok(o) => (o.get_host().to_string(), o.get_port()),
            Err(_) => (String::new(), 3306),
        }
    }
}

struct Redis;

impl Engine for Redis {
    fn kind(&self) -> Kind {
        Kind::Redis
    }

    fn dialect(&self) -> Dialect {
        Dialect::Redis
    }

    fn read<'a>(&'a self, ep: &'a Endpoint, _scope: &'a DetailScope) -> BoxFut<'a, Result<LiveServer, EngineError>> {
        Box::pin(async move { redis::read(&ep.address.to_string(), &ep.url).await })
    }

    fn count_tables<'a>(&'a self, ep: &'a Endpoint, database: &'a str) -> BoxFut<'a, Result<u64, EngineError>> {
        // A namespace's keys are what dropping it loses.
        Box::pin(async move { redis::count_keys(&ep.address.to_string(), &ep.url, database).await })
    }

    fn applied_migrations<'a>(
        &'a self,
        _ep: &'a Endpoint,
        _database: &'a str,
    ) -> BoxFut<'a, Result<Vec<Applied>, String>> {
        Box::pin(async { Err("Redis has no migrations".to_string()) })
    }

    fn session(&self, ep: &Endpoint) -> Box<dyn EngineSession> {
        Box::new(redis::session::RedisSession::new(ep))
    }

    fn dial_host_port(&self, url: &str) -> (String, u16) {
        match ::redis::parse_redis_url(url) {
            Some(u) => (u.host_str().unwrap_or_default().to_string(), u.port().unwrap_or(6379)),
            None => (String::new(), 6379),
        }
    }
}
