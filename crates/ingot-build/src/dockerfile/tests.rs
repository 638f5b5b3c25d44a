use super::*;

/// A shell-form RUN without flags.
fn shell(text: &str) -> Instruction {
    Instruction::Run(Run {
        command: Command::Shell(text.into()),
        network: None,
        mounts: Vec::new(),
    })
}

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
    assert_eq!(df.syntax.as_deref(), Some("docker/dockerfile:1"));
    assert_eq!(df.global_args, [("BASE".to_string(), Some("scratch".to_string()))]);
    assert_eq!(df.stages.len(), 2);
    let s0 = &df.stages[0];
    assert_eq!((s0.base.as_str(), s0.name.as_deref()), ("${BASE}", Some("build")));
    assert_eq!(s0.pos, Pos { line: 3, column: 1 });
    assert_eq!(
        s0.steps[0].instruction,
        Instruction::Env(vec![("A".into(), "1".into()), ("B".into(), "\"two words\"".into())])
    );
    assert_eq!(s0.steps[1].instruction, shell("echo hello && echo world"));
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
    assert_eq!(steps[1].instruction, shell("a b"));
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
        ("FROM scratch\nRUN <<EOF\nx\n", "never closed"),
        ("FROM scratch AS 1bad\n", "invalid stage name"),
        ("FROM scratch\nHEALTHCHECK echo\n", "HEALTHCHECK"),
    ] {
        let e = parse(src, "Dockerfile").unwrap_err();
        assert!(e.to_string().contains(needle), "{src:?}: {e}");
    }
}

#[test]
fn heredocs_as_buildkit_reads_them() {
    let src = "FROM base\nRUN <<EOF\nset -e\necho one > /a\nEOF\nRUN cat <<-'END' > /b && echo done\n\tkeep $HOME\n\tEND\nCOPY --chmod=600 <<one.txt <<two.txt /etc/\nfirst $A\none.txt\nsecond\ntwo.txt\nCOPY <<\"raw\" /raw\n$A\nraw\nRUN echo <<<here-string\n";
    let df = parse(src, "Dockerfile").unwrap();
    let steps = &df.stages[0].steps;
    assert_eq!(
        steps[0].instruction,
        shell("set -e\necho one > /a\n"),
        "a heredoc alone is the script"
    );
    assert_eq!(steps[0].text, "RUN <<EOF", "messages name the instruction line");
    assert_eq!(
        steps[1].instruction,
        shell("cat <<-'END' > /b && echo done\n\tkeep $HOME\n\tEND"),
        "otherwise the shell reads the heredoc"
    );
    let Instruction::Copy(c) = &steps[2].instruction else {
        panic!("{:?}", steps[2])
    };
    assert_eq!(c.paths, ["one.txt", "two.txt", "/etc/"]);
    assert_eq!(c.chmod.as_deref(), Some("600"));
    assert_eq!(
        c.heredocs,
        [
            Heredoc {
                name: "one.txt".into(),
                content: "first $A\n".into(),
                expand: true
            },
            Heredoc {
                name: "two.txt".into(),
                content: "second\n".into(),
                expand: true
            },
        ]
    );
    let Instruction::Copy(c) = &steps[3].instruction else {
        panic!()
    };
    assert_eq!((c.heredocs[0].name.as_str(), c.heredocs[0].expand), ("raw", false));
    assert_eq!(steps[4].instruction, shell("echo <<<here-string"));
    assert_eq!(steps[4].pos.line, 17);
}

