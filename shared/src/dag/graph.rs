//! The dependency graph: unique step names and ids, a chain's implicit edges, `depends`
//! resolution, cycle detection, and the index-based views [`super::Dag::dependencies`] and
//! [`super::Dag::dependents`]. Everything here is O(steps + edges).

use std::collections::{HashMap, HashSet};

use super::names::suggest;
use super::report::{child, item, Report};
use super::step::StepDraft;
use super::{DagKind, Step};

/// Turn drafts into steps: name the nameless ones, check names and ids are unique, add a
/// chain's implicit edges (none for `keyed`, steps written as a map), resolve `depends` (by
/// name, else by id) and report unknown targets, self-dependencies and cycles.
pub(super) fn resolve(
    mut drafts: Vec<StepDraft>,
    kind: DagKind,
    keyed: bool,
    report: &mut Report,
) -> Vec<Step> {
    name_steps(&mut drafts);
    let by_name = index_names(&drafts, report);
    let by_id = index_ids(&drafts, &by_name, report);
    let lookup = Lookup { by_name, by_id };
    let declared = declared_depends(&drafts, kind, keyed);
    let mut marks = vec![usize::MAX; drafts.len()];
    let edges: Vec<Vec<usize>> = declared
        .iter()
        .enumerate()
        .map(|(index, depends)| lookup.resolve(&drafts, index, depends, &mut marks, report))
        .collect();
    report_cycles(&edges, &drafts, report);
    let names: Vec<String> = drafts
        .iter()
        .map(|draft| draft.name.clone().unwrap_or_default())
        .collect();
    drafts
        .into_iter()
        .zip(&edges)
        .map(|(draft, targets)| Step {
            depends: targets
                .iter()
                .map(|&target| names[target].clone())
                .collect(),
            name: draft.name.unwrap_or_default(),
            description: draft.description,
            command: draft.command,
            script: draft.script,
            shell: draft.shell,
            dir: draft.dir,
            env: draft.env,
            output: draft.output,
            retry: draft.retry,
            timeout_ms: draft.timeout_ms,
            signal_on_stop: draft.signal_on_stop,
            preconditions: draft.preconditions,
            continue_on: draft.continue_on,
            repeat: draft.repeat,
            worker_selector: draft.worker_selector,
            call: draft.call,
        })
        .collect()
}

/// Gives every step without a `name` one, as Dagu's `finalizeBuiltStepName` does: its `id`
/// when it has one, else `<prefix>_<n>` ([`super::step::NameKind`]) where n starts at the
/// step's item number in `steps:` (1-based; the members of a nested list share their list's)
/// and grows past the names of the steps before it. So a generated name changes only when
/// the step's position, its kind, or an earlier step's name changes.
fn name_steps(drafts: &mut [StepDraft]) {
    let mut taken: HashSet<String> = HashSet::with_capacity(drafts.len());
    for draft in drafts.iter_mut() {
        if draft.name.is_none() {
            let name = match &draft.id {
                Some(id) => id.clone(),
                None => {
                    let prefix = draft.kind.prefix();
                    let mut counter = draft.item + 1;
                    loop {
                        let candidate = format!("{prefix}_{counter}");
                        if !taken.contains(&candidate) {
                            break candidate;
                        }
                        counter += 1;
                    }
                }
            };
            draft.name = Some(name);
        }
        if let Some(name) = &draft.name {
            taken.insert(name.clone());
        }
    }
}

fn field_of(drafts: &[StepDraft], index: usize) -> String {
    match drafts.get(index) {
        Some(draft) if !draft.field.is_empty() => draft.field.clone(),
        _ => item("steps", index),
    }
}

/// Name → index of its first step; later duplicates are reported.
fn index_names<'a>(drafts: &'a [StepDraft], report: &mut Report) -> HashMap<&'a str, usize> {
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (index, draft) in drafts.iter().enumerate() {
        let Some(name) = draft.name.as_deref() else {
            continue;
        };
        if let Some(&first) = by_name.get(name) {
            report.error(
                child(&field_of(drafts, index), "name"),
                format!(
                    "\"{name}\" is also the name of {}; step names must be unique, rename one \
                     (a step without name: is named after its id, else as Dagu does: cmd_N, \
                     script_N, …)",
                    field_of(drafts, first)
                ),
            );
        } else {
            by_name.insert(name, index);
        }
    }
    by_name
}

