//! Hostile Compose files never panic the parser or the interpolation; what
//! parses has sane values.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = ingot_deploy::compose::interpolate(s, &|k| (k == "X").then(|| "1".to_string()));
    if let Ok(stack) = ingot_deploy::compose::parse("fuzz.yml", s) {
        for svc in &stack.services {
            assert!(!svc.name.is_empty() && !svc.name.contains('.') && !svc.name.contains('/'));
            for p in &svc.ports {
                assert!(p.published != 0 && p.target != 0);
            }
            let targets = svc
                .configs
                .iter()
                .map(|c| &c.target)
                .chain(svc.secrets.iter().map(|s| &s.target))
                .chain(svc.mounts.iter().map(|m| &m.target));
            for target in targets {
                assert!(target.starts_with('/') && target != "/" && !target.split('/').any(|c| c == ".."));
            }
            for s in &svc.secrets {
                assert!(s.mode <= 0o777);
            }
            // Dependencies name other services of the stack, without a cycle.
            for d in svc.depends_on.keys() {
                assert!(d != &svc.name && stack.services.iter().any(|o| &o.name == d));
            }
        }
    }
});
