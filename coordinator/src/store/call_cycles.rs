//! The registration-time check of the call graph: a DAG (or a local DAG of its file) that
//! calls itself, directly or through other registered DAGs, is refused. Only fixed names are
//! followed (`call: ${X}` is known at run time only, where the call depth bounds it), and a
//! call to a DAG not registered yet is fine (a directory registers in any order).

use std::collections::{HashMap, VecDeque};

use dagrid_shared::dag::{Dag, DagError, DagErrors, MAX_CALL_DEPTH};
use dagrid_shared::model::{self, DagRecord};
use dagrid_shared::redis::conn::ConnError;

use super::{encoding, RegisterError, Store};

/// The most registered DAGs the check reads (the walk stops there: a cycle beyond is left to
/// the run-time depth limit).
const MAX_WALKED: usize = 100_000;

impl Store {
    /// Refuses `new` (a file's DAG, then its locals, in document order) when one of them is
    /// on a cycle of static calls, following the calls through the registry (one `HMGET` per
    /// level of the walk) with `new` replacing the registered versions of those names.
    ///
    /// # Errors
    /// [`RegisterError::Invalid`] at the first call of a cycle (`steps[i].call`, or
    /// `documents[k].steps[i].call` for the k-th local), naming the cycle; Redis errors.
    pub(super) async fn check_call_cycles(&self, new: &[&Dag]) -> Result<(), RegisterError> {
        let mut graph: HashMap<String, Vec<String>> = HashMap::new();
        for dag in new {
            let targets = dag.static_calls().into_iter().map(|(_, t)| t.to_owned());
            graph.insert(dag.name.clone(), targets.collect());
        }
        if graph.values().all(Vec::is_empty) {
            return Ok(());
        }
        let mut frontier = unknown_targets(&graph);
        while !frontier.is_empty() && graph.len() < MAX_WALKED {
            let edges = self.static_calls_of(&frontier).await?;
            for (name, targets) in frontier.into_iter().zip(edges) {
                graph.insert(name, targets);
            }
            frontier = unknown_targets(&graph);
        }
        for (index, dag) in new.iter().enumerate() {
            for (field, target) in dag.static_calls() {
                let Some(path) = path(&graph, target, &dag.name) else {
                    continue;
                };
                let mut cycle = vec![dag.name.as_str()];
                cycle.extend(path.iter().map(String::as_str));
                let field = match index {
                    0 => field,
                    k => format!("documents[{k}].{field}"),
                };
                let message = format!(
                    "calls form a cycle: {}; a DAG may not call itself, directly or through \
                     other DAGs: remove this call or another call on the cycle (calls through \
                     ${{…}} names are cut at run time, {MAX_CALL_DEPTH} levels deep)",
                    cycle.join(" → ")
                );
                return Err(RegisterError::Invalid(DagErrors(vec![DagError::new(
                    field, message,
                )])));
            }
        }
        Ok(())
    }

    /// The static call targets of each registered DAG of `names` (empty for one not
    /// registered), with one `HMGET` of the registry and cached spec reads.
    async fn static_calls_of(&self, names: &[String]) -> Result<Vec<Vec<String>>, ConnError> {
        let mut get = redis::cmd("HMGET");
        get.arg(self.redis.keys().dags());
        for name in names {
            get.arg(name);
        }
        let mut c = self.redis.conn().await?;
        let raw: Vec<Option<Vec<u8>>> = get.query_async(&mut *c).await?;
        drop(c);
        let mut out = Vec::with_capacity(names.len());
        for raw in raw {
            let mut targets = Vec::new();
            if let Some(raw) = raw {
                let record: DagRecord = model::decode(&raw).map_err(encoding)?;
                if let Some(dag) = self.spec(&record.digest).await? {
                    let calls = dag.static_calls().into_iter();
                    targets.extend(calls.map(|(_, t)| t.to_owned()));
                }
            }
            out.push(targets);
        }
        Ok(out)
    }
}

/// The call targets of `graph` that are not in it yet, each once.
fn unknown_targets(graph: &HashMap<String, Vec<String>>) -> Vec<String> {
    let mut out: Vec<String> = graph
        .values()
        .flatten()
        .filter(|t| !graph.contains_key(*t))
        .cloned()
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The shortest call path from `from` to `to` (both included), if there is one.
fn path(graph: &HashMap<String, Vec<String>>, from: &str, to: &str) -> Option<Vec<String>> {
    let mut parent: HashMap<&str, &str> = HashMap::new();
    let mut queue = VecDeque::from([from]);
    parent.insert(from, from);
    while let Some(node) = queue.pop_front() {
        if node == to {
            let mut path = vec![node.to_owned()];
            let mut at = node;
            while at != from {
                at = parent[at];
                path.push(at.to_owned());
            }
            path.reverse();
            return Some(path);
        }
        for next in graph.get(node).into_iter().flatten() {
            if !parent.contains_key(next.as_str()) {
                parent.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> HashMap<String, Vec<String>> {
        (edges.iter())
            .map(|(n, t)| (n.to_string(), t.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn path_finds_the_shortest_call_path() {
        let g = graph(&[("a", &["b", "c"]), ("b", &["d"]), ("c", &["a"]), ("d", &[])]);
        assert_eq!(path(&g, "c", "a"), Some(vec!["c".into(), "a".into()]));
        assert_eq!(path(&g, "b", "a"), None);
        assert_eq!(path(&g, "a", "a"), Some(vec!["a".into()]));
        assert_eq!(unknown_targets(&graph(&[("a", &["x", "x", "a"])])), ["x"]);
    }
}
