//! Words of an instruction's arguments, and `$VAR` substitution, as
//! Docker's shell lexer does them for ENV, LABEL, ARG, COPY, ADD, WORKDIR,
//! USER, EXPOSE, VOLUME, STOPSIGNAL and FROM.

use std::collections::BTreeMap;

/// Splits `text` on unquoted whitespace; quotes and escapes are kept, so
/// that [`expand`] can process each word later with the right variables.
pub fn split(text: &str, escape: char) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    let mut in_word = false;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (q, c) if c == escape && q != Some('\'') => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                cur.push(c);
                in_word = true;
            }
            (Some(q), c) if c == q => {
                quote = None;
                cur.push(c);
            }
            _ => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("unterminated {q} quote"));
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// Processes one word: removes quotes and escapes and substitutes `$VAR`,
/// `${VAR}`, `${VAR:-default}`, `${VAR:+alternative}` from `vars` (unset
/// variables are empty; nothing is substituted inside single quotes).
pub fn expand(word: &str, vars: &BTreeMap<String, String>, escape: char) -> Result<String, String> {
    let chars: Vec<char> = word.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let mut quote: Option<char> = None;
    while i < chars.len() {
        let c = chars[i];
        match (quote, c) {
            (Some('\''), '\'') => quote = None,
            (Some('\''), c) => out.push(c),
            (_, c) if c == escape => {
                i += 1;
                if let Some(&n) = chars.get(i) {
                    // Inside double quotes only \" \\ \$ are escapes.
                    if quote == Some('"') && !matches!(n, '"' | '$') && n != escape {
                        out.push(c);
                    }
                    out.push(n);
                }
            }
            (None, '"' | '\'') => quote = Some(c),
            (Some('"'), '"') => quote = None,
            (_, '$') => {
                let (value, used) = variable(&chars[i + 1..], vars, escape)?;
                out.push_str(&value);
                i += used;
            }
            (_, c) => out.push(c),
        }
        i += 1;
    }
    if let Some(q) = quote {
        return Err(format!("unterminated {q} quote in {word:?}"));
    }
    Ok(out)
}

/// Substitutes variables in `text` as a here-document's content is:
/// `$VAR` and `${VAR...}` replaced, an escaped `$` kept as `$`, quotes and
/// everything else as written.
pub fn substitute(text: &str, vars: &BTreeMap<String, String>, escape: char) -> Result<String, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            c if c == escape && chars.get(i + 1) == Some(&'$') => {
                out.push('$');
                i += 1;
            }
            '$' => {
                // A `${...}` ends on its own line.
                let end = chars[i..]
                    .iter()
                    .position(|&c| c == '\n')
                    .map_or(chars.len(), |p| i + p);
                let (value, used) = variable(&chars[i + 1..end], vars, escape)?;
                out.push_str(&value);
                i += used;
            }
            c => out.push(c),
        }
        i += 1;
    }
    Ok(out)
}

/// Splits `text` into words and expands each.
pub fn expand_all(text: &str, vars: &BTreeMap<String, String>, escape: char) -> Result<Vec<String>, String> {
    split(text, escape)?.iter().map(|w| expand(w, vars, escape)).collect()
}

/// The value of the variable reference after a `$`, and how many chars it used.
fn variable(rest: &[char], vars: &BTreeMap<String, String>, escape: char) -> Result<(String, usize), String> {
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    match rest.first() {
        Some('{') => {
            let close = rest
                .iter()
                .position(|&c| c == '}')
                .ok_or_else(|| "missing '}' in variable substitution".to_string())?;
            let inner: String = rest[1..close].iter().collect();
            let (name, op) = match inner.find(':') {
                Some(p) => (&inner[..p], Some(&inner[p..])),
                None => (inner.as_str(), None),
            };
            if name.is_empty() || !name.chars().all(name_char) {
                return Err(format!("bad variable name in ${{{inner}}}"));
            }
            let value = vars.get(name).filter(|v| !v.is_empty());
            let out = match op {
                None => value.cloned().unwrap_or_default(),
                Some(op) if op.starts_with(":-") => match value {
                    Some(v) => v.clone(),
                    None => expand(&op[2..], vars, escape)?,
                },
                Some(op) if op.starts_with(":+") => match value {
                    Some(_) => expand(&op[2..], vars, escape)?,
                    None => String::new(),
                },
                Some(op) => return Err(format!("unsupported modifier {op:?} in ${{{inner}}}")),
            };
            Ok((out, close + 1))
        }
        Some(&c) if name_char(c) && !c.is_ascii_digit() => {
            let len = rest.iter().take_while(|&&c| name_char(c)).count();
            let name: String = rest[..len].iter().collect();
            Ok((vars.get(&name).cloned().unwrap_or_default(), len))
        }
        // A lone `$` stays as it is.
        _ => Ok(("$".to_string(), 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        [("A", "1"), ("B", "two words"), ("EMPTY", "")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn substitution_like_docker() {
        let v = vars();
        let e = |w: &str| expand(w, &v, '\\').unwrap();
        assert_eq!(e("$A"), "1");
        assert_eq!(e("${A}x"), "1x");
        assert_eq!(e("${NOPE:-def}"), "def");
        assert_eq!(e("${EMPTY:-def}"), "def");
        assert_eq!(e("${A:-def}"), "1");
        assert_eq!(e("${A:+alt}"), "alt");
        assert_eq!(e("${NOPE:+alt}"), "");
        assert_eq!(e("'$A'"), "$A");
        assert_eq!(e("\"$A\""), "1");
        assert_eq!(e("\\$A"), "$A");
        assert_eq!(e("a$"), "a$");
        assert!(expand("${A", &v, '\\').is_err());
        assert!(expand("${A:?x}", &v, '\\').is_err());
    }

    #[test]
    fn heredoc_content_substitutes_variables_only() {
        let v = vars();
        assert_eq!(
            substitute("a=$A \"${B}\" '$A' \\$A ${NOPE:-x}\n", &v, '\\').unwrap(),
            "a=1 \"two words\" '1' $A x\n"
        );
    }

    #[test]
    fn splitting_keeps_quoted_words_whole() {
        assert_eq!(
            split(r#"a=1 b="x y" c='p q' d=e\ f"#, '\\').unwrap(),
            ["a=1", "b=\"x y\"", "c='p q'", "d=e\\ f"]
        );
        assert_eq!(
            expand_all(r#"b="x y" d=e\ f"#, &vars(), '\\').unwrap(),
            ["b=x y", "d=e f"]
        );
        assert!(split("a=\"x", '\\').is_err());
    }
}
