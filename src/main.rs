//! `pipe`: one Pipelinefile from the laptop to production.

use clap::Parser;
use pipe::{cli, commands, error, ui};

fn main() {
    let cli = cli::Cli::parse();
    let verbosity = if cli.global.quiet {
        ui::Verbosity::Quiet
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
    let code = match commands::run(cli, &printer) {
        Ok(()) => error::exit::OK,
        Err(err) => commands::report_error(&printer, &err),
    };
    std::process::exit(code);
}
