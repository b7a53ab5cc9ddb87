//! Everything about Redis that the coordinator and the workers share: connections
//! ([`conn`]), the names of every key ([`keys`]) and of the fields inside them ([`fields`]),
//! the Lua scripts of the multi-key transitions ([`scripts`], sources in `lua/`), the check of
//! a server's settings ([`server_check`]) and the private redis-server of `start-all` and the
//! tests ([`embedded`]).

pub mod conn;
pub mod embedded;
pub mod fields;
pub mod keys;
pub mod scripts;
pub mod server_check;
