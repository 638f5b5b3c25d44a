//! The Dockerfile frontend: text -> [`Dockerfile`], parsed once.
//!
//! Handles the `escape` parser directive, comments, line continuations,
//! exec (JSON) and shell forms, and every instruction of DESIGN.md's list.
//! Variables are substituted later, by the executor, when ARG and ENV values
//! are known; here each instruction keeps its raw words. Every error names
//! `file:line:column` and the offending text.

pub mod words;

use std::fmt;

/// Where an instruction starts in its file (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}: {text}")]
pub struct ParseError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// The offending instruction as written.
    pub text: String,
}

/// A command in exec form (`["a", "b"]`) or shell form (`a b`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Exec(Vec<String>),
    Shell(String),
}

/// COPY and ADD.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Copy {
    /// `--from=stage|image`
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    /// Raw words: sources then the destination (at least two).
    pub paths: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Healthcheck {
    /// `None` for `HEALTHCHECK NONE`.
    pub command: Option<Command>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub start_period: Option<String>,
    pub retries: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    Run(Command),
    Copy(Copy),
    Add(Copy),
    /// Raw `KEY=VALUE` words (or the legacy `KEY VALUE` as one pair).
    Env(Vec<(String, String)>),
    /// `NAME` or `NAME=default`, raw.
    Arg(Vec<(String, Option<String>)>),
    Label(Vec<(String, String)>),
    Workdir(String),
    User(String),
    Expose(Vec<String>),
    Volume(Vec<String>),
    Entrypoint(Command),
    Cmd(Command),
    Healthcheck(Healthcheck),
    StopSignal(String),
    Shell(Vec<String>),
}

/// One instruction with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub pos: Pos,
    /// The instruction as written, continuations joined.
    pub text: String,
    pub instruction: Instruction,
}

/// `FROM image [AS name]`, raw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub pos: Pos,
    pub text: String,
    pub base: String,
    pub name: Option<String>,
    pub platform: Option<String>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// ARGs before the first FROM (usable in FROM lines).
    pub global_args: Vec<(String, Option<String>)>,
    pub stages: Vec<Stage>,
    pub escape: char,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A logical line: an instruction with continuations joined.
struct Logical {
    pos: Pos,
    text: String,
}

/// Reads parser directives, drops comments and joins continuations.
fn logical_lines(src: &str) -> (char, Vec<Logical>) {
    let mut escape = '\\';
    let mut lines = src.lines().enumerate().peekable();
    // Directives: `# key=value` lines at the very top.
    while let Some((_, l)) = lines.peek() {
        let Some(d) = l.trim().strip_prefix('#') else { break };
        let Some((k, v)) = d.split_once('=') else { break };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "escape" && (v == "`" || v == "\\") {
            escape = v.chars().next().unwrap_or('\\');
        } else if k != "syntax" && k != "check" {
            break;
        }
        lines.next();
    }
    let mut out = Vec::new();
    let mut cur: Option<Logical> = None;
    for (n, raw) in lines {
        let trimmed = raw.trim_start();
        if trimmed.starts_with('#') || (trimmed.is_empty() && cur.is_some()) {
            continue;
        }
        if trimmed.is_empty() {
            continue;
        }
        let body = raw.trim_end();
        let (body, continues) = match body.strip_suffix(escape) {
            Some(b) => (b, true),
            None => (body, false),
        };
        match &mut cur {
            // As BuildKit: the escape and newline go, the rest is joined as is.
            Some(l) => l.text.push_str(body.trim_start()),
            None => {
                cur = Some(Logical {
                    pos: Pos {
                        line: n + 1,
                        column: raw.len() - trimmed.len() + 1,
                    },
                    text: body.trim_start().to_string(),
                })
            }
        }
        if !continues {
            out.extend(cur.take());
        }
    }
    out.extend(cur);
    (escape, out)
}

