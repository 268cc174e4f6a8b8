//! The one place that decides what reaches the terminal.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use console::Style;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::event::{Event, Level, StepStatus};
use super::redact::Redactor;

/// The `output` stream name of a command line shown by `-v`.
pub const COMMAND: &str = "command";

/// How much to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    /// `-v`: also every command pipe runs on a machine.
    Verbose,
    /// `-vv`: also those commands' full output.
    Trace,
}

/// Human text or NDJSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    Human { color: bool, progress: bool },
    Json,
}

struct Inner {
    mode: OutputMode,
    verbosity: Verbosity,
    multi: Option<MultiProgress>,
    redactor: Redactor,
    /// Serializes writes so lines from threads never interleave.
    lock: Mutex<()>,
    /// When set (tests), every line goes here instead of the terminal.
    capture: Option<Mutex<Vec<String>>>,
    /// Phase times, when `PIPE_PROFILE` asks for them.
    profile: Option<super::profile::Profile>,
}

/// Prints events. Cheap to clone; clones share the terminal and the secrets.
#[derive(Clone)]
pub struct Printer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Printer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Printer")
            .field("mode", &self.inner.mode)
            .field("verbosity", &self.inner.verbosity)
            .finish()
    }
}

impl Printer {
    /// Decides colors and progress from the flags, the environment and whether stderr is a
    /// terminal.
    pub fn new(
        json: bool,
        verbosity: Verbosity,
        color: crate::cli::ColorChoice,
        no_progress: bool,
    ) -> Self {
        let tty = std::io::stderr().is_terminal();
        let mode = if json {
            OutputMode::Json
        } else {
            let color = match color {
                crate::cli::ColorChoice::Always => true,
                crate::cli::ColorChoice::Never => false,
                crate::cli::ColorChoice::Auto => {
                    tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                }
            };
            console::set_colors_enabled(color);
            console::set_colors_enabled_stderr(color);
            OutputMode::Human {
                color,
                progress: tty && !no_progress && verbosity != Verbosity::Quiet,
            }
        };
        Self::with_mode(mode, verbosity)
    }

    /// A printer with an explicit mode (tests use this).
    pub fn with_mode(mode: OutputMode, verbosity: Verbosity) -> Self {
        Self::build(mode, verbosity, false)
    }

    /// A printer that keeps every line it would print (stdout and stderr, in order, secrets
    /// masked), for tests of what a user sees; read them with [`Printer::captured`].
    pub fn capturing(mode: OutputMode, verbosity: Verbosity) -> Self {
        Self::build(mode, verbosity, true)
    }

    /// The lines a [`Printer::capturing`] printer kept (empty for any other).
    pub fn captured(&self) -> Vec<String> {
        self.inner
            .capture
            .as_ref()
            .map(|c| c.lock().expect("capture lock").clone())
            .unwrap_or_default()
    }

    /// Keeps `text` if capturing; true when it was kept.
    fn capture(&self, text: &str) -> bool {
        match &self.inner.capture {
            Some(c) => {
                let mut c = c.lock().expect("capture lock");
                c.extend(text.lines().map(str::to_string));
                true
            }
            None => false,
        }
    }