#[test]
fn a_heredoc_never_closed_names_its_instruction() {
    let err = parse("FROM base\nRUN true\nRUN <<EOF\necho never\n", "Dockerfile").unwrap_err();
    assert_eq!((err.line, err.column), (3, 1));
    assert!(err.message.contains("<<EOF is never closed"), "{err}");
    assert_eq!(err.text, "RUN <<EOF");
    let err = parse("FROM base\nRUN <<EOF\n#!/usr/bin/python3\nprint(1)\nEOF\n", "D").unwrap_err();
    assert!(err.message.contains("#!"), "{err}");
    let err = parse("FROM base\nCOPY a <<EOF\nx\nEOF\n", "D").unwrap_err();
    assert!(err.message.contains("destination"), "{err}");
    // A literal file named like the heredoc is not the heredoc.
    let err = parse("FROM base\nCOPY <<EOF EOF /d/\nx\nEOF\n", "D").unwrap_err();
    assert!(err.message.contains("heredocs only"), "{err}");
    for bad in [
        "RUN cat <<$EOF\n",
        "RUN cat <<\"EOF\n",
        "RUN cat <<'a'b'\n",
        "COPY <<.. /d/\n..\n",
    ] {
        let err = parse(&format!("FROM base\n{bad}"), "D").unwrap_err();
        assert_eq!(err.line, 2, "{bad:?}: {err}");
    }
    // A file that ends in a continuation still reads its heredoc.
    let err = parse("FROM base\nRUN cat <<EOF \\", "D").unwrap_err();
    assert!(err.message.contains("never closed"), "{err}");
}

#[test]
fn quoted_or_json_double_angles_are_text() {
    // Neither a quoted `<<` nor the JSON form reads a heredoc: the lines
    // after them are instructions (here an unknown one).
    let err = parse(
        "FROM base\nRUN echo \"see <<EOF\"\nRUN [\"sh\", \"-c\", \"cat <<EOF\"]\nENV X=1\nEOF\n",
        "D",
    )
    .unwrap_err();
    assert!(err.message.contains("unknown instruction EOF"), "{err}");
    assert_eq!(err.line, 5);
}

