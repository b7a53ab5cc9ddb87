//! The effective settings of a coordinator ([`Config::effective`]), as `dagrid coordinator
//! --print-config` shows them: defaults filled in, secrets left out.

use serde_json::{json, Value};

use crate::{Config, DEFAULT_LEASE_TIMEOUT};

/// A duration as humantime writes it (`10s`, `7days`).
fn human(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl Config {
    /// Every setting of this config with the value the coordinator uses, defaults filled in
    /// (`lease_timeout`, `reconcile_interval`, `timezone: UTC`, `max_connections: auto`),
    /// durations in humantime's form (`10s`). API tokens show their name and role only, their
    /// value as `***`: the result can be printed and shared.
    pub fn effective(&self) -> Value {
        let tokens: Vec<Value> = self
            .auth
            .tokens
            .iter()
            .map(|t| json!({ "name": t.name, "role": t.role.as_str(), "token": "***" }))
            .collect();
        json!({
            "dags_dir": self.dags_dir.as_ref().map(|d| d.display().to_string()),
            "coordinator_id": self.coordinator_id.as_deref().unwrap_or("auto (coordinator-<host>-<pid>-<random>)"),
            "queues": self.queues,
            "timezone": self.timezone.as_deref().unwrap_or("UTC"),
            "lease_timeout": human(self.lease_timeout.unwrap_or(DEFAULT_LEASE_TIMEOUT)),
            "reconcile_interval": human(self.reconcile_interval.unwrap_or(crate::reconcile::SWEEP_EVERY)),
            "retention": {
                "age": human(self.retention_age),
                "count": self.retention_count,
                "interval": human(self.retention_interval),
            },
            "auth": {
                "tokens": tokens,
                "public_metrics": self.auth.public_metrics,
                "public_health": self.auth.public_health,
                "insecure_no_auth": self.auth.insecure_no_auth,
            },
            "http": {
                "header_read_timeout": human(self.http.header_read_timeout),
                "body_read_timeout": human(self.http.body_read_timeout),
                "idle_timeout": human(self.http.idle_timeout),
                "max_connections": match self.http.max_connections {
                    Some(n) => json!(n),
                    None => json!("auto (from the open-files limit)"),
                },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ApiToken, Role};

    #[test]
    fn defaults_are_filled_in_and_token_values_left_out() {
        let mut config = Config::default();
        config
            .auth
            .tokens
            .push(ApiToken::new("ci", Role::Admin, "s3cret-value-0123456789"));
        let v = config.effective();
        assert_eq!(v["lease_timeout"], "10s");
        assert_eq!(v["timezone"], "UTC");
        assert_eq!(v["auth"]["tokens"][0]["name"], "ci");
        assert_eq!(v["auth"]["tokens"][0]["role"], "admin");
        assert!(!v.to_string().contains("s3cret"), "{v}");
    }
}