/// Id → index; duplicate ids and ids equal to another step's name are reported.
fn index_ids<'a>(
    drafts: &'a [StepDraft],
    by_name: &HashMap<&str, usize>,
    report: &mut Report,
) -> HashMap<&'a str, usize> {
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    for (index, draft) in drafts.iter().enumerate() {
        let Some(id) = draft.id.as_deref() else {
            continue;
        };
        let field = child(&field_of(drafts, index), "id");
        if let Some(&first) = by_id.get(id) {
            let other = field_of(drafts, first);
            report.error(
                field,
                format!("\"{id}\" is also the id of {other}; ids must be unique"),
            );
        } else if let Some(&named) = by_name.get(id).filter(|&&named| named != index) {
            let other = field_of(drafts, named);
            report.error(
                field,
                format!(
                    "\"{id}\" is the name of {other}; an id must not equal another step's name"
                ),
            );
        } else {
            by_id.insert(id, index);
        }
    }
    by_id
}

/// Each step's `depends` as written, plus a chain's implicit edges: a step depends on every
/// step of the item before it in `steps:` (one step, or all members of a nested list), as
/// Dagu's `injectChainDependencies` does. A written `depends` adds to those edges (Dagu 1.22 to
/// 1.30; Dagu 2 refuses depends in a chain) and an empty one (`depends: []` or null) removes
/// them. `keyed` steps (the map form) get no implicit edges, as in Dagu.
fn declared_depends(drafts: &[StepDraft], kind: DagKind, keyed: bool) -> Vec<Vec<String>> {
    let chain = kind == DagKind::Chain && !keyed;
    let mut out = Vec::with_capacity(drafts.len());
    // The item before the current one: [start, end) in `drafts`.
    let (mut before, mut current) = ((0, 0), (0, 0));
    let mut current_item = None;
    for (index, draft) in drafts.iter().enumerate() {
        if current_item != Some(draft.item) {
            before = current;
            current = (index, index);
            current_item = Some(draft.item);
        }
        current.1 = index + 1;
        let mut depends = draft.depends.clone().unwrap_or_default();
        let explicitly_none = draft.depends.as_ref().is_some_and(Vec::is_empty);
        if chain && !explicitly_none {
            let previous = drafts[before.0..before.1].iter();
            depends.extend(previous.filter_map(|step| step.name.clone()));
        }
        out.push(depends);
    }
    out
}

/// Step names and ids to indices.
struct Lookup<'a> {
    by_name: HashMap<&'a str, usize>,
    by_id: HashMap<&'a str, usize>,
}

impl Lookup<'_> {
    fn find(&self, target: &str) -> Option<usize> {
        let by_name = self.by_name.get(target);
        by_name.or_else(|| self.by_id.get(target)).copied()
    }

    /// The indices step `index` depends on, de-duplicated in written order; unknown targets
    /// and self-dependencies are reported and left out. `marks[t] == index` records that `t`
    /// was already added for this step, keeping de-duplication O(depends).
    fn resolve(
        &self,
        drafts: &[StepDraft],
        index: usize,
        depends: &[String],
        marks: &mut [usize],
        report: &mut Report,
    ) -> Vec<usize> {
        let field = child(&field_of(drafts, index), "depends");
        let mut targets: Vec<usize> = Vec::with_capacity(depends.len());
        for target in depends {
            match self.find(target) {
                Some(found) if found == index => report.error(
                    &field,
                    format!(
                        "step \"{target}\" depends on itself; remove \"{target}\" from its depends"
                    ),
                ),
                Some(found) if marks[found] != index => {
                    marks[found] = index;
                    targets.push(found);
                }
                Some(_) => {}
                None => Self::report_unknown(drafts, target, &field, report),
            }
        }
        targets
    }

    fn report_unknown(drafts: &[StepDraft], target: &str, field: &str, report: &mut Report) {
        if target.is_empty() {
            report.error(field, "an empty step name; remove it");
            return;
        }
        if !report.has_room() {
            report.error(field, "unknown step");
            return;
        }
        let names = drafts.iter().filter_map(|draft| draft.name.as_deref());
        let message = match suggest(target, names) {
            Some(near) => format!("unknown step \"{target}\"; did you mean \"{near}\"?"),
            None => format!(
                "unknown step \"{target}\"; depends must name a step of this DAG (by name or id)"
            ),
        };
        report.error(field, message);
    }
}

