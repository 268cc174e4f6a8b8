//! Everything pipe prints goes through [`Printer`]: colors and progress on a terminal, plain
//! lines otherwise, NDJSON events with `--json`. Sensitive values are masked here, once, for
//! every path out.

mod event;
mod printer;
pub mod profile;
pub mod redact;
pub mod table;

pub use event::{Event, Level, StepStatus};
pub use printer::{COMMAND, OutputMode, Printer, Verbosity, format_duration};
pub use redact::Redactor;
