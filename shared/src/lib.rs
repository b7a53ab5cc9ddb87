//! What the dagrid coordinator and workers share: the DAG file model ([`dag`]), the Redis
//! keyspace ([`keys`]), the records and payloads kept in Redis ([`model`]), the Lua scripts of
//! every multi-key transition ([`scripts`]), Redis connections ([`conn`]), startup checks of the
//! Redis server's settings ([`server_check`]), the compact stored form of step states ([`stored`]), the run and step state machines ([`plan`]) and the script call that writes their transitions ([`transition`]) and a private redis-server for one-machine use and
//! tests ([`embedded`]).

pub mod dag;
pub mod duration;
pub mod labels;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod ready;
pub mod redis;
pub mod run_id;
pub mod schedule;
pub mod stored;
pub mod transition;

pub use redis::conn::{Conn, ConnError, Redis};
pub use redis::keys::Keys;
