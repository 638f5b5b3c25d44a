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
    /// Raw words: sources then the destination (at least two). A
    /// heredoc source is the heredoc's name.
    pub paths: Vec<String>,
    /// Inline sources (`COPY <<EOF /dest`), in order.
    pub heredocs: Vec<Heredoc>,
    /// `--link`: accepted; ingot's COPY layers never depend on the layers
    /// below anyway.
    pub link: bool,
    /// `--parents` (COPY): each source keeps its path from the context.
    pub parents: bool,
    /// `--exclude=PATTERN`, repeatable: sources matching one are skipped.
    pub exclude: Vec<String>,
    /// `--checksum=sha256:...` (ADD of a URL): the download must hash to it.
    pub checksum: Option<String>,
}

/// A here-document of RUN, COPY or ADD (`<<NAME`, `<<-NAME`, `<<"NAME"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The word after `<<`, quotes removed.
    pub name: String,
    /// Its lines, each ending in a newline (leading tabs stripped for `<<-`).
    pub content: String,
    /// An unquoted name: variables in the content are substituted (COPY,
    /// ADD); a quoted one keeps it as written.
    pub expand: bool,
}

/// RUN's network (`--network=`), as BuildKit's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunNetwork {
    /// The build's network (`ingot build --network`; a bridge with NAT
    /// unless it says otherwise).
    Default,
    /// Loopback only.
    None,
    /// The host's network (needs `ingot build --allow network.host`).
    Host,
}

/// RUN: its command and flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub command: Command,
    /// `--network=`; `None`: not given (the build's default).
    pub network: Option<RunNetwork>,
    /// `--mount=`, in order.
    pub mounts: Vec<Mount>,
}

/// How concurrent builds share a cache mount (`sharing=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Used by every build at once (the default).
    Shared,
    /// A build that finds it in use gets an empty one of its own.
    Private,
    /// A build waits until no other uses it.
    Locked,
}

/// A `RUN --mount=...`, as BuildKit reads it (values raw: variables are
/// substituted by the executor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// A directory kept between builds of this root, by `id` (default: the
    /// target); never in a layer.
    Cache {
        target: String,
        id: Option<String>,
        sharing: Sharing,
        read_only: bool,
        /// Owner and mode of the directory when it is made.
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
    },
    /// A secret given to the build (`ingot build --secret id=...`), as a
    /// read-only file (default `/run/secrets/ID`); never in a layer.
    Secret {
        id: String,
        target: Option<String>,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
    },
    /// Files of the context (or of a stage or image, `from=`), read-only
    /// unless `rw`; writes are thrown away.
    Bind {
        target: String,
        source: Option<String>,
        from: Option<String>,
        read_write: bool,
    },
    /// An empty tmpfs.
    Tmpfs { target: String },
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
    Run(Run),
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
    /// `ONBUILD INSTRUCTION`: a trigger kept in the image's config, run
    /// when a build starts FROM it (the instruction as written).
    Onbuild(String),
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
    /// A `# syntax=` directive: accepted and ignored (ingot's frontend reads
    /// the file), so the executor notes it.
    pub syntax: Option<String>,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A logical line: an instruction with continuations joined, and the
/// here-documents that follow it.
struct Logical {
    pos: Pos,
    text: String,
    heredocs: Vec<Heredoc>,
    /// `text`, then each here-document's lines and terminator as written.
    full: String,
}

/// A `<<NAME` marker of an instruction.
struct Marker {
    /// The word as written (`<<-"EOF"`).
    word: String,
    /// The delimiter, quotes removed.
    name: String,
    /// `<<-`: leading tabs are stripped.
    chomp: bool,
    /// A quoted delimiter: the content is taken as written.
    quoted: bool,
}

