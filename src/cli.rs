//! The command line: every command and flag, with help.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// One Pipelinefile from the laptop to production: local machines, layered bakes, promotions.
#[derive(Debug, Parser)]
#[command(name = "pipe", version, about, long_about = None, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Shown under `pipe --help`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    runtime failure (a step failed; pipe cleaned up and said what failed)
  2    usage error (bad flags or arguments; no Pipelinefile, or not a readable file)
  3    Pipelinefile or lint error (every problem is listed with file:line:column)
  4    verification failed (the release is recorded and cannot be promoted)
  5    a promotion gate refused (not verified, rejected, min_soak, approval, already current, lock held)
  69   not implemented yet
  130  interrupted (Ctrl-C or SIGTERM; cleanup ran)";

/// Flags every command takes.
#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// Path to the Pipelinefile (default: Pipelinefile.toml here or in the nearest parent)
    #[arg(short = 'f', long = "file", global = true, value_name = "PATH")]
    pub file: Option<PathBuf>,

    /// Environment to act on (an [env.NAME] table)
    #[arg(long = "env", global = true, value_name = "NAME")]
    pub env: Option<String>,

    /// Set a variable, overriding [vars], [env.NAME].vars and PIPE_VAR_NAME (repeatable)
    #[arg(long = "var", global = true, value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,

    /// Print less: only warnings, errors and results
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Print more: -v shows each command pipe runs on a machine (provisioners, service
    /// delivery, readiness, checks) and each upload; -vv also their full output
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// One JSON object per event on stdout (NDJSON); see the README for the schema
    #[arg(long, global = true)]
    pub json: bool,

    /// No progress bars or spinners, even on a terminal
    #[arg(long, global = true)]
    pub no_progress: bool,

    /// When to use colors (NO_COLOR is respected under `auto`)
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub color: ColorChoice,
}

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not NAME=VALUE"))?;
    if name.is_empty() {
        return Err(format!("`{s}` has an empty NAME"));
    }
    Ok((name.to_string(), value.to_string()))
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented starter Pipelinefile.toml here
    Init(InitArgs),
    /// Check the Pipelinefile and report every problem at once
    Validate(ValidateArgs),
    /// Write a Pipelinefile from other tools' templates
    #[command(subcommand)]
    Import(ImportCommand),
    /// Print the Pipelinefile's JSON Schema (for editors: the `#:schema` line pipe init writes)
    Schema,
    /// Check the provisioning code without a machine: shellcheck, ansible-playbook
    /// --syntax-check, [verify] ports and service users (pipe bake runs it first)
    Lint,
    /// Bring up a local machine provisioned exactly like the environment's image
    Up(UpArgs),
    /// Re-run the app provisioners in the running machine
    Provision,
    /// Open an interactive shell in the running machine
    Ssh,
    /// Run a command in the running machine
    Exec(ExecArgs),
    /// Show this pipeline's machines (`up` and serving) with their state, image freshness or
    /// release, and ports, live from the target; with --env of a fleet, the fleet
    Status,
    /// Stop the machine, keeping it for a later `up`
    Halt,
    /// Remove the machine (works even with .pipe/ deleted)
    Destroy(DestroyArgs),
    /// Show a service's log
    Logs(LogsArgs),
    /// Build base and app images for an environment, verify them, record a release
    Bake(BakeArgs),
    /// Verify a release again on a fresh machine
    Verify(VerifyArgs),
    /// List releases and their status
    Releases,
    /// Show the ledger (bakes, verifications, promotions, rollbacks, rejections, approvals, prunes)
    History(HistoryArgs),
    /// Make the newest verified release of `promote_from` current in ENV
    Promote(PromoteArgs),
    /// Re-promote the release that was current in ENV before the current one
    Rollback(RollbackArgs),
    /// Mark a release as unpromotable
    Reject(RejectArgs),
    /// Approve a release for promotion into an environment (--env NAME)
    Approve(ApproveArgs),
    /// Remove old releases' images of an environment (--env NAME), keeping the newest N
    Prune(PruneArgs),
    /// Remove what interrupted or killed runs left behind
    Clean(CleanArgs),
    /// Manage boxes (base OS images)
    #[command(subcommand, name = "box")]
    Box(BoxCommand),
    /// Manage the ledger's backend (`[ledger]` in the Pipelinefile)
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Manage the package caches (apt, npm, pip) that build machines share, one per box
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Print shell completions
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Pipeline name (default: this folder's name)
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Also print the layer digests for the environment (and the base checkpoint's, if kept)
    #[arg(long)]
    pub digests: bool,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Run on a local target even when the environment's target is remote
    #[arg(long)]
    pub local: bool,
    /// Local target kind to use (default: the environment's, or docker)
    #[arg(long, value_name = "KIND")]
    pub target: Option<String>,
    /// On a provisioning failure keep the half-built machine for debugging
    #[arg(long)]
    pub keep_on_error: bool,
    /// Then sync edits of the app layer's inputs into the running machine until Ctrl-C
    #[arg(long)]
    pub watch: bool,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Run as this [[service]] runs: its environment (read on the machine from the files pipe
    /// delivered), its workdir and its user
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,

    /// The command and its arguments (after `--`)
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// Also remove this pipeline's cached layer images
    #[arg(long)]
    pub layers: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Service name (default: all services)
    pub service: Option<String>,
    /// Keep printing new lines
    #[arg(short = 'F', long)]
    pub follow: bool,
    /// Show this many last lines
    #[arg(short = 'n', long, default_value_t = 100)]
    pub lines: usize,
}

#[derive(Debug, Args)]
pub struct BakeArgs {
    /// Run an environment whose target is remote (ec2) on the local Docker engine instead
    #[arg(long)]
    pub local: bool,
    /// Local target kind to bake on (default: the environment's, or docker)
    #[arg(long, value_name = "KIND")]
    pub target: Option<String>,
    /// Record the release without running [verify] (it cannot be promoted)
    #[arg(long)]
    pub skip_verify: bool,
    /// On a failure keep the build machine for debugging
    #[arg(long)]
    pub keep_on_error: bool,
    /// Do not run `pipe lint` first
    #[arg(long)]
    pub no_lint: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Release id or alias (default: the newest release of the environment)
    pub release: Option<String>,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Check the ledger's hash chain and name the first bad line
    #[arg(long)]
    pub verify: bool,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// Environment to promote into
    pub env: String,
    /// Release id or alias (default: the newest verified release of `promote_from`)
    #[arg(long)]
    pub release: Option<String>,
    /// Only print what would be done, and each gate's verdict
    #[arg(long)]
    pub plan: bool,
    /// Run an environment whose target is remote (ec2) on the local Docker engine instead
    #[arg(long)]
    pub local: bool,
    /// Only remove ENV's promotion lock left by a dead run (recorded in the ledger), then
    /// exit; promote again afterwards
    #[arg(long, conflicts_with_all = ["release", "plan"])]
    pub break_lock: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Environment to roll back
    pub env: String,
    /// Only print what would be done
    #[arg(long)]
    pub plan: bool,
    /// Run an environment whose target is remote (ec2) on the local Docker engine instead
    #[arg(long)]
    pub local: bool,
}

#[derive(Debug, Args)]
pub struct RejectArgs {
    /// Release id or alias
    pub release: String,
    /// Why (recorded in the ledger)
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// Release id or alias (approved for the environment given with --env)
    pub release: String,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// How many of the environment's newest releases to keep (current, previous and
    /// launch-template releases stay besides)
    #[arg(long, value_name = "N")]
    pub keep: usize,
    /// Only list what would be removed, and why each release that stays stays
    #[arg(long)]
    pub plan: bool,
}

#[derive(Debug, Args)]
pub struct CleanArgs {
    /// Only list what would be removed
    #[arg(long)]
    pub dry_run: bool,
}

/// `pipe ledger ...`.
#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Move the local ledger (.pipe/ledger.jsonl) into the shared ledger `[ledger]` names;
    /// the file is kept as .pipe/ledger.jsonl.pushed
    Push,
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Packer JSON templates: one, or a base and an app template chained by a source-AMI
    /// variable; what has no equivalent is listed at the top of the file and printed
    Packer(ImportPackerArgs),
}

#[derive(Debug, Args)]
pub struct ImportPackerArgs {
    /// The templates (`primal.json carnivore.json`); paths in them are relative to here
    #[arg(required = true, num_args = 1..=2, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Where to write the Pipelinefile
    #[arg(short, long, default_value = "Pipelinefile.toml", value_name = "PATH")]
    pub output: PathBuf,
    /// Pipeline name (default: from the AMI names, else this folder's name)
    #[arg(long)]
    pub name: Option<String>,
    /// Overwrite an existing output file
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum BoxCommand {
    /// List built boxes
    List,
    /// Build a box from boxes/NAME.toml (a no-op when the recipe is unchanged)
    Build(BoxBuildArgs),
    /// Remove a built box
    Remove(BoxRemoveArgs),
}

#[derive(Debug, Args)]
pub struct BoxBuildArgs {
    /// Box name (boxes/NAME.toml)
    pub name: String,
    /// Target kind to build for
    #[arg(long, default_value = "docker", value_name = "KIND")]
    pub target: String,
    /// Build even when an image with the recipe's digest exists
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct BoxRemoveArgs {
    /// Box name
    pub name: String,
    /// Target kind
    #[arg(long, default_value = "docker", value_name = "KIND")]
    pub target: String,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List the package caches with their size
    List,
    /// Remove the package caches (all of them, or one box's)
    Clear(CacheClearArgs),
}

#[derive(Debug, Args)]
pub struct CacheClearArgs {
    /// The cache to remove, as `pipe cache list` names it (e.g. docker-debian-12)
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// Shell to print completions for
    pub shell: clap_complete::Shell,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn var_needs_an_equals_sign() {
        assert!(parse_var("a").is_err());
        assert_eq!(parse_var("a=b=c").unwrap(), ("a".into(), "b=c".into()));
    }
}
