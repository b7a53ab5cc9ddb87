//! Variable expansion in a step's `env` values, `dir` and fast-path command words, and the
//! test that decides whether a `command` needs a shell at all.
//!
//! [`expand`] (commands, `dir`) knows the part of POSIX sh parameter expansion that commands
//! need:
//!
//! * `$NAME` and `${NAME}`, where `NAME` is `[A-Za-z_][A-Za-z0-9_]*` (the longest such run);
//! * `$0`..`$9` (one digit, as in sh: `$10` is `$1` followed by `0`) and `${10}`, `${11}`, …
//!   for the positional params;
//! * a variable the lookup does not know expands to the empty string, as in sh;
//! * `$$` is left exactly as it is (both characters, and scanning resumes after them), so
//!   `$$HOME` stays `$$HOME`. In sh `$$` is the shell's process id, which means nothing in a
//!   value expanded before any shell runs; a command that uses it goes to the shell
//!   ([`needs_shell`]), which gives it its sh meaning;
//! * a `$` followed by anything else (a space, the end, `{` not closed by `}` around a valid
//!   name, `${VAR:-default}`, …) is left as it is: a command holding it runs through the
//!   shell, which expands it.
//!
//! [`expand_value`] (the values of the DAG's and a step's `env`, and a param's `eval`) adds
//! what Dagu's evaluator does there (`internal/cmn/eval`: its variables phase, then
//! `mvdan.cc/sh` for the POSIX operators, with the OS environment as fallback): `\$` is a
//! literal `$`; `$VAR` between single quotes (`'$VAR'`) stays as written; and the operators
//! `${V:-w}` `${V-w}` `${V:+w}` `${V+w}` `${#V}` `${V:off}` `${V:off:len}` `${V#p}` `${V##p}`
//! `${V%p}` `${V%%p}` `${V/p/r}` `${V//p/r}` `${V/#p/r}` `${V/%p/r}` `${V^}` `${V^^}` `${V,}`
//! `${V,,}` (patterns are globs: `*`, `?`, `[…]`; the word `w` is expanded too). `${V:=w}`,
//! `${V=w}`, `${V:?m}` and `${V?m}` expand to the value when `V` is set (and not empty, for
//! the `:` forms), and otherwise stay as written: Dagu's evaluator cannot assign or fail there
//! and leaves them too.
//!
//! Expansion never re-parses what a variable holds: a value is inserted verbatim, so a param
//! like `; rm -rf /` stays text. Only text the DAG's author wrote is a template (a command,
//! `dir`, the DAG's and the step's `env` values); the values of params, outputs and Dagu's
//! variables are never expanded themselves, so a param `${DAGRID_REDIS_URL}` stays that text.

/// Expands `$NAME`, `${NAME}`, `$1`..`$9` and `${10}`.. in `template`, asking `lookup` for each
/// name (positional params are asked for as `"0"`, `"1"`, … `"10"`, …). See the module doc for
/// the grammar; unknown names expand to "".
pub fn expand(template: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let bytes = template.as_bytes();
    let mut out = String::with_capacity(template.len());
    // Start of the literal run not yet copied to `out`. Every index we cut at is an ASCII
    // byte (`$`, `{`, `}`, a name character), so slicing stays on char boundaries.
    let mut literal = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        match reference_at(bytes, i) {
            Reference::Name { name, end } => {
                out.push_str(&template[literal..i]);
                out.push_str(&lookup(&template[name]).unwrap_or_default());
                i = end;
                literal = end;
            }
            Reference::Dollars => i += 2,
            Reference::None => i += 1,
        }
    }
    out.push_str(&template[literal..]);
    out
}

