//! Dockerfile and .dockerignore parsing never panic on any text, and every
//! word of every parsed instruction expands (or fails) without panicking.
#![no_main]
use std::collections::BTreeMap;

use ingot_build::context::Ignore;
use ingot_build::dockerfile::{self, words, Instruction};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = Ignore::parse(text).map(|ig| ig.excluded("a/b/c.txt"));
    let Ok(df) = dockerfile::parse(text, "Dockerfile") else { return };
    let vars: BTreeMap<String, String> = [("A".to_string(), "1".to_string())].into();
    for stage in &df.stages {
        let _ = words::expand(&stage.base, &vars, df.escape);
        for step in &stage.steps {
            let raw: Vec<String> = match &step.instruction {
                Instruction::Env(p) | Instruction::Label(p) => p.iter().flat_map(|(k, v)| [k.clone(), v.clone()]).collect(),
                Instruction::Copy(c) | Instruction::Add(c) => c.paths.clone(),
                Instruction::Workdir(w) | Instruction::User(w) | Instruction::StopSignal(w) => vec![w.clone()],
                Instruction::Expose(v) | Instruction::Volume(v) => v.clone(),
                _ => Vec::new(),
            };
            for w in raw {
                let _ = words::expand(&w, &vars, df.escape);
            }
        }
    }
});
