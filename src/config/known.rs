//! The names a Pipelinefile declares (vars, box kinds, environments), read before its sections
//! are walked, so that parsing and validation agree on them and a broken entry does not cause
//! follow-on errors elsewhere.

use super::model::TargetKind;
use super::walk::Tbl;

/// Names declared in the file, read before the sections are walked so that a broken entry
/// does not cause follow-on errors elsewhere (an undefined var, a missing box).
#[derive(Debug, Default)]
pub struct Known {
    pub vars: Vec<String>,
    pub box_kinds: Vec<TargetKind>,
    pub envs: Vec<String>,
}

impl Known {
    /// Reads the names from the file's top-level tables.
    pub fn read(root: &Tbl<'_, '_>) -> Self {
        let keys = |name: &str| -> Vec<String> {
            root.t
                .get(name)
                .and_then(|v| v.get_ref().as_table())
                .map(|t| t.keys().map(|k| k.get_ref().to_string()).collect())
                .unwrap_or_default()
        };
        Known {
            vars: keys("vars"),
            box_kinds: keys("box")
                .iter()
                .filter_map(|k| TargetKind::parse(k))
                .collect(),
            envs: keys("env"),
        }
    }
}