/// Parses `src` (named `file` in errors).
pub fn parse(src: &str, file: &str) -> Result<Dockerfile, ParseError> {
    let (escape, lines) = logical_lines(src);
    let mut df = Dockerfile {
        global_args: Vec::new(),
        stages: Vec::new(),
        escape,
    };
    for line in lines {
        let err = |message: String| ParseError {
            file: file.to_string(),
            line: line.pos.line,
            column: line.pos.column,
            message,
            text: line.text.clone(),
        };
        let (keyword, rest) = match line.text.split_once(char::is_whitespace) {
            Some((k, r)) => (k, r.trim()),
            None => (line.text.as_str(), ""),
        };
        let keyword = keyword.to_ascii_uppercase();
        if rest.starts_with("<<") && matches!(keyword.as_str(), "RUN" | "COPY" | "ADD") {
            return Err(err("heredocs are not supported".into()));
        }
        if keyword == "FROM" {
            df.stages
                .push(parse_from(rest, line.pos, &line.text, escape).map_err(err)?);
            continue;
        }
        let instruction = parse_instruction(&keyword, rest, escape).map_err(err)?;
        match (df.stages.last_mut(), instruction) {
            (None, Instruction::Arg(args)) => df.global_args.extend(args),
            (None, _) => return Err(err("expected FROM before this instruction".into())),
            (Some(stage), instruction) => stage.steps.push(Step {
                pos: line.pos,
                text: line.text.clone(),
                instruction,
            }),
        }
    }
    if df.stages.is_empty() {
        return Err(ParseError {
            file: file.to_string(),
            line: 1,
            column: 1,
            message: "no FROM instruction".into(),
            text: String::new(),
        });
    }
    Ok(df)
}

fn parse_from(rest: &str, pos: Pos, text: &str, escape: char) -> Result<Stage, String> {
    let (flags, args) = flags(rest, escape)?;
    let mut platform = None;
    for (k, v) in flags {
        match k.as_str() {
            "platform" => platform = Some(v),
            _ => return Err(format!("unknown flag --{k} for FROM")),
        }
    }
    let (base, name) = match args.as_slice() {
        [base] => (base.clone(), None),
        [base, as_, name] if as_.eq_ignore_ascii_case("as") => {
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !valid {
                return Err(format!("invalid stage name {name:?}"));
            }
            (base.clone(), Some(name.to_ascii_lowercase()))
        }
        _ => return Err("expected FROM IMAGE [AS NAME]".into()),
    };
    Ok(Stage {
        pos,
        text: text.to_string(),
        base,
        name,
        platform,
        steps: Vec::new(),
    })
}

/// `--name=value` flags, in order.
type Flags = Vec<(String, String)>;

/// Leading `--name=value` flags and the remaining raw words.
fn flags(rest: &str, escape: char) -> Result<(Flags, Vec<String>), String> {
    let all = words::split(rest, escape)?;
    let mut flags = Vec::new();
    let mut i = 0;
    while let Some(w) = all.get(i).and_then(|w| w.strip_prefix("--")) {
        let (k, v) = w.split_once('=').unwrap_or((w, ""));
        flags.push((k.to_string(), v.to_string()));
        i += 1;
    }
    Ok((flags, all[i..].to_vec()))
}

/// Exec form if `rest` is a JSON array of strings, else shell form.
fn command(rest: &str) -> Result<Command, String> {
    if rest.starts_with('[') {
        if let Ok(args) = serde_json::from_str::<Vec<String>>(rest) {
            return Ok(Command::Exec(args));
        }
    }
    if rest.is_empty() {
        return Err("missing command".into());
    }
    Ok(Command::Shell(rest.to_string()))
}

/// `KEY=VALUE ...`, or the legacy single `KEY VALUE...`.
fn pairs(rest: &str, escape: char, legacy: bool) -> Result<Vec<(String, String)>, String> {
    let ws = words::split(rest, escape)?;
    if ws.is_empty() {
        return Err("expected KEY=VALUE".into());
    }
    if !ws[0].contains('=') {
        if !legacy || ws.len() < 2 {
            return Err(format!("expected KEY=VALUE, got {:?}", ws[0]));
        }
        let value = rest[ws[0].len()..].trim().to_string();
        return Ok(vec![(ws[0].clone(), value)]);
    }
    ws.iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(format!("expected KEY=VALUE, got {w:?}")),
        })
        .collect()
}

fn one_arg(rest: &str, what: &str) -> Result<String, String> {
    if rest.is_empty() {
        return Err(format!("{what} needs an argument"));
    }
    Ok(rest.to_string())
}