/// The heredoc markers of RUN, COPY or ADD's `rest` (after the keyword),
/// found among its shell words (a `<<` inside quotes is text, and the JSON
/// form has none). A delimiter is a word of letters, digits, `_`, `-` and
/// `.`, optionally in matching quotes; any other `<<word` is an error.
fn heredoc_markers(rest: &str, escape: char) -> Result<Vec<Marker>, String> {
    let (_, ws) = flags(rest, escape)?;
    if ws.first().is_some_and(|w| w.starts_with('[')) {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for word in ws {
        let Some(after) = word.strip_prefix("<<") else { continue };
        if after.starts_with('<') {
            continue; // `<<<`: a here-string, not a heredoc
        }
        let (chomp, delim) = match after.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, after),
        };
        let (quoted, name) = match delim.chars().next() {
            Some(q @ ('"' | '\'')) => match delim[1..].strip_suffix(q) {
                Some(inner) if !inner.contains(['"', '\'']) => (true, inner),
                _ => return Err(format!("heredoc {word}: its quotes do not match")),
            },
            _ => (false, delim),
        };
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid {
            return Err(format!(
                "heredoc {word}: a delimiter is letters, digits, '_', '-' and '.' (optionally quoted)"
            ));
        }
        out.push(Marker {
            word: word.clone(),
            name: name.to_string(),
            chomp,
            quoted,
        });
    }
    Ok(out)
}

/// Reads the here-documents `l` (a complete RUN, COPY or ADD) announces
/// from `lines`, into `l.heredocs` and `l.full`.
fn read_heredocs<'a>(
    l: &mut Logical,
    lines: &mut impl Iterator<Item = (usize, &'a str)>,
    escape: char,
    file: &str,
) -> Result<(), ParseError> {
    let fail = |message: String| ParseError {
        file: file.to_string(),
        line: l.pos.line,
        column: l.pos.column,
        message,
        text: l.text.clone(),
    };
    let (keyword, rest) = l.text.split_once(char::is_whitespace).unwrap_or((&l.text, ""));
    if !matches!(keyword.to_ascii_uppercase().as_str(), "RUN" | "COPY" | "ADD") {
        l.full = l.text.clone();
        return Ok(());
    }
    let markers = heredoc_markers(rest, escape).map_err(&fail)?;
    let mut heredocs = Vec::new();
    let mut full = l.text.clone();
    for m in markers {
        let mut content = String::new();
        let mut closed = false;
        for (_, raw) in lines.by_ref() {
            full.push('\n');
            full.push_str(raw);
            let line = if m.chomp { raw.trim_start_matches('\t') } else { raw };
            if line == m.name {
                closed = true;
                break;
            }
            content.push_str(line);
            content.push('\n');
        }
        if !closed {
            return Err(fail(format!(
                "heredoc <<{} is never closed (no line reading {})",
                m.name, m.name
            )));
        }
        heredocs.push(Heredoc {
            name: m.name,
            content,
            expand: !m.quoted,
        });
    }
    l.heredocs = heredocs;
    l.full = full;
    Ok(())
}

/// Reads parser directives, drops comments, joins continuations and reads
/// the here-documents of RUN, COPY and ADD; a heredoc never closed is an
/// error naming its instruction.
fn logical_lines(src: &str, file: &str) -> Result<(char, Option<String>, Vec<Logical>), ParseError> {
    let mut escape = '\\';
    let mut syntax = None;
    let mut lines = src.lines().enumerate().peekable();
    // Directives: `# key=value` lines at the very top.
    while let Some((_, l)) = lines.peek() {
        let Some(d) = l.trim().strip_prefix('#') else { break };
        let Some((k, v)) = d.split_once('=') else { break };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "escape" && (v == "`" || v == "\\") {
            escape = v.chars().next().unwrap_or('\\');
        } else if k == "syntax" {
            syntax = Some(v.to_string());
        } else if k != "check" {
            break;
        }
        lines.next();
    }
    let mut out: Vec<Logical> = Vec::new();
    let mut cur: Option<Logical> = None;
    while let Some((n, raw)) = lines.next() {
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
                    heredocs: Vec::new(),
                    full: String::new(),
                })
            }
        }
        if continues {
            continue;
        }
        let Some(mut l) = cur.take() else { continue };
        read_heredocs(&mut l, &mut lines, escape, file)?;
        out.push(l);
    }
    // A file that ends inside a continuation: the instruction as it stands.
    if let Some(mut l) = cur {
        read_heredocs(&mut l, &mut lines, escape, file)?;
        out.push(l);
    }
    Ok((escape, syntax, out))
}

