use super::*;

const MULTI: &str = r#"# syntax=docker/dockerfile:1
ARG BASE=scratch
FROM ${BASE} AS build
# a comment
ENV A=1 B="two words"
RUN echo hello \
    && echo world
COPY --chown=1:2 --chmod=644 src/ /app/
FROM build
COPY --from=build ["/app/a b", "/dst/"]
WORKDIR /app
HEALTHCHECK --interval=5s --retries=3 CMD ["/bin/check", "CMD"]
CMD ["serve"]
"#;

#[test]
fn parses_stages_forms_and_positions() {
    let df = parse(MULTI, "Dockerfile").unwrap();
    assert_eq!(df.global_args, [("BASE".to_string(), Some("scratch".to_string()))]);
    assert_eq!(df.stages.len(), 2);
    let s0 = &df.stages[0];
    assert_eq!((s0.base.as_str(), s0.name.as_deref()), ("${BASE}", Some("build")));
    assert_eq!(s0.pos, Pos { line: 3, column: 1 });
    assert_eq!(
        s0.steps[0].instruction,
        Instruction::Env(vec![("A".into(), "1".into()), ("B".into(), "\"two words\"".into())])
    );
    assert_eq!(
        s0.steps[1].instruction,
        Instruction::Run(Command::Shell("echo hello && echo world".into()))
    );
    assert_eq!(s0.steps[1].pos.line, 6);
    let Instruction::Copy(c) = &s0.steps[2].instruction else {
        panic!()
    };
    assert_eq!((c.chown.as_deref(), c.chmod.as_deref()), (Some("1:2"), Some("644")));
    let s1 = &df.stages[1];
    let Instruction::Copy(c) = &s1.steps[0].instruction else {
        panic!()
    };
    assert_eq!(c.from.as_deref(), Some("build"));
    assert_eq!(c.paths.len(), 2);
    let Instruction::Healthcheck(h) = &s1.steps[2].instruction else {
        panic!()
    };
    assert_eq!(h.interval.as_deref(), Some("5s"));
    assert_eq!(h.command, Some(Command::Exec(vec!["/bin/check".into(), "CMD".into()])));
    assert_eq!(
        s1.steps[3].instruction,
        Instruction::Cmd(Command::Exec(vec!["serve".into()]))
    );
}

#[test]
fn escape_directive_and_legacy_env() {
    let df = parse("# escape=`\nFROM scratch\nENV PATH C:\\bin\nRUN a `\n  b\n", "x").unwrap();
    assert_eq!(df.escape, '`');
    let steps = &df.stages[0].steps;
    assert_eq!(
        steps[0].instruction,
        Instruction::Env(vec![("PATH".into(), "C:\\bin".into())])
    );
    assert_eq!(steps[1].instruction, Instruction::Run(Command::Shell("a b".into())));
}

#[test]
fn errors_name_file_line_column_and_text() {
    let e = parse("FROM scratch\n  FROBNICATE now\n", "ctx/Dockerfile").unwrap_err();
    assert_eq!((e.line, e.column), (2, 3));
    let msg = e.to_string();
    assert!(
        msg.starts_with("ctx/Dockerfile:2:3: unknown instruction FROBNICATE: FROBNICATE now"),
        "{msg}"
    );
    for (src, needle) in [
        ("RUN x\n", "expected FROM"),
        ("", "no FROM"),
        ("FROM a b c\n", "FROM IMAGE [AS NAME]"),
        ("FROM scratch\nCOPY one\n", "source and a destination"),
        ("FROM scratch\nENV A=\"x\n", "unterminated"),
        ("FROM scratch\nSHELL sh -c\n", "JSON form"),
        ("FROM scratch\nCOPY --bogus=1 a b\n", "unknown flag --bogus"),
        ("FROM scratch\nRUN <<EOF\nx\nEOF\n", "heredocs"),
        ("FROM scratch AS 1bad\n", "invalid stage name"),
        ("FROM scratch\nHEALTHCHECK echo\n", "HEALTHCHECK"),
    ] {
        let e = parse(src, "Dockerfile").unwrap_err();
        assert!(e.to_string().contains(needle), "{src:?}: {e}");
    }
}
