//! SLSA provenance v1 for a build, as an in-toto statement: what was built
//! (the image digest), from what (the Dockerfile's digest, build arguments,
//! target, every base image's digest, the git commit), by whom (ingot and
//! its version) and when (started, finished). Attached to the image as a
//! referrer; unlike the image it carries wall-clock times.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::bom::Bom;

pub const MEDIA_TYPE: &str = ingot_oci::media::IN_TOTO;
pub const BUILD_TYPE: &str = "https://ingot.invalid/buildtypes/dockerfile/v1";
pub const BUILDER_ID: &str = "https://ingot.invalid/builder/ingot";

pub struct Inputs<'a> {
    pub image: &'a ingot_oci::Digest,
    pub dockerfile: &'a str,
    pub dockerfile_digest: &'a ingot_oci::Digest,
    pub build_args: &'a BTreeMap<String, String>,
    pub target: Option<&'a str>,
    pub bom: &'a Bom,
    pub started: &'a str,
    pub finished: &'a str,
}

pub fn statement(i: &Inputs) -> Value {
    let mut deps: Vec<Value> = i
        .bom
        .ancestors
        .iter()
        .filter_map(|a| {
            let d = a.digest.as_ref()?;
            let (alg, hex) = d.split_once(':')?;
            Some(json!({"uri": format!("oci://{}", a.name), "digest": {alg: hex}, "annotations": {"stage": a.stage}}))
        })
        .collect();
    if let Some(g) = &i.bom.git {
        if let Some(c) = &g.commit {
            let uri = g
                .remote
                .clone()
                .map_or_else(|| "git+file:context".to_string(), |r| format!("git+{r}"));
            deps.push(json!({"uri": uri, "digest": {"gitCommit": c}, "annotations": {"dirty": g.dirty}}));
        }
    }
    let name = i.bom.tags.first().cloned().unwrap_or_else(|| i.image.to_string());
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": name, "digest": {i.image.algorithm().as_str(): i.image.hex()}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "dockerfile": {"path": i.dockerfile, "digest": {i.dockerfile_digest.algorithm().as_str(): i.dockerfile_digest.hex()}},
                    "buildArgs": i.build_args,
                    "target": i.target,
                    "labels": i.bom.labels,
                    "reason": i.bom.reason,
                    "project": i.bom.project,
                },
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {"id": BUILDER_ID, "version": {"ingot": i.bom.builder.version}},
                "metadata": {"startedOn": i.started, "finishedOn": i.finished},
            },
        },
    })
}
