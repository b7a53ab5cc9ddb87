//! The format of Dagu's `dotenv` files (loaded by [`super::load_dotenv`]): godotenv's,
//! without variable substitution: `NAME=value` or `export NAME=value`, `#` comment lines, an
//! unquoted value trimmed and cut at ` #`, a `'…'` value literal, a `"…"` value with `\n`,
//! `\t`, `\"` and `\\` escapes (and able to span lines).

/// The `NAME=value` pairs of a dotenv file, in order (see the module doc).
pub(crate) fn parse(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < text.len() {
        let line_end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
        let line = &text[pos..line_end];
        let mut next = line_end + 1;
        let trimmed = line.trim_start();
        let body = trimmed.strip_prefix("export ").unwrap_or(trimmed);
        if let Some((name, value)) = body.split_once('=').filter(|_| !trimmed.starts_with('#')) {
            let name = name.trim();
            let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
            let value = value.trim_start();
            let parsed = if let Some(quoted) = value.strip_prefix('\'') {
                quoted
                    .split_once('\'')
                    .map_or(quoted.trim_end(), |(v, _)| v)
                    .to_string()
            } else if value.starts_with('"') {
                // A double-quoted value may span lines: read up to its closing quote.
                let open = line_end - value.len() + 1;
                let (v, used) = double_quoted(&text[open..]);
                let close = open + used;
                next = text[close..]
                    .find('\n')
                    .map_or(text.len(), |i| close + i + 1);
                v
            } else {
                let cut = value.find(" #").map_or(value, |i| &value[..i]);
                cut.trim_end().to_string()
            };
            if valid {
                out.push((name.to_string(), parsed));
            }
        }
        pos = next;
    }
    out
}

/// The value of a `"…"` string whose opening quote is already consumed, and how many bytes of
/// `text` it used (its closing quote included).
fn double_quoted(text: &str) -> (String, usize) {
    let mut out = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (out, i + 1),
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, 'r')) => out.push('\r'),
                Some((_, other)) => out.push(other),
                None => break,
            },
            other => out.push(other),
        }
    }
    (out, text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_godotenv_forms() {
        let text = "# comment\nA=1\nexport B = two words  # note\nC='lit $X # x'\nD=\"a\\nb \\\"q\\\"\"\n\nbad line\n1X=no\nE=\"multi\nline\"\nF=\n";
        let got = parse(text);
        let want = [
            ("A", "1"),
            ("B", "two words"),
            ("C", "lit $X # x"),
            ("D", "a\nb \"q\""),
            ("E", "multi\nline"),
            ("F", ""),
        ];
        let got: Vec<(&str, &str)> = got.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, want);
    }
}
