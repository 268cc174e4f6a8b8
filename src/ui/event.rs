//! The events pipe reports. With `--json` each is one line of JSON on stdout:
//! `{"event": "<kind>", ...fields}`; the README documents the schema.

use serde::Serialize;

/// Severity of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    Started,
    Done,
    Skipped,
    Failed,
}

/// One thing that happened.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A line for the user.
    Message {
        level: Level,
        text: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        hint: Option<String>,
    },
    /// A step of a run started, finished, was skipped (reused) or failed.
    Step {
        step: String,
        status: StepStatus,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        elapsed_ms: Option<u64>,
    },
    /// A line a command printed on the machine.
    Output {
        /// e.g. `base/shell primal.sh`.
        source: String,
        stream: &'static str,
        line: String,
    },
    /// A Pipelinefile problem, or a `pipe lint` finding in the project's files.
    Diagnostic {
        file: String,
        line: usize,
        column: usize,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        hint: Option<String>,
        /// `error` or `warning`; only lint findings have it (a Pipelinefile problem is always
        /// an error).
        #[serde(skip_serializing_if = "Option::is_none")]
        severity: Option<&'static str>,
    },
    /// A command's result, machine-readable.
    Result {
        command: String,
        data: serde_json::Value,
    },
    /// Where a command's time went (`PIPE_PROFILE=1`), once at its end.
    Profile {
        phases: Vec<super::profile::PhaseTime>,
        total_ms: u64,
    },
    /// The error a command ended with.
    Error {
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        hint: Option<String>,
        exit_code: i32,
    },
}
