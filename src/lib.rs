//! The library of the `dagrid` binary: its command line ([`cli`]), the typed HTTP client of the
//! coordinator's API ([`client`], also used by the tests), and the client verbs built on it.
//! `dagrid-worker` does not use it, so the worker binary links only the worker crate.

pub mod cli;
pub mod client;

mod batch;
mod commands;
mod dry;
mod events;
mod format;
mod health;
mod logs;
mod options;
mod queues;
mod retry;
mod services;
mod workers;
