//! `pipe`: one Pipelinefile from the laptop to production.

use clap::Parser;
use pipe::{cli, commands, error, ui};

fn main() {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => usage_error(e),
    };
    let verbosity = if cli.global.quiet {
        ui::Verbosity::Quiet
    } else if cli.global.verbose > 1 {
        ui::Verbosity::Trace
    } else if cli.global.verbose > 0 {
        ui::Verbosity::Verbose
    } else {
        ui::Verbosity::Normal
    };
    let printer = ui::Printer::new(
        cli.global.json,
        verbosity,
        cli.global.color,
        cli.global.no_progress,
    );
    let result = commands::run(cli, &printer);
    printer.profile_report();
    let code = match result {
        Ok(()) => error::exit::OK,
        Err(err) => commands::report_error(&printer, &err),
    };
    std::process::exit(code);
}

/// A command line clap refuses: with `--json` anywhere before `--`, one JSON error event on
/// stdout (as every other error), else clap's own message. Help and version are not errors.
fn usage_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    let json = std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json");
    if !json || matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        e.exit();
    }
    let printer = ui::Printer::new(true, ui::Verbosity::Normal, cli::ColorChoice::Never, true);
    let rendered = e.to_string();
    let message = rendered
        .lines()
        .next()
        .unwrap_or("")
        .trim_start_matches("error: ")
        .to_string();
    printer.emit(ui::Event::Error {
        message,
        hint: Some("`pipe --help` lists the commands and flags".to_string()),
        exit_code: error::exit::USAGE,
    });
    std::process::exit(error::exit::USAGE);
}