/// Report each group of steps that depend on each other in a circle (each strongly connected
/// component with more than one step), naming one cycle in run order, starting from the
/// component's first step in the file.
fn report_cycles(edges: &[Vec<usize>], drafts: &[StepDraft], report: &mut Report) {
    let mut components: Vec<Vec<usize>> = strongly_connected(edges)
        .into_iter()
        .filter(|component| component.len() > 1)
        .collect();
    for component in &mut components {
        component.sort_unstable();
    }
    components.sort_unstable_by_key(|component| component[0]);
    let mut member = vec![false; edges.len()];
    for component in &components {
        let cycle = cycle_in(edges, component, &mut member);
        let names: Vec<&str> = cycle
            .iter()
            .map(|&index| drafts[index].name.as_deref().unwrap_or("?"))
            .collect();
        report.error(
            child(&field_of(drafts, component[0]), "depends"),
            format!(
                "steps {} form a cycle (each waits for the one before it); remove one of these depends",
                names.join(" -> ")
            ),
        );
    }
}

/// One cycle through the component's first step, in run order and closed (`[a, b, c, a]`
/// where `b` depends on `a`): a breadth-first search along `depends` edges inside the
/// component, O(component size + its edges). `member` is all `false` on entry and on return.
fn cycle_in(edges: &[Vec<usize>], component: &[usize], member: &mut [bool]) -> Vec<usize> {
    let start = component[0];
    for &index in component {
        member[index] = true;
    }
    let mut parent: HashMap<usize, usize> = HashMap::with_capacity(component.len());
    let mut queue = std::collections::VecDeque::from([start]);
    let mut last = start;
    'search: while let Some(node) = queue.pop_front() {
        for &next in &edges[node] {
            if next == start {
                last = node;
                break 'search;
            }
            if member[next] && !parent.contains_key(&next) {
                parent.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    for &index in component {
        member[index] = false;
    }
    // `start` depends on `last`, which depends on its parent, … back to `start`: so in run
    // order `start` comes first, then `last`, then its parents.
    let mut cycle = vec![start];
    let mut node = last;
    while node != start {
        cycle.push(node);
        node = parent.get(&node).copied().unwrap_or(start);
    }
    cycle.push(start);
    cycle
}

/// Tarjan's strongly connected components, iterative (no recursion, so no stack overflow on
/// long chains), O(nodes + edges).
fn strongly_connected(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    const UNVISITED: usize = usize::MAX;
    let count = edges.len();
    let mut order = vec![UNVISITED; count];
    let mut low = vec![0; count];
    let mut on_stack = vec![false; count];
    let mut stack: Vec<usize> = Vec::new();
    let mut components = Vec::new();
    let mut next_order = 0;
    for root in 0..count {
        if order[root] != UNVISITED {
            continue;
        }
        let mut calls: Vec<(usize, usize)> = vec![(root, 0)];
        order[root] = next_order;
        low[root] = next_order;
        next_order += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&(node, edge)) = calls.last() {
            if let Some(&next) = edges[node].get(edge) {
                if let Some(call) = calls.last_mut() {
                    call.1 += 1;
                }
                if order[next] == UNVISITED {
                    order[next] = next_order;
                    low[next] = next_order;
                    next_order += 1;
                    stack.push(next);
                    on_stack[next] = true;
                    calls.push((next, 0));
                } else if on_stack[next] {
                    low[node] = low[node].min(order[next]);
                }
                continue;
            }
            calls.pop();
            if let Some(&(caller, _)) = calls.last() {
                low[caller] = low[caller].min(low[node]);
            }
            if low[node] == order[node] {
                let mut component = Vec::new();
                while let Some(member) = stack.pop() {
                    on_stack[member] = false;
                    component.push(member);
                    if member == node {
                        break;
                    }
                }
                components.push(component);
            }
        }
    }
    components
}

/// Name → index over `steps` (first occurrence wins).
fn name_index(steps: &[Step]) -> HashMap<&str, usize> {
    let mut index = HashMap::with_capacity(steps.len());
    for (position, step) in steps.iter().enumerate() {
        index.entry(step.name.as_str()).or_insert(position);
    }
    index
}

/// For each step, the indices of the steps it depends on; unknown names are skipped.
pub(super) fn dependencies(steps: &[Step]) -> Vec<Vec<usize>> {
    let index = name_index(steps);
    steps
        .iter()
        .map(|step| {
            let targets = step.depends.iter();
            targets
                .filter_map(|name| index.get(name.as_str()).copied())
                .collect()
        })
        .collect()
}

/// For each step, the indices of the steps that depend on it, ascending.
pub(super) fn dependents(steps: &[Step]) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); steps.len()];
    for (dependent, targets) in dependencies(steps).into_iter().enumerate() {
        for target in targets {
            out[target].push(dependent);
        }
    }
    out
}
