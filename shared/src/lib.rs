//! What the dagrid coordinator and workers share: the DAG file model ([`dag`]), the Redis
//! keyspace ([`keys`]), the records and payloads kept in Redis ([`model`]), the Lua scripts of
//! every multi-key transition ([`scripts`]), Redis connections ([`conn`]) and a private
//! redis-server for one-machine use and tests ([`embedded`]).

pub mod conn;
pub mod dag;
pub mod embedded;
pub mod keys;
pub mod model;
pub mod schedule;
pub mod scripts;

pub use conn::{ConnError, Redis};
pub use keys::Keys;
