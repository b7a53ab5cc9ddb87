//! Helpers of the test binaries (`mod common;`), by job:
//! - [`inproc`]: a whole cluster in the test's process ([`Cluster`]);
//! - [`cluster`]: a cluster of real processes for chaos tests (`cluster::Cluster`);
//! - [`api`]: the API helpers both clusters deref to, on the `dagrid` library's client;
//! - [`proc`]: one `dagrid` process; [`os`]: signals, process groups, `/proc`, log files;
//! - [`dags`]: the chaos tests' DAG files.

// Each test binary uses some of the helpers.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod api;
pub mod cluster;
pub mod dags;
pub mod inproc;
pub mod os;
pub mod proc;

#[allow(unused_imports)]
pub use api::{output, step};
#[allow(unused_imports)]
pub use inproc::{dagrid_bin, Cluster, Options};