    fn build(mode: OutputMode, verbosity: Verbosity, capture: bool) -> Self {
        let multi = match mode {
            OutputMode::Human { progress: true, .. } if !capture => {
                Some(MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
            }
            _ => None,
        };
        Self {
            inner: Arc::new(Inner {
                mode,
                verbosity,
                multi,
                redactor: Redactor::default(),
                lock: Mutex::new(()),
                capture: capture.then(Mutex::default),
                profile: if capture {
                    None
                } else {
                    super::profile::Profile::from_env()
                },
            }),
        }
    }

    /// The shared secret masker.
    pub fn redactor(&self) -> &Redactor {
        &self.inner.redactor
    }

    pub fn verbosity(&self) -> Verbosity {
        self.inner.verbosity
    }

    pub fn is_json(&self) -> bool {
        self.inner.mode == OutputMode::Json
    }

    /// Reports an event.
    pub fn emit(&self, event: Event) {
        match self.inner.mode {
            OutputMode::Json => self.emit_json(&event),
            OutputMode::Human { .. } => self.emit_human(&event),
        }
    }

    fn emit_json(&self, event: &Event) {
        let line = serde_json::to_string(event).expect("events serialize");
        let line = self.inner.redactor.redact(&line);
        if self.capture(&line) {
            return;
        }
        let _g = self.inner.lock.lock().expect("printer lock");
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }

    fn emit_human(&self, event: &Event) {
        let quiet = self.inner.verbosity == Verbosity::Quiet;
        let text = match event {
            Event::Message { level, text, hint } => {
                if quiet && *level == Level::Info {
                    return;
                }
                let mut s = match level {
                    Level::Info => text.clone(),
                    Level::Warn => format!(
                        "{} {text}",
                        Style::new().yellow().bold().apply_to("warning:")
                    ),
                    Level::Error => {
                        format!("{} {text}", Style::new().red().bold().apply_to("error:"))
                    }
                };
                if let Some(h) = hint {
                    s.push_str(&format!(
                        "\n  {} {h}",
                        Style::new().cyan().apply_to("hint:")
                    ));
                }
                s
            }
            Event::Step {
                step,
                status,
                detail,
                elapsed_ms,
            } => {
                if quiet && *status != StepStatus::Failed {
                    return;
                }
                let (mark, style) = match status {
                    StepStatus::Started => ("==>", Style::new().bold()),
                    StepStatus::Done => ("ok ", Style::new().green()),
                    StepStatus::Skipped => ("-- ", Style::new().dim()),
                    StepStatus::Failed => ("!! ", Style::new().red().bold()),
                };
                let mut s = format!("{} {step}", style.apply_to(mark));
                if let Some(d) = detail {
                    s.push_str(&format!(": {d}"));
                }
                if let Some(ms) = elapsed_ms {
                    s.push_str(&format!(
                        " ({})",
                        format_duration(Duration::from_millis(*ms))
                    ));
                }
                s
            }
            Event::Output {
                source,
                stream,
                line,
            } => {
                if quiet {
                    return;
                }
                let dollar = if *stream == COMMAND { "$ " } else { "" };
                format!(
                    "    {} {dollar}{line}",
                    Style::new().dim().apply_to(format!("[{source}]"))
                )
            }
            Event::Profile { phases, total_ms } => super::profile::render(phases, *total_ms)
                .trim_end()
                .to_string(),
            Event::Diagnostic { .. } => return,
            Event::Result { .. } => return,
            Event::Error { message, hint, .. } => {
                let mut s = format!("{} {message}", Style::new().red().bold().apply_to("error:"));
                if let Some(h) = hint {
                    s.push_str(&format!(
                        "\n  {} {h}",
                        Style::new().cyan().apply_to("hint:")
                    ));
                }
                s
            }
        };
        self.line_stderr(&text);
    }

    fn line_stderr(&self, text: &str) {
        let text = self.inner.redactor.redact(text);
        if self.capture(&text) {
            return;
        }
        let _g = self.inner.lock.lock().expect("printer lock");
        if let Some(multi) = &self.inner.multi {
            let _ = multi.println(&text);
        } else {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{text}");
        }
    }

    /// An informational line (hidden by `-q`).
    pub fn info(&self, text: impl Into<String>) {
        self.emit(Event::Message {
            level: Level::Info,
            text: text.into(),
            hint: None,
        });
    }

    /// A warning, with an optional hint.
    pub fn warn(&self, text: impl Into<String>, hint: Option<String>) {
        self.emit(Event::Message {
            level: Level::Warn,
            text: text.into(),
            hint,
        });
    }

    /// A line of a command's output on the machine.
    pub fn output(&self, source: &str, stream: &'static str, line: &str) {
        self.emit(Event::Output {
            source: source.to_string(),
            stream,
            line: line.to_string(),
        });
    }

    /// A command pipe runs on a machine (`-v`: its first line, cut at 200 characters; `-vv`:
    /// all of it), as an `output` event with stream `command`. Nothing below `-v`.
    pub fn command(&self, source: &str, command: &str) {
        let shown = match self.inner.verbosity {
            Verbosity::Quiet | Verbosity::Normal => return,
            Verbosity::Trace => command.to_string(),
            Verbosity::Verbose => {
                let first = command.lines().next().unwrap_or("");
                let cut: String = first.chars().take(200).collect();
                if cut.len() < command.len() {
                    format!("{cut} …")
                } else {
                    cut
                }
            }
        };
        self.emit(Event::Output {
            source: source.to_string(),
            stream: COMMAND,
            line: shown,
        });
    }

    /// Prints a command's result: `human` on stdout, or a `result` event with `data`.
    pub fn result(&self, command: &str, data: serde_json::Value, human: &str) {
        match self.inner.mode {
            OutputMode::Json => self.emit(Event::Result {
                command: command.to_string(),
                data,
            }),
            OutputMode::Human { .. } => {
                let text = self.inner.redactor.redact(human);
                if self.capture(&text) {
                    return;
                }
                let _g = self.inner.lock.lock().expect("printer lock");
                let mut out = std::io::stdout().lock();
                let _ = write!(out, "{text}");
                if !text.is_empty() && !text.ends_with('\n') {
                    let _ = writeln!(out);
                }
                let _ = out.flush();
            }
        }
    }

    /// Prints already-rendered diagnostics (human) or one event per diagnostic (JSON).
    pub fn diagnostics(&self, rendered: &str, events: Vec<Event>) {
        match self.inner.mode {
            OutputMode::Json => events.into_iter().for_each(|e| self.emit(e)),
            OutputMode::Human { .. } => {
                let text = self.inner.redactor.redact(rendered);
                if self.capture(&text) {
                    return;
                }
                let _g = self.inner.lock.lock().expect("printer lock");
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "{text}");
            }
        }
    }

