//! Worker labels (`dagrid worker --label gpu=true`) and the worker selectors of DAGs (Dagu
//! `workerSelector` / `worker_selector`): a step runs only on a worker whose labels contain
//! every pair of its DAG's selector. Both are sets of `key=value` pairs with one canonical text
//! form, `k1=v1,k2=v2` sorted by key, which names the selector's ready streams
//! ([`crate::Keys::ready_of`]).

use std::collections::BTreeMap;
use std::fmt;

/// Longest label key or value (63 bytes, as a Kubernetes label name).
pub const MAX_PART: usize = 63;

/// Most pairs in one label set or selector (16).
pub const MAX_PAIRS: usize = 16;

/// A set of `key=value` pairs: a worker's labels or a DAG's worker selector. Keys match
/// `[A-Za-z0-9][A-Za-z0-9._/-]*`, values `[A-Za-z0-9._/-]*` (empty allowed), each at most
/// [`MAX_PART`] bytes, at most [`MAX_PAIRS`] pairs; a key appears once.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Labels(BTreeMap<String, String>);

/// Why a label or selector pair was refused; its text names the pair and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LabelError(String);

fn key_ok(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && k.len() <= MAX_PART
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'))
}

fn value_ok(v: &str) -> bool {
    v.len() <= MAX_PART
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'))
}

impl Labels {
    /// No pairs: a worker without labels, or no selector (any worker).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one pair, checked. Errors name the pair and the rule; a key given twice is an error.
    pub fn insert(&mut self, key: &str, value: &str) -> Result<(), LabelError> {
        let (key, value) = (key.trim(), value.trim());
        if !key_ok(key) {
            return Err(LabelError(format!(
                "label key {key:?}: use 1 to {MAX_PART} letters, digits, '.', '_', '/' or '-', starting with a letter or digit"
            )));
        }
        if !value_ok(value) {
            return Err(LabelError(format!(
                "label {key}={value:?}: a value is at most {MAX_PART} letters, digits, '.', '_', '/' or '-'"
            )));
        }
        if self.0.contains_key(key) {
            return Err(LabelError(format!(
                "label key {key:?} is given twice; give each key once"
            )));
        }
        if self.0.len() >= MAX_PAIRS {
            return Err(LabelError(format!(
                "more than {MAX_PAIRS} labels; keep at most {MAX_PAIRS}"
            )));
        }
        self.0.insert(key.to_string(), value.to_string());
        Ok(())
    }

    /// Parses one `key=value` argument (`--label gpu=true`).
    pub fn insert_pair(&mut self, pair: &str) -> Result<(), LabelError> {
        match pair.split_once('=') {
            Some((k, v)) => self.insert(k, v),
            None => Err(LabelError(format!(
                "label {pair:?} has no '=': write key=value, e.g. gpu=true"
            ))),
        }
    }

    /// Parses a comma-separated list of pairs (`gpu=true,region=eu`, the form of
    /// `DAGRID_WORKER_LABELS` and of [`Labels::canonical`]); empty items are skipped.
    pub fn parse_list(text: &str) -> Result<Self, LabelError> {
        let mut labels = Self::new();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            labels.insert_pair(pair)?;
        }
        Ok(labels)
    }

    /// True when there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The pairs, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// True when every pair of `selector` is one of these labels (an empty selector matches
    /// every worker), as Dagu matches `workerSelector` against worker labels.
    pub fn satisfies(&self, selector: &Labels) -> bool {
        selector
            .0
            .iter()
            .all(|(k, v)| self.0.get(k).is_some_and(|have| have == v))
    }

    /// The canonical text: `k1=v1,k2=v2` sorted by key; empty for no pairs. It round-trips
    /// through [`Labels::parse_list`].
    pub fn canonical(&self) -> String {
        self.to_string()
    }

    /// The pairs as a map (the JSON shape of the API).
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_is_sorted_and_round_trips() {
        let l = Labels::parse_list(" region=eu , gpu=true,,").unwrap();
        assert_eq!(l.canonical(), "gpu=true,region=eu");
        assert_eq!(Labels::parse_list(&l.canonical()).unwrap(), l);
        assert_eq!(Labels::new().canonical(), "");
    }

    #[test]
    fn a_worker_satisfies_a_selector_it_contains() {
        let worker = Labels::parse_list("gpu=true,region=eu").unwrap();
        assert!(worker.satisfies(&Labels::new()));
        assert!(worker.satisfies(&Labels::parse_list("gpu=true").unwrap()));
        assert!(!worker.satisfies(&Labels::parse_list("gpu=false").unwrap()));
        assert!(!worker.satisfies(&Labels::parse_list("gpu=true,zone=a").unwrap()));
        assert!(!Labels::new().satisfies(&Labels::parse_list("gpu=true").unwrap()));
    }

    #[test]
    fn bad_pairs_are_refused_with_the_rule() {
        for (text, needle) in [
            ("gpu", "no '='"),
            ("=x", "label key"),
            ("a b=1", "label key"),
            ("gpu=a,b", "no '='"),
            ("gpu=tr ue", "value"),
            ("gpu=1,gpu=2", "twice"),
        ] {
            let e = Labels::parse_list(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