#[test]
fn run_flags_are_read_before_the_command() {
    let df = parse(
        "FROM scratch\nRUN --network=none echo a --network=host\nRUN --network=host [\"a\", \"b\"]\n\
         RUN --network=default <<EOF\necho hi\nEOF\nRUN --network=none cat <<EOF > /f\nx\nEOF\n",
        "Dockerfile",
    )
    .unwrap();
    let steps = &df.stages[0].steps;
    let run = |i: usize| match &steps[i].instruction {
        Instruction::Run(r) => r.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(run(0).network, Some(RunNetwork::None));
    assert_eq!(
        run(0).command,
        Command::Shell("echo a --network=host".into()),
        "flags only lead"
    );
    assert_eq!(run(1).network, Some(RunNetwork::Host));
    assert_eq!(run(1).command, Command::Exec(vec!["a".into(), "b".into()]));
    assert_eq!(run(2).network, Some(RunNetwork::Default));
    assert_eq!(run(2).command, Command::Shell("echo hi\n".into()));
    assert_eq!(run(3).network, Some(RunNetwork::None));
    assert_eq!(run(3).command, Command::Shell("cat <<EOF > /f\nx\nEOF".into()));
    for (text, message) in [
        (
            "RUN --network=bridge true",
            "RUN --network=bridge: expected default, none or host",
        ),
        ("RUN --netwrok=none true", "unknown flag --netwrok for RUN"),
    ] {
        let e = parse(&format!("FROM scratch\n{text}\n"), "Dockerfile").unwrap_err();
        assert_eq!(
            (e.line, e.column, e.message.as_str(), e.text.as_str()),
            (2, 1, message, text)
        );
    }
}

#[test]
fn run_mounts_as_buildkit_reads_them() {
    let df = parse(
        "FROM scratch\nRUN --mount=type=cache,target=/root/.cache,id=pip,sharing=locked,mode=0700,uid=10 \\\n\
         --mount=type=secret,id=token --mount=type=secret,target=/etc/key,mode=0440 \\\n\
         --mount=target=/src,source=app,rw --mount=type=bind,from=build,target=/b,ro \\\n\
         --mount=type=tmpfs,dst=/scratch make\n",
        "Dockerfile",
    )
    .unwrap();
    let Instruction::Run(r) = &df.stages[0].steps[0].instruction else {
        panic!()
    };
    assert_eq!(r.command, Command::Shell("make".into()));
    assert_eq!(
        r.mounts,
        [
            Mount::Cache {
                target: "/root/.cache".into(),
                id: Some("pip".into()),
                sharing: Sharing::Locked,
                read_only: false,
                mode: Some(0o700),
                uid: Some(10),
                gid: None
            },
            Mount::Secret {
                id: "token".into(),
                target: None,
                mode: None,
                uid: None,
                gid: None
            },
            Mount::Secret {
                id: "key".into(),
                target: Some("/etc/key".into()),
                mode: Some(0o440),
                uid: None,
                gid: None
            },
            Mount::Bind {
                target: "/src".into(),
                source: Some("app".into()),
                from: None,
                read_write: true
            },
            Mount::Bind {
                target: "/b".into(),
                source: None,
                from: Some("build".into()),
                read_write: false
            },
            Mount::Tmpfs {
                target: "/scratch".into()
            },
        ]
    );
    for (flag, message) in [
        ("--mount=type=ssh", "unknown mount type \"ssh\""),
        ("--mount=type=cache", "type=cache needs a target"),
        (
            "--mount=type=cache,target=/c,sharing=sometimes",
            "sharing: expected shared, private or locked",
        ),
        (
            "--mount=type=tmpfs,target=/t,size=10m",
            "unknown option \"size\" for type=tmpfs",
        ),
        ("--mount=type=secret", "type=secret needs an id"),
        (
            "--mount=type=secret,id=a,env=TOKEN",
            "unknown option \"env\" for type=secret",
        ),
        ("--mount=type=cache,target=/c,mode=rwx", "mode=rwx: expected a number"),
    ] {
        let text = format!("RUN {flag} true");
        let e = parse(&format!("FROM scratch\n{text}\n"), "Dockerfile").unwrap_err();
        assert_eq!((e.line, e.column, e.text.as_str()), (2, 1, text.as_str()));
        assert!(e.message.contains(message), "{} for {flag}", e.message);
    }
}

#[test]
fn copy_and_add_flags_and_onbuild() {
    let df = parse(
        "FROM scratch\nCOPY --link --parents --exclude=*.log --exclude=tmp a b /d/\n\
         ADD --checksum=sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA https://h.invalid/f /f\n\
         ONBUILD run echo hi\n",
        "Dockerfile",
    )
    .unwrap();
    let steps = &df.stages[0].steps;
    let Instruction::Copy(c) = &steps[0].instruction else {
        panic!()
    };
    assert!(c.link && c.parents);
    assert_eq!(c.exclude, ["*.log", "tmp"]);
    let Instruction::Add(a) = &steps[1].instruction else {
        panic!()
    };
    assert_eq!(a.checksum.as_deref(), Some(&*format!("sha256:{}", "a".repeat(64))));
    assert_eq!(steps[2].instruction, Instruction::Onbuild("RUN echo hi".into()));
    assert!(matches!(parse_trigger("RUN echo hi", '\\'), Ok(Instruction::Run(_))));
    for (text, message) in [
        ("ADD --parents a /b/", "unknown flag --parents for ADD"),
        ("COPY --checksum=sha256:00 a /b", "unknown flag --checksum for COPY"),
        (
            "ADD --checksum=md5:00 https://h.invalid/f /f",
            "expected sha256: and 64 hex digits",
        ),
        ("COPY --link=maybe a /b", "--link=maybe: expected true or false"),
        ("ONBUILD FROM scratch", "ONBUILD cannot trigger \"FROM\""),
        ("ONBUILD ONBUILD RUN x", "ONBUILD cannot trigger \"ONBUILD\""),
        ("ONBUILD RUN --mount=type=ssh x", "unknown mount type"),
    ] {
        let e = parse(&format!("FROM scratch\n{text}\n"), "Dockerfile").unwrap_err();
        assert!(e.message.contains(message), "{text}: {}", e.message);
        assert_eq!((e.line, e.column), (2, 1));
    }
}
