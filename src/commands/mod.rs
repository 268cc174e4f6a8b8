//! One module per command; [`run`] dispatches.

mod approve;
mod bake;
mod boxes;
mod cache;
mod clean;
mod exec;
mod gates;
mod history;
mod import;
mod init;
mod ledger;
mod lifecycle;
mod lint;
mod local;
mod lock;
mod logs;
mod notify;
mod promote;
mod provision;
mod prune;
mod reject;
mod releases;
mod rollback;
mod up;
mod validate;
mod verify;

use std::path::PathBuf;

use crate::cli::{Cli, Command, GlobalArgs};
use crate::config::{self, ConfigError, Pipelinefile};
use crate::error::{Error, Result};
use crate::ui::{Event, Printer};

/// What every command gets.
pub struct Ctx<'a> {
    pub global: GlobalArgs,
    pub printer: &'a Printer,
    pub cwd: PathBuf,
}

impl Ctx<'_> {
    /// Loads the Pipelinefile (`-f` or the nearest one).
    pub fn pipelinefile(&self) -> Result<Pipelinefile> {
        Ok(config::locate_and_load(
            self.global.file.as_deref(),
            &self.cwd,
        )?)
    }
}

/// Runs the command.
pub fn run(cli: Cli, printer: &Printer) -> Result<()> {
    let cwd = std::env::current_dir()?;
    let ctx = Ctx {
        global: cli.global,
        printer,
        cwd,
    };
    match cli.command {
        Command::Init(args) => init::run(&ctx, args),
        Command::Validate(args) => validate::run(&ctx, args),
        Command::Lint => lint::run(&ctx),
        Command::Import(cmd) => import::run(&ctx, cmd),
        Command::Schema => {
            let text = config::schema::render();
            printer.result("schema", config::schema::schema(), &text);
            Ok(())
        }
        Command::Completions(args) => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(args.shell, &mut cmd, "pipe", &mut std::io::stdout());
            Ok(())
        }
        Command::Up(args) => up::run(&ctx, args),
        Command::Provision => provision::run(&ctx),
        Command::Ssh => exec::ssh(&ctx),
        Command::Exec(args) => exec::run(&ctx, args),
        Command::Status => lifecycle::status(&ctx),
        Command::Halt => lifecycle::halt(&ctx),
        Command::Destroy(args) => lifecycle::destroy(&ctx, args),
        Command::Logs(args) => logs::run(&ctx, args),
        Command::Bake(args) => bake::run(&ctx, args),
        Command::Verify(args) => verify::run(&ctx, args),
        Command::Releases => releases::run(&ctx),
        Command::History(args) => history::run(&ctx, args),
        Command::Promote(args) => promote::run(&ctx, args),
        Command::Rollback(args) => rollback::run(&ctx, args),
        Command::Reject(args) => reject::run(&ctx, args),
        Command::Approve(args) => approve::run(&ctx, args),
        Command::Prune(args) => prune::run(&ctx, args),
        Command::Clean(args) => clean::run(&ctx, args),
        Command::Box(cmd) => boxes::run(&ctx, cmd),
        Command::Ledger(cmd) => ledger::run(&ctx, cmd),
        Command::Cache(cmd) => cache::run(&ctx, cmd),
    }
}

/// Prints the error the command ended with and returns the exit code.
pub fn report_error(printer: &Printer, err: &Error) -> i32 {
    let code = err.exit_code();
    if let Error::Exit(_) = err {
        return code;
    }
    if let Error::Config(ConfigError::Invalid {
        diagnostics,
        rendered,
    }) = err
    {
        let events = diagnostic_events(diagnostics, rendered);
        printer.diagnostics(rendered, events);
        if printer.is_json() {
            printer.emit(Event::Error {
                message: format!("the Pipelinefile has {} error(s)", diagnostics.len()),
                hint: None,
                exit_code: code,
            });
        }
        return code;
    }
    printer.emit(Event::Error {
        message: err.to_string(),
        hint: err.hint(),
        exit_code: code,
    });
    code
}

/// JSON events for diagnostics; file/line/column are read back from the rendered text so the
/// two outputs can never disagree.
fn diagnostic_events(diagnostics: &[config::Diagnostic], rendered: &str) -> Vec<Event> {
    let locations: Vec<(String, usize, usize)> = rendered
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--> "))
        .map(|loc| {
            let mut parts = loc.rsplitn(3, ':');
            let col = parts.next().and_then(|c| c.parse().ok());
            let line = parts.next().and_then(|c| c.parse().ok());
            match (parts.next(), line, col) {
                (Some(file), Some(line), Some(col)) => (file.to_string(), line, col),
                _ => (loc.to_string(), 0, 0),
            }
        })
        .collect();
    diagnostics
        .iter()
        .zip(locations)
        .map(|(d, (file, line, column))| Event::Diagnostic {
            file,
            line,
            column,
            message: d.message.clone(),
            hint: d.hint.clone(),
            severity: None,
        })
        .collect()
}
