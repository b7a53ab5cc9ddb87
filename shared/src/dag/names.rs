//! Name rules (DAG names, step names, step ids, variable names) and "did you mean" suggestions.

/// The longest DAG name: it is part of Redis keys and URLs.
const MAX_DAG_NAME_CHARS: usize = 64;

/// The longest step name.
pub(super) const MAX_STEP_NAME_CHARS: usize = 128;

/// Words Dagu reserves for step ids (they name parts of a step in `${id.stdout}` references).
const RESERVED_STEP_IDS: &[&str] = &[
    "env", "params", "args", "stdout", "stderr", "output", "outputs",
];

/// Whether `text` is a variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub(super) fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) if first.is_ascii_alphabetic() || first == '_' => {
            chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        _ => false,
    }
}

/// Why `text` is not a valid variable name (env name, param name, `output`), if it is not.
pub(super) fn identifier_problem(text: &str, what: &str) -> Option<String> {
    if is_identifier(text) {
        return None;
    }
    Some(format!(
        "\"{text}\" is not a valid {what}: use letters, digits and _ only, not starting with a digit \
         ([A-Za-z_][A-Za-z0-9_]*)"
    ))
}

/// Why `name` is not a valid DAG name, if it is not: `[A-Za-z0-9_.-]{1,64}`, not only dots.
/// The reason reads after "it" ("it is empty").
pub(super) fn dag_name_problem(name: &str) -> Option<&'static str> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if name.is_empty() {
        Some("is empty")
    } else if name.chars().count() > MAX_DAG_NAME_CHARS {
        Some("is longer than 64 characters")
    } else if !name.chars().all(allowed) {
        Some("has characters other than A-Z a-z 0-9 _ . -")
    } else if name.chars().all(|c| c == '.') {
        Some("is only dots")
    } else {
        None
    }
}

/// Why `name` (already trimmed) is not a valid step name, if it is not.
pub(super) fn step_name_problem(name: &str) -> Option<String> {
    let length = name.chars().count();
    if length == 0 {
        Some("is empty; give the step a name".to_owned())
    } else if length > MAX_STEP_NAME_CHARS {
        Some(format!(
            "is {length} characters long; a step name has at most {MAX_STEP_NAME_CHARS}"
        ))
    } else if name.contains('/') {
        Some(format!(
            "\"{name}\" contains /; step names are used in URLs and log file names, use - or _ instead"
        ))
    } else if name.chars().any(char::is_control) {
        Some("contains a control character (such as a newline or tab); remove it".to_owned())
    } else {
        None
    }
}

/// Why `id` (already trimmed) is not a valid step id, if it is not.
pub(super) fn step_id_problem(id: &str) -> Option<String> {
    let mut chars = id.chars();
    let well_formed = match chars.next() {
        Some(first) if first.is_ascii_alphabetic() => {
            chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        }
        _ => false,
    };
    if !well_formed || id.len() > MAX_STEP_NAME_CHARS {
        return Some(format!(
            "\"{id}\" is not a valid step id: start with a letter, then letters, digits, _ or - \
             (at most {MAX_STEP_NAME_CHARS})"
        ));
    }
    if RESERVED_STEP_IDS.contains(&id) {
        return Some(format!(
            "\"{id}\" is reserved by Dagu and cannot be a step id; pick another"
        ));
    }
    None
}

/// The candidate closest to `wanted`, if close enough to be a likely typo: at most 2 edits
/// (and at most a third of the longer word), comparing case-insensitively and ignoring `_`
/// and `-` so `WorkingDir` finds `workingDir` and `timeout_secs` finds `timeout_sec`.
pub(super) fn suggest<'a>(
    wanted: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    const MAX_EDITS: usize = 2;
    let wanted = normalize(wanted);
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in candidates {
        let normal = normalize(candidate);
        let Some(distance) = bounded_distance(&wanted, &normal, MAX_EDITS) else {
            continue;
        };
        let longer = wanted.len().max(normal.len());
        let close = distance == 0 || distance * 3 <= longer;
        if close && best.is_none_or(|(best_distance, _)| distance < best_distance) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

fn normalize(text: &str) -> Vec<char> {
    text.chars()
        .filter(|c| !matches!(c, '_' | '-'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// The edit distance between `a` and `b` (Levenshtein plus swapping two neighbours, so
/// `stpes` is one edit from `steps`) if it is at most `max`, computed only within the diagonal
/// band `|i - j| <= max`: O(len × max) time however long the inputs are.
pub(super) fn bounded_distance(a: &[char], b: &[char], max: usize) -> Option<usize> {
    let (n, m) = (a.len(), b.len());
    if n.abs_diff(m) > max {
        return None;
    }
    let over = max + 1;
    let mut before: Vec<usize> = vec![over; m + 1];
    let mut prev: Vec<usize> = (0..=m).map(|j| if j <= max { j } else { over }).collect();
    let mut cur = vec![over; m + 1];
    for i in 1..=n {
        let lo = i.saturating_sub(max).max(1);
        let hi = (i + max).min(m);
        cur[0] = if i <= max { i } else { over };
        cur[lo - 1] = if lo == 1 { cur[0] } else { over };
        let mut row_min = cur[lo - 1];
        for j in lo..=hi {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut value = (prev[j - 1] + cost).min(prev[j] + 1).min(cur[j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                value = value.min(before[j - 2] + 1);
            }
            cur[j] = value.min(over);
            row_min = row_min.min(cur[j]);
        }
        if hi < m {
            cur[hi + 1] = over;
        }
        if row_min > max {
            return None;
        }
        std::mem::swap(&mut before, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    (prev[m] <= max).then_some(prev[m])
}