/// What a `$` at some index starts.
enum Reference {
    /// A variable reference: the name's byte range and the index just past the reference.
    Name {
        name: std::ops::Range<usize>,
        end: usize,
    },
    /// `$$`, which stays as it is.
    Dollars,
    /// Nothing we expand; the `$` is literal.
    None,
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Classifies the `$` at `bytes[at]`.
fn reference_at(bytes: &[u8], at: usize) -> Reference {
    let start = at + 1;
    match bytes.get(start) {
        Some(b'$') => Reference::Dollars,
        Some(d) if d.is_ascii_digit() => Reference::Name {
            name: start..start + 1,
            end: start + 1,
        },
        Some(&b) if is_name_start(b) => {
            let end = start
                + bytes[start..]
                    .iter()
                    .take_while(|&&b| is_name_char(b))
                    .count();
            Reference::Name {
                name: start..end,
                end,
            }
        }
        Some(b'{') => {
            let inner = start + 1;
            let Some(close) = bytes[inner..].iter().position(|&b| b == b'}') else {
                return Reference::None;
            };
            let name = &bytes[inner..inner + close];
            let valid = match name.first() {
                Some(&b) if is_name_start(b) => name.iter().all(|&b| is_name_char(b)),
                Some(b) if b.is_ascii_digit() => name.iter().all(u8::is_ascii_digit),
                _ => false,
            };
            if valid {
                Reference::Name {
                    name: inner..inner + close,
                    end: inner + close + 1,
                }
            } else {
                Reference::None
            }
        }
        _ => Reference::None,
    }
}

/// Expands an `env` value as Dagu's evaluator does (see the module doc): `\\$`, `'$V'`, `$V`,
/// `${V}`, `$1`, `${10}` and the POSIX operators, asking `lookup` for each name (`None`:
/// unset). Unknown names expand to "".
pub fn expand_value(template: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let bytes = template.as_bytes();
    let mut out = String::with_capacity(template.len());
    let mut literal = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => {
                let run = bytes[i..].iter().take_while(|&&b| b == b'\\').count();
                if bytes.get(i + run) == Some(&b'$') && run % 2 == 1 {
                    out.push_str(&template[literal..i + run - 1]);
                    out.push('$');
                    i += run + 1;
                    literal = i;
                } else {
                    i += run;
                }
            }
            b'$' => {
                let (end, value) = match reference_at(bytes, i) {
                    Reference::Name { name, end } => {
                        (end, lookup(&template[name]).unwrap_or_default())
                    }
                    Reference::Dollars => {
                        i += 2;
                        continue;
                    }
                    Reference::None => match operator_at(template, i, lookup) {
                        Some(found) => found,
                        None => {
                            i += 1;
                            continue;
                        }
                    },
                };
                let quoted = i > 0 && bytes[i - 1] == b'\'' && bytes.get(end) == Some(&b'\'');
                if !quoted {
                    out.push_str(&template[literal..i]);
                    out.push_str(&value);
                    literal = end;
                }
                i = end;
            }
            _ => i += 1,
        }
    }
    out.push_str(&template[literal..]);
    out
}

