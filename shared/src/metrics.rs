//! Prometheus metrics of this process (coordinator, workers, or both under `dagrid start-all`):
//! one registry per process, rendered in the Prometheus/OpenMetrics text format by [`render`].
//!
//! The metric families themselves are defined here too (one module names them all, as
//! [`crate::keys`] names all keys), so a coordinator and the workers of one process share them.

use std::sync::OnceLock;

use prometheus_client::registry::Registry;

/// The process-wide registry.
fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

/// This process's metrics, then those of `extra` (values read at scrape time, such as queue
/// depths read from Redis), in the OpenMetrics text format (`# EOF` at the end), as served at
/// `/metrics` with content type [`CONTENT_TYPE`].
pub fn render(extra: Option<&Registry>) -> String {
    use prometheus_client::encoding::text::{encode_eof, encode_registry};
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode_registry(&mut out, registry());
    if let Some(extra) = extra {
        let _ = encode_registry(&mut out, extra);
    }
    let _ = encode_eof(&mut out);
    out
}

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