/// Parses `src` (named `file` in errors).
pub fn parse(src: &str, file: &str) -> Result<Dockerfile, ParseError> {
    let (escape, syntax, lines) = logical_lines(src, file)?;
    let mut df = Dockerfile {
        global_args: Vec::new(),
        stages: Vec::new(),
        escape,
        syntax,
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
        if keyword == "FROM" {
            df.stages
                .push(parse_from(rest, line.pos, &line.text, escape).map_err(err)?);
            continue;
        }
        let instruction = match line.heredocs.is_empty() {
            true => parse_instruction(&keyword, rest, escape),
            false => with_heredocs(&keyword, rest, &line, escape),
        }
        .map_err(err)?;
        match (df.stages.last_mut(), instruction) {
            (None, Instruction::Arg(args)) => df.global_args.extend(args),
            (None, _) => return Err(err("expected FROM before this instruction".into())),
            (Some(stage), instruction) => stage.steps.push(Step {
                pos: line.pos,
                // The instruction line: heredoc content is in the
                // instruction (and so in the cache key), not in messages.
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

/// An ONBUILD trigger of a base image, read as the instruction it is
/// (`text`, as the base's config keeps it).
pub fn parse_trigger(text: &str, escape: char) -> Result<Instruction, String> {
    let (keyword, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    let keyword = keyword.to_ascii_uppercase();
    if matches!(keyword.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
        return Err(format!("ONBUILD trigger {text:?}: {keyword} cannot be triggered"));
    }
    parse_instruction(&keyword, rest.trim(), escape).map_err(|e| format!("ONBUILD trigger {text:?}: {e}"))
}

/// RUN, COPY or ADD followed by here-documents, as BuildKit reads them.
/// RUN: a command that is one heredoc alone runs its content as a shell
/// script; otherwise the shell gets the whole text and reads the heredocs
/// itself (`RUN python3 <<EOF`, `RUN cat <<EOF >file`). COPY and ADD: each
/// heredoc is a source file named after it.
fn with_heredocs(keyword: &str, rest: &str, line: &Logical, escape: char) -> Result<Instruction, String> {
    let markers = heredoc_markers(rest, escape)?;
    match keyword {
        "RUN" => {
            let ((network, mounts), command) = run_flags(rest)?;
            let (_, ws) = flags(command, escape)?;
            if command.starts_with('[') {
                return Err("a heredoc needs RUN's shell form".into());
            }
            let run = |command| {
                Instruction::Run(Run {
                    command,
                    network,
                    mounts: mounts.clone(),
                })
            };
            if ws.len() == 1 && markers.len() == 1 && ws[0] == markers[0].word {
                let script = &line.heredocs[0].content;
                if script.starts_with("#!") {
                    return Err(
                        "a heredoc script with #! is not supported: name its interpreter (RUN python3 <<EOF)".into(),
                    );
                }
                return Ok(run(Command::Shell(script.clone())));
            }
            // The shell reads the heredocs: everything after RUN and its
            // flags, as written.
            let start = line.full.len() - line.full.trim_start_matches(|c: char| !c.is_whitespace()).len();
            let (_, text) = run_flags(&line.full[start..])?;
            Ok(run(Command::Shell(text.to_string())))
        }
        "COPY" | "ADD" => {
            let (Instruction::Copy(mut c) | Instruction::Add(mut c)) = parse_instruction(keyword, rest, escape)? else {
                return Err(format!("{keyword}: expected sources and a destination"));
            };
            // Every source is one of the heredocs, in order; the
            // destination is not.
            let dest = c.paths.len() - 1;
            if c.paths[..dest].len() != markers.len() || c.paths[..dest].iter().zip(&markers).any(|(p, m)| *p != m.word)
            {
                return Err(match markers.iter().any(|m| m.word == c.paths[dest]) {
                    true => "a heredoc cannot be the destination".into(),
                    false => "a step with heredocs copies heredocs only (copy files in a step of their own)".into(),
                });
            }
            for (p, m) in c.paths.iter_mut().zip(&markers) {
                if m.name.starts_with('.') {
                    return Err(format!("heredoc <<{}: a file name cannot start with '.'", m.name));
                }
                *p = m.name.clone();
            }
            c.heredocs = line.heredocs.clone();
            Ok(if keyword == "COPY" {
                Instruction::Copy(c)
            } else {
                Instruction::Add(c)
            })
        }
        _ => Err(format!("{keyword} takes no heredoc")),
    }
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

/// RUN's leading `--flag=value` words, and the command text after them
/// (as written: a shell form's quoting is the shell's).
fn run_flags(rest: &str) -> Result<(RunFlags, &str), String> {
    let mut network = None;
    let mut mounts = Vec::new();
    let mut rest = rest.trim_start();
    while let Some(flag) = rest.strip_prefix("--") {
        let end = flag.find(char::is_whitespace).unwrap_or(flag.len());
        let (k, v) = flag[..end].split_once('=').unwrap_or((&flag[..end], ""));
        match k {
            "network" => {
                network = Some(match v {
                    "default" => RunNetwork::Default,
                    "none" => RunNetwork::None,
                    "host" => RunNetwork::Host,
                    _ => return Err(format!("RUN --network={v}: expected default, none or host")),
                })
            }
            "mount" => mounts.push(mount(v)?),
            _ => return Err(format!("unknown flag --{k} for RUN")),
        }
        rest = flag[end..].trim_start();
    }
    Ok(((network, mounts), rest))
}

/// RUN's flags: `--network`, `--mount`s.
type RunFlags = (Option<RunNetwork>, Vec<Mount>);

/// One `--mount=` value: `type=cache,target=/root/.cache,...`.
fn mount(spec: &str) -> Result<Mount, String> {
    let bad = |why: String| format!("RUN --mount={spec}: {why}");
    let mut kind = "bind";
    let mut opts: Vec<(&str, Option<&str>)> = Vec::new();
    for part in spec.split(',') {
        let (k, v) = match part.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (part, None),
        };
        if k == "type" {
            kind = v.unwrap_or_default();
        } else {
            opts.push((k, v));
        }
    }
    let (mut target, mut id, mut source, mut from) = (None, None, None, None);
    let (mut sharing, mut read_only, mut read_write) = (Sharing::Shared, false, false);
    let (mut mode, mut uid, mut gid) = (None, None, None);
    let flag = |k: &str, v: Option<&str>| match v {
        None | Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(bad(format!("{k}={other}: expected true or false"))),
    };
    let value = |k: &str, v: Option<&str>| match v {
        Some(v) if !v.is_empty() => Ok(v.to_string()),
        _ => Err(bad(format!("{k} needs a value"))),
    };
    let number = |k: &str, v: Option<&str>, radix: u32| {
        let v = value(k, v)?;
        u32::from_str_radix(&v, radix).map_err(|_| bad(format!("{k}={v}: expected a number")))
    };
    for (k, v) in opts {
        match (kind, k) {
            (_, "target" | "dst" | "destination") => target = Some(value(k, v)?),
            ("cache" | "secret", "id") => id = Some(value(k, v)?),
            ("cache", "sharing") => {
                sharing = match v {
                    Some("shared") => Sharing::Shared,
                    Some("private") => Sharing::Private,
                    Some("locked") => Sharing::Locked,
                    _ => return Err(bad("sharing: expected shared, private or locked".into())),
                }
            }
            ("cache", "readonly" | "ro") => read_only = flag(k, v)?,
            ("bind", "readonly" | "ro") => read_write = !flag(k, v)?,
            ("bind", "rw" | "readwrite") => read_write = flag(k, v)?,
            ("bind", "source" | "src") => source = Some(value(k, v)?),
            ("bind", "from") => from = Some(value(k, v)?),
            ("cache" | "secret", "mode") => mode = Some(number(k, v, 8)?),
            ("cache" | "secret", "uid") => uid = Some(number(k, v, 10)?),
            ("cache" | "secret", "gid") => gid = Some(number(k, v, 10)?),
            // ingot refuses a missing secret whatever this says.
            ("secret", "required") => {
                flag(k, v)?;
            }
            ("cache" | "bind" | "secret" | "tmpfs", _) => {
                return Err(bad(format!("unknown option {k:?} for type={kind}")))
            }
            _ => {
                return Err(bad(format!(
                    "unknown mount type {kind:?} (expected cache, secret, bind or tmpfs)"
                )))
            }
        }
    }
    let needs_target = |t: Option<String>| t.ok_or_else(|| bad(format!("type={kind} needs a target")));
    Ok(match kind {
        "cache" => Mount::Cache {
            target: needs_target(target)?,
            id,
            sharing,
            read_only,
            mode,
            uid,
            gid,
        },
        "secret" => {
            let id = match (id, &target) {
                (Some(id), _) => id,
                (None, Some(t)) => t.rsplit('/').next().unwrap_or_default().to_string(),
                (None, None) => return Err(bad("type=secret needs an id".into())),
            };
            Mount::Secret {
                id,
                target,
                mode,
                uid,
                gid,
            }
        }
        "bind" => Mount::Bind {
            target: needs_target(target)?,
            source,
            from,
            read_write,
        },
        "tmpfs" => Mount::Tmpfs {
            target: needs_target(target)?,
        },
        _ => {
            return Err(bad(format!(
                "unknown mount type {kind:?} (expected cache, secret, bind or tmpfs)"
            )))
        }
    })
}

/// A flag that is on when named bare or `=true`.
fn bool_flag(k: &str, v: &str) -> Result<bool, String> {
    match v {
        "" | "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("--{k}={v}: expected true or false")),
    }
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
            let ((network, mounts), rest) = run_flags(rest)?;
            Instruction::Run(Run {
                command: command(rest)?,
                network,
                mounts,
            })
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
                    "link" => c.link = bool_flag(&k, &v)?,
                    "parents" if keyword == "COPY" => c.parents = bool_flag(&k, &v)?,
                    "exclude" if !v.is_empty() => c.exclude.push(v),
                    "checksum" if keyword == "ADD" => {
                        let ok = v
                            .strip_prefix("sha256:")
                            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
                        if !ok {
                            return Err(format!("--checksum={v}: expected sha256: and 64 hex digits"));
                        }
                        c.checksum = Some(v.to_ascii_lowercase());
                    }
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
        "ONBUILD" => {
            let (inner, inner_rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            let inner = inner.to_ascii_uppercase();
            if matches!(inner.as_str(), "ONBUILD" | "FROM" | "MAINTAINER" | "") {
                return Err(format!("ONBUILD cannot trigger {inner:?}"));
            }
            // Checked now: a trigger that cannot parse is this file's error.
            parse_instruction(&inner, inner_rest.trim(), escape)?;
            Instruction::Onbuild(format!("{inner} {}", inner_rest.trim()))
        }
        other => return Err(format!("unknown instruction {other}")),
    })
}

#[cfg(test)]
mod tests;