    /// Passes a machine command's own output through unchanged (`pipe exec`, `pipe logs`),
    /// masking secrets. With `--json` it becomes `output` events.
    pub fn passthrough(&self, source: &str, stream: crate::communicators::Stream, data: &[u8]) {
        let text = String::from_utf8_lossy(data);
        if self.is_json() {
            let name = match stream {
                crate::communicators::Stream::Stdout => "stdout",
                crate::communicators::Stream::Stderr => "stderr",
            };
            for line in text.lines() {
                self.output(source, name, line);
            }
            return;
        }
        let text = self.inner.redactor.redact(&text);
        if self.capture(&text) {
            return;
        }
        let _g = self.inner.lock.lock().expect("printer lock");
        match stream {
            crate::communicators::Stream::Stdout => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(text.as_bytes());
                let _ = out.flush();
            }
            crate::communicators::Stream::Stderr => {
                let mut err = std::io::stderr().lock();
                let _ = err.write_all(text.as_bytes());
            }
        }
    }

    /// Times a phase for `PIPE_PROFILE` until the guard drops; nothing when not profiling.
    pub fn phase(&self, name: impl Into<String>) -> PhaseGuard {
        PhaseGuard {
            printer: self.inner.profile.is_some().then(|| self.clone()),
            name: name.into(),
            started: Instant::now(),
        }
    }

    /// Prints where the command's time went, when profiling (shown even with `-q`).
    pub fn profile_report(&self) {
        if let Some(profile) = &self.inner.profile {
            let (phases, total_ms) = profile.snapshot();
            let event = Event::Profile { phases, total_ms };
            match self.inner.mode {
                OutputMode::Json => self.emit_json(&event),
                OutputMode::Human { .. } => {
                    if let Event::Profile { phases, total_ms } = &event {
                        self.line_stderr(super::profile::render(phases, *total_ms).trim_end());
                    }
                }
            }
        }
    }

    /// Starts a step: a spinner on a terminal, a `==>` line otherwise.
    pub fn step(&self, name: impl Into<String>) -> StepHandle {
        let name = name.into();
        let bar = self.inner.multi.as_ref().map(|multi| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner:.cyan} {msg} {elapsed:.dim}")
                    .expect("valid template"),
            );
            bar.set_message(self.inner.redactor.redact(&name));
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        if bar.is_none() {
            self.emit(Event::Step {
                step: name.clone(),
                status: StepStatus::Started,
                detail: None,
                elapsed_ms: None,
            });
        }
        StepHandle {
            printer: self.clone(),
            name,
            started: Instant::now(),
            bar,
            finished: false,
        }
    }
}

/// A phase being timed (see [`Printer::phase`]); records its time when dropped.
pub struct PhaseGuard {
    /// Set only when profiling.
    printer: Option<Printer>,
    name: String,
    started: Instant,
}

impl Drop for PhaseGuard {
    fn drop(&mut self) {
        if let Some(p) = &self.printer
            && let Some(profile) = &p.inner.profile
        {
            profile.record(std::mem::take(&mut self.name), self.started.elapsed());
        }
    }
}

/// A running step; finishing it prints its outcome and elapsed time.
pub struct StepHandle {
    printer: Printer,
    name: String,
    started: Instant,
    bar: Option<ProgressBar>,
    finished: bool,
}

impl StepHandle {
    /// Updates the spinner's message (no output without a terminal).
    pub fn set_detail(&self, detail: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(
                self.printer
                    .redactor()
                    .redact(&format!("{}: {detail}", self.name)),
            );
        }
    }

    fn finish(&mut self, status: StepStatus, detail: Option<String>) {
        self.finished = true;
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.printer.emit(Event::Step {
            step: self.name.clone(),
            status,
            detail,
            elapsed_ms: Some(self.started.elapsed().as_millis() as u64),
        });
    }

    pub fn done(mut self, detail: Option<String>) {
        self.finish(StepStatus::Done, detail);
    }

    pub fn skipped(mut self, detail: Option<String>) {
        self.finish(StepStatus::Skipped, detail);
    }

    pub fn failed(mut self, detail: Option<String>) {
        self.finish(StepStatus::Failed, detail);
    }
}

impl Drop for StepHandle {
    fn drop(&mut self) {
        if !self.finished {
            self.finish(StepStatus::Failed, None);
        }
    }
}

/// `1.2s`, `3m04s`.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let s = d.as_secs();
        format!("{}m{:02}s", s / 60, s % 60)
    }
}