/// A `${…}` with a POSIX operator at `at`: the index past its `}` and what it expands to;
/// `None` when it is none (or stays as written).
fn operator_at(
    template: &str,
    at: usize,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Option<(usize, String)> {
    let rest = template.get(at + 2..)?;
    if !template[at..].starts_with("${") {
        return None;
    }
    let close = rest.find('}')?;
    let inner = &rest[..close];
    let end = at + 2 + close + 1;
    if let Some(name) = inner.strip_prefix('#') {
        if is_name(name) {
            let length = lookup(name).map_or(0, |v| v.chars().count());
            return Some((end, length.to_string()));
        }
    }
    let name_len = if inner.starts_with(|c: char| c.is_ascii_digit()) {
        inner.bytes().take_while(u8::is_ascii_digit).count()
    } else {
        inner.bytes().take_while(|&b| is_name_char(b)).count()
    };
    let (name, op) = inner.split_at(name_len);
    if !is_name(name) || op.is_empty() {
        return None;
    }
    let value = lookup(name);
    let word = |w: &str| expand_value(w, lookup);
    let set = value.is_some();
    let full = value.as_deref().is_some_and(|v| !v.is_empty());
    let v = value.unwrap_or_default();
    let expanded = if let Some(w) = op.strip_prefix(":-") {
        if full {
            v
        } else {
            word(w)
        }
    } else if let Some(w) = op.strip_prefix(":+") {
        if full {
            word(w)
        } else {
            String::new()
        }
    } else if op.starts_with(":=") || op.starts_with(":?") {
        if full {
            v
        } else {
            return None;
        }
    } else if let Some(w) = op.strip_prefix('-') {
        if set {
            v
        } else {
            word(w)
        }
    } else if let Some(w) = op.strip_prefix('+') {
        if set {
            word(w)
        } else {
            String::new()
        }
    } else if op.starts_with('=') || op.starts_with('?') {
        if set {
            v
        } else {
            return None;
        }
    } else if let Some(spec) = op.strip_prefix(':') {
        substring(&v, spec)?
    } else if let Some(p) = op.strip_prefix("##") {
        strip_prefix(&v, &word(p), true)
    } else if let Some(p) = op.strip_prefix('#') {
        strip_prefix(&v, &word(p), false)
    } else if let Some(p) = op.strip_prefix("%%") {
        strip_suffix(&v, &word(p), true)
    } else if let Some(p) = op.strip_prefix('%') {
        strip_suffix(&v, &word(p), false)
    } else if let Some(spec) = op.strip_prefix('/') {
        replace(&v, spec, &word)
    } else if op.starts_with("^^") {
        v.to_uppercase()
    } else if op.starts_with(",,") {
        v.to_lowercase()
    } else if op.starts_with('^') {
        first_char(&v, char::to_uppercase)
    } else if op.starts_with(',') {
        first_char(&v, char::to_lowercase)
    } else {
        return None;
    };
    Some((end, expanded))
}

fn is_name(name: &str) -> bool {
    let b = name.as_bytes();
    match b.first() {
        Some(&c) if is_name_start(c) => b.iter().all(|&c| is_name_char(c)),
        Some(c) if c.is_ascii_digit() => b.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// `${V:off}` / `${V:off:len}` (bash): in characters; a negative offset counts from the end
/// (written `${V: -2}`), a negative length ends that far from the end. `None`: not numbers.
fn substring(value: &str, spec: &str) -> Option<String> {
    let chars: Vec<char> = value.chars().collect();
    let n = chars.len() as i64;
    let (off, len) = match spec.split_once(':') {
        Some((o, l)) => (o, Some(l)),
        None => (spec, None),
    };
    let off: i64 = off.trim().parse().ok()?;
    let start = if off < 0 {
        (n + off).max(0)
    } else {
        off.min(n)
    };
    let stop = match len {
        None => n,
        Some(l) => {
            let l: i64 = l.trim().parse().ok()?;
            if l < 0 {
                (n + l).max(start)
            } else {
                (start + l).min(n)
            }
        }
    };
    Some(
        chars[start as usize..stop.max(start) as usize]
            .iter()
            .collect(),
    )
}

fn strip_prefix(value: &str, pattern: &str, longest: bool) -> String {
    let chars: Vec<char> = value.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    let mut cuts: Box<dyn Iterator<Item = usize>> = if longest {
        Box::new((0..=chars.len()).rev())
    } else {
        Box::new(0..=chars.len())
    };
    match cuts.find(|&k| glob(&p, &chars[..k])) {
        Some(k) => chars[k..].iter().collect(),
        None => value.to_string(),
    }
}

fn strip_suffix(value: &str, pattern: &str, longest: bool) -> String {
    let chars: Vec<char> = value.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    let mut cuts: Box<dyn Iterator<Item = usize>> = if longest {
        Box::new(0..=chars.len())
    } else {
        Box::new((0..=chars.len()).rev())
    };
    match cuts.find(|&k| glob(&p, &chars[k..])) {
        Some(k) => chars[..k].iter().collect(),
        None => value.to_string(),
    }
}

/// `${V/p/r}` (first), `${V//p/r}` (all), `${V/#p/r}` (at the start), `${V/%p/r}` (at the
/// end); `spec` is what follows the first `/`. Each match is the longest at its place.
fn replace(value: &str, spec: &str, word: &dyn Fn(&str) -> String) -> String {
    let (mode, spec) = match spec.as_bytes().first() {
        Some(b'/') => ('a', &spec[1..]),
        Some(b'#') => ('s', &spec[1..]),
        Some(b'%') => ('e', &spec[1..]),
        _ => ('f', spec),
    };
    let (pattern, with) = spec.split_once('/').unwrap_or((spec, ""));
    let p: Vec<char> = word(pattern).chars().collect();
    let with = word(with);
    let chars: Vec<char> = value.chars().collect();
    if p.is_empty() {
        return value.to_string();
    }
    let longest_at = |from: usize| {
        (from..=chars.len())
            .rev()
            .find(|&to| glob(&p, &chars[from..to]))
    };
    match mode {
        's' => match longest_at(0) {
            Some(to) => format!("{with}{}", chars[to..].iter().collect::<String>()),
            None => value.to_string(),
        },
        'e' => match (0..=chars.len()).find(|&from| glob(&p, &chars[from..])) {
            Some(from) => format!("{}{with}", chars[..from].iter().collect::<String>()),
            None => value.to_string(),
        },
        _ => {
            let mut out = String::new();
            let mut i = 0;
            let mut replaced = false;
            while i < chars.len() {
                if mode == 'a' || !replaced {
                    if let Some(to) = longest_at(i).filter(|&to| to > i) {
                        out.push_str(&with);
                        i = to;
                        replaced = true;
                        continue;
                    }
                }
                out.push(chars[i]);
                i += 1;
            }
            out
        }
    }
}

fn first_char<I: Iterator<Item = char>>(value: &str, f: impl Fn(char) -> I) -> String {
    let mut chars = value.chars();
    match chars.next() {
        Some(c) => f(c).chain(chars).collect(),
        None => String::new(),
    }
}

/// Whether all of `text` matches the sh glob `p` (`*`, `?`, `[…]` with `!`/`^` and ranges,
/// `\\x` for a literal `x`).
fn glob(p: &[char], text: &[char]) -> bool {
    match p.first() {
        None => text.is_empty(),
        Some('*') => (0..=text.len()).any(|k| glob(&p[1..], &text[k..])),
        Some('?') => !text.is_empty() && glob(&p[1..], &text[1..]),
        Some('[') => match (class(&p[1..]), text.first()) {
            (Some((matches, used)), Some(&c)) => matches(c) && glob(&p[1 + used..], &text[1..]),
            (None, Some(&c)) => c == '[' && glob(&p[1..], &text[1..]),
            (_, None) => false,
        },
        Some('\\') if p.len() > 1 => text.first() == Some(&p[1]) && glob(&p[2..], &text[1..]),
        Some(&c) => text.first() == Some(&c) && glob(&p[1..], &text[1..]),
    }
}

/// A bracket class after its `[`: a predicate and how many chars it used (its `]` included).
#[allow(clippy::type_complexity)]
fn class(p: &[char]) -> Option<(Box<dyn Fn(char) -> bool>, usize)> {
    let negate = matches!(p.first(), Some('!' | '^'));
    let mut i = usize::from(negate);
    let mut ranges: Vec<(char, char)> = Vec::new();
    let mut first = true;
    loop {
        let c = *p.get(i)?;
        if c == ']' && !first {
            break;
        }
        first = false;
        if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|&e| e != ']') {
            ranges.push((c, p[i + 2]));
            i += 3;
        } else {
            ranges.push((c, c));
            i += 1;
        }
    }
    let matches = move |c: char| ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != negate;
    Some((Box::new(matches), i + 1))
}

/// Characters that make a command shell code (pipes, redirections, lists, subshells, globs,
/// command substitution, brace and tilde expansion, history, comments).
const METACHARACTERS: &[u8] = b"|&;<>()`*?[]{}~!#";

/// Words that are sh builtins or keywords with no program of the same name on PATH, so a
/// command starting with one of them only works in a shell (`exit 1`, `cd /tmp`, `export X=1`).
const SHELL_ONLY_WORDS: &[&str] = &[
    ".", ":", "alias", "bg", "break", "case", "cd", "command", "continue", "do", "done", "elif",
    "else", "esac", "eval", "exec", "exit", "export", "fc", "fg", "fi", "for", "function",
    "getopts", "hash", "if", "jobs", "local", "read", "readonly", "return", "set", "shift",
    "source", "then", "times", "trap", "type", "ulimit", "umask", "unalias", "unset", "until",
    "wait", "while",
];

/// True when `command` must run through a shell (`sh -c`) to mean what it says; false when the
/// worker can split it into words (shell-words), expand variables in each word itself and exec
/// the program directly.
///
/// A command needs the shell when it contains any of `| & ; < > ( ) ` * ? [ ] { } ~ ! #`, `$(`
/// or a newline; a `{`/`}` that is part of a `${NAME}` or `${10}` reference does not count,
/// but any other brace form (`${VAR:-x}`, `{a,b}`) does. It also needs the shell when it uses
/// the sh special params `$$`, `$@` or `$-`; when it combines `$` with single quotes or
/// backslashes (sh would not expand inside `'…'` or after `\`, and the split words no longer
/// show where quotes were); when its quoting does not parse; when its first word is a variable
/// assignment (`FOO=1 prog`); and when its first word is a shell builtin or keyword with no
/// program of that name (`exit`, `cd`, `export`, `if`, …).
pub fn needs_shell(command: &str) -> bool {
    let bytes = command.as_bytes();
    let mut has_dollar = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\n' {
            return true;
        }
        if b == b'$' {
            has_dollar = true;
            match bytes.get(i + 1) {
                Some(b'(' | b'$' | b'@' | b'-') => return true,
                Some(b'{') => match reference_at(bytes, i) {
                    Reference::Name { end, .. } => {
                        i = end;
                        continue;
                    }
                    _ => return true,
                },
                _ => {}
            }
        } else if METACHARACTERS.contains(&b) {
            return true;
        }
        i += 1;
    }
    if has_dollar && (command.contains('\'') || command.contains('\\')) {
        return true;
    }
    let Ok(words) = shell_words::split(command) else {
        return true;
    };
    let Some(first) = words.first() else {
        return false;
    };
    if SHELL_ONLY_WORDS.contains(&first.as_str()) {
        return true;
    }
    match first.split_once('=') {
        Some((name, _)) => {
            name.bytes().next().is_some_and(is_name_start) && name.bytes().all(is_name_char)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn expands_names_in_both_forms() {
        let l = with(&[("A", "1"), ("B_2", "two"), ("AB", "x")]);
        assert_eq!(expand("$A-${B_2}", &l), "1-two");
        assert_eq!(expand("${A}B", &l), "1B");
        assert_eq!(expand("$AB", &l), "x", "longest name wins");
        assert_eq!(expand("pre/$A/post", &l), "pre/1/post");
    }

    #[test]
    fn expands_positional_params() {
        let l = with(&[("0", "dag"), ("1", "one"), ("2", "two"), ("10", "ten")]);
        assert_eq!(expand("$1 $2 $0", &l), "one two dag");
        assert_eq!(expand("$10", &l), "one0", "as in sh, $10 is $1 then 0");
        assert_eq!(expand("${10}", &l), "ten");
        assert_eq!(expand("$3", &l), "");
    }

    #[test]
    fn unknown_names_expand_to_nothing() {
        let l = with(&[]);
        assert_eq!(expand("a${NOPE}b$NOPE.c", &l), "ab.c");
    }

    #[test]
    fn leaves_what_is_not_a_reference() {
        let l = with(&[("A", "1")]);
        assert_eq!(expand("$", &l), "$");
        assert_eq!(expand("cost: 5$ ", &l), "cost: 5$ ");
        assert_eq!(expand("$$", &l), "$$");
        assert_eq!(expand("$$A", &l), "$$A", "$$ is skipped as a pair");
        assert_eq!(expand("$$$A", &l), "$$1");
        assert_eq!(expand("${A:-x}", &l), "${A:-x}");
        assert_eq!(expand("${", &l), "${");
        assert_eq!(expand("${}", &l), "${}");
        assert_eq!(expand("${1a}", &l), "${1a}");
        assert_eq!(expand("$-x", &l), "$-x");
    }

    #[test]
    fn values_are_inserted_verbatim() {
        let l = with(&[("1", "; rm -rf / $A"), ("A", "oops")]);
        assert_eq!(expand("echo $1", &l), "echo ; rm -rf / $A");
    }

    #[test]
    fn keeps_non_ascii_text() {
        let l = with(&[("X", "é")]);
        assert_eq!(expand("ü$X→${X}ß", &l), "üé→éß");
    }

    fn value(template: &str, vars: &[(&str, &str)]) -> String {
        let l = with(vars);
        expand_value(template, &l)
    }

    #[test]
    fn env_values_take_the_operators_dagu_evaluates() {
        let v = [
            ("A", "hello.tar.gz"),
            ("E", ""),
            ("P", "/a/b/c"),
            ("1", "one"),
        ];
        for (template, want) in [
            (
                "${A:-x} ${E:-x} ${U:-x} ${E-x} ${U-x}",
                "hello.tar.gz x x  x",
            ),
            ("${A:+y} ${E:+y} ${E+y} ${U+y}.", "y  y ."),
            ("${U:-$A/x}", "hello.tar.gz/x"),
            ("${#A} ${#U} ${#1}", "12 0 3"),
            (
                "${A:0:5} ${A:6} ${A: -2} ${A:1:-3} ${A:20}.",
                "hello tar.gz gz ello.tar .",
            ),
            (
                "${A#*.} ${A##*.} ${A%.*} ${A%%.*} ${P##*/} ${P%/*}",
                "tar.gz gz hello.tar hello c /a/b",
            ),
            (
                "${A/l/L} ${A//l/L} ${A/#h/H} ${A/%gz/bz2} ${A//[a-e]/_}",
                "heLlo.tar.gz heLLo.tar.gz Hello.tar.gz hello.tar.bz2 h_llo.t_r.gz",
            ),
            (
                "${A^} ${A^^} ${A,,} ${1:-d}",
                "Hello.tar.gz HELLO.TAR.GZ hello.tar.gz one",
            ),
            (
                "${A:=x} ${U:=x} ${U=x} ${E:?m} ${A?m}",
                "hello.tar.gz ${U:=x} ${U=x} ${E:?m} hello.tar.gz",
            ),
            (
                "\\$A \\\\$A '$A' '${A}' x'$A",
                "$A \\\\hello.tar.gz '$A' '${A}' x'hello.tar.gz",
            ),
            ("$$A ${A.b} ${!A} ${", "$$A ${A.b} ${!A} ${"),
        ] {
            assert_eq!(value(template, &v), want, "{template}");
        }
    }

    #[test]
    fn globs_match_as_in_sh() {
        let g = |p: &str, t: &str| {
            glob(
                &p.chars().collect::<Vec<_>>(),
                &t.chars().collect::<Vec<_>>(),
            )
        };
        assert!(g("*.gz", "a.tar.gz"));
        assert!(g("a?c", "abc"));
        assert!(g("[!a]x", "bx"));
        assert!(!g("[!a]x", "ax"));
        assert!(g("[]]", "]"));
        assert!(g("\\*", "*"));
        assert!(!g("\\*", "a"));
        assert!(g("[", "["));
    }

    #[test]
    fn plain_commands_do_not_need_a_shell() {
        for c in [
            "echo hello",
            "echo $HOME ${HOME} $1 ${10}",
            "printf '%s\\n' hello",
            "python3 -c \"print 1\"",
            "env",
            "echo a=b",
            "",
            "echo 5$",
        ] {
            assert!(!needs_shell(c), "{c:?}");
        }
    }

    #[test]
    fn shell_syntax_needs_a_shell() {
        for c in [
            "echo a | wc",
            "python3 -c \"print(1)\"",
            "a && b",
            "a; b",
            "echo > f",
            "cat < f",
            "(cd /)",
            "echo `date`",
            "echo $(date)",
            "ls *.txt",
            "ls ?",
            "ls [ab]",
            "echo {a,b}",
            "echo ${A:-x}",
            "echo ${A",
            "ls ~",
            "echo !",
            "echo # comment",
            "echo a\necho b",
            "echo $$",
            "echo \"$@\"",
            "echo $-",
            "echo '$HOME'",
            "echo \\$HOME",
            "echo 'unbalanced",
            "FOO=1 env",
            "a=b",
            "exit 1",
            "cd /tmp",
            "export A=1",
            "if true",
        ] {
            assert!(needs_shell(c), "{c:?}");
        }
    }
}