fn parse_instruction(keyword: &str, rest: &str, escape: char) -> Result<Instruction, String> {
    Ok(match keyword {
        "RUN" => {
            let (flags, _) = flags(rest, escape)?;
            if let Some((k, _)) = flags.first() {
                return Err(format!("RUN --{k} is not supported"));
            }
            Instruction::Run(command(rest)?)
        }
        "COPY" | "ADD" => {
            let (flags, paths) = if rest.contains('[') && rest.trim_end().ends_with(']') {
                // Exec form: flags first, then a JSON array.
                let start = rest.find('[').unwrap_or(0);
                let (f, _) = flags(&rest[..start], escape)?;
                let p: Vec<String> =
                    serde_json::from_str(&rest[start..]).map_err(|e| format!("bad JSON array: {e}"))?;
                (
                    f,
                    p.into_iter()
                        .map(|s| format!("'{}'", s.replace('\'', "'\\''")))
                        .collect(),
                )
            } else {
                flags(rest, escape)?
            };
            let mut c = Copy {
                paths,
                ..Default::default()
            };
            for (k, v) in flags {
                match k.as_str() {
                    "from" if keyword == "COPY" => c.from = Some(v),
                    "chown" => c.chown = Some(v),
                    "chmod" => c.chmod = Some(v),
                    _ => return Err(format!("unknown flag --{k} for {keyword}")),
                }
            }
            if c.paths.len() < 2 {
                return Err(format!("{keyword} needs at least one source and a destination"));
            }
            if keyword == "COPY" {
                Instruction::Copy(c)
            } else {
                Instruction::Add(c)
            }
        }
        "ENV" => Instruction::Env(pairs(rest, escape, true)?),
        "LABEL" => Instruction::Label(pairs(rest, escape, false)?),
        "ARG" => {
            let ws = words::split(rest, escape)?;
            if ws.is_empty() {
                return Err("ARG needs a name".into());
            }
            Instruction::Arg(
                ws.into_iter()
                    .map(|w| match w.split_once('=') {
                        Some((k, v)) => (k.to_string(), Some(v.to_string())),
                        None => (w, None),
                    })
                    .collect(),
            )
        }
        "WORKDIR" => Instruction::Workdir(one_arg(rest, "WORKDIR")?),
        "USER" => Instruction::User(one_arg(rest, "USER")?),
        "STOPSIGNAL" => Instruction::StopSignal(one_arg(rest, "STOPSIGNAL")?),
        "EXPOSE" => Instruction::Expose(words::split(rest, escape)?),
        "VOLUME" => match command(rest)? {
            Command::Exec(v) => Instruction::Volume(v),
            Command::Shell(s) => Instruction::Volume(words::split(&s, escape)?),
        },
        "ENTRYPOINT" => Instruction::Entrypoint(command(rest)?),
        "CMD" => Instruction::Cmd(command(rest)?),
        "SHELL" => match command(rest)? {
            Command::Exec(v) if !v.is_empty() => Instruction::Shell(v),
            _ => return Err("SHELL needs the JSON form, e.g. [\"/bin/sh\", \"-c\"]".into()),
        },
        "HEALTHCHECK" => {
            let (flags, ws) = flags(rest, escape)?;
            let mut h = Healthcheck::default();
            for (k, v) in flags {
                match k.as_str() {
                    "interval" => h.interval = Some(v),
                    "timeout" => h.timeout = Some(v),
                    "start-period" => h.start_period = Some(v),
                    "retries" => h.retries = Some(v),
                    _ => return Err(format!("unknown flag --{k} for HEALTHCHECK")),
                }
            }
            match ws.first().map(|w| w.to_ascii_uppercase()) {
                Some(w) if w == "NONE" => {}
                Some(w) if w == "CMD" => {
                    let mut after = rest.trim_start();
                    while after.starts_with("--") {
                        let end = after.find(char::is_whitespace).unwrap_or(after.len());
                        after = after[end..].trim_start();
                    }
                    let cmd = after
                        .get(..3)
                        .filter(|k| k.eq_ignore_ascii_case("CMD"))
                        .and_then(|_| after.get(3..))
                        .ok_or("expected CMD after the HEALTHCHECK options")?;
                    h.command = Some(command(cmd.trim())?);
                }
                _ => return Err("expected HEALTHCHECK [OPTIONS] CMD command, or HEALTHCHECK NONE".into()),
            }
            Instruction::Healthcheck(h)
        }
        "MAINTAINER" => Instruction::Label(vec![("maintainer".into(), rest.to_string())]),
        "ONBUILD" => return Err("ONBUILD is not supported".into()),
        other => return Err(format!("unknown instruction {other}")),
    })
}

#[cfg(test)]
mod tests;
