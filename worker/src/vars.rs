//! Variable expansion in a step's `env` values, `dir` and fast-path command words, and the
//! test that decides whether a `command` needs a shell at all.
//!
//! The grammar is the part of POSIX sh parameter expansion that Dagu DAGs use:
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
//!   name, `${VAR:-default}`, …) is left as it is.
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
