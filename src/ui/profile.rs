//! Phase times, for `PIPE_PROFILE=1`: where a command's wall time goes (plan and digests, the
//! build machine, each provisioner, build trust in and out, commit, replace, services ready),
//! printed once when the command ends. Off, a phase costs one branch.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// The environment variable that turns profiling on (any value but empty or `0`).
pub const ENV: &str = "PIPE_PROFILE";

/// One timed phase.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseTime {
    pub phase: String,
    pub ms: u64,
}

/// The phases a command went through, in the order they ended.
#[derive(Debug)]
pub struct Profile {
    started: Instant,
    phases: Mutex<Vec<PhaseTime>>,
}

impl Profile {
    /// A profile when the environment asks for one.
    pub fn from_env() -> Option<Self> {
        std::env::var(ENV)
            .ok()
            .filter(|v| !v.is_empty() && v != "0")
            .map(|_| Self::new())
    }

    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            phases: Mutex::new(Vec::new()),
        }
    }

    pub fn record(&self, phase: String, took: Duration) {
        self.phases.lock().expect("profile lock").push(PhaseTime {
            phase,
            ms: took.as_millis() as u64,
        });
    }

    /// The phases so far and the wall time since the profile started.
    pub fn snapshot(&self) -> (Vec<PhaseTime>, u64) {
        (
            self.phases.lock().expect("profile lock").clone(),
            self.started.elapsed().as_millis() as u64,
        )
    }
}

impl Default for Profile {
    fn default() -> Self {
        Self::new()
    }
}

/// The human form: one phase a line, the time right-aligned, then what no phase covered and the
/// total.
pub fn render(phases: &[PhaseTime], total_ms: u64) -> String {
    let covered: u64 = phases.iter().map(|p| p.ms).sum();
    let width = phases
        .iter()
        .map(|p| p.phase.chars().count())
        .max()
        .unwrap_or(0)
        .max("total".len());
    let mut out = format!("profile ({ENV}):\n");
    let mut line = |name: &str, ms: u64| {
        out.push_str(&format!("  {name:<width$}  {ms:>6} ms\n"));
    };
    for p in phases {
        line(&p.phase, p.ms);
    }
    line("(other)", total_ms.saturating_sub(covered));
    line("total", total_ms);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_phases_the_rest_and_the_total() {
        let phases = vec![
            PhaseTime {
                phase: "plan and digests".into(),
                ms: 12,
            },
            PhaseTime {
                phase: "app: commit".into(),
                ms: 300,
            },
        ];
        assert_eq!(
            render(&phases, 400),
            "profile (PIPE_PROFILE):\n  plan and digests      12 ms\n  app: commit          300 ms\n  (other)               88 ms\n  total                400 ms\n"
        );
    }
}
