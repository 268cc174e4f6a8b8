//! `-v` and `-vv` for everything pipe runs on a machine: a [`Communicator`] that shows each
//! command (and upload) through the [`Printer`] before passing it on, and with `-vv` the
//! command's full output too. Targets wrap every machine's communicator in it, so
//! provisioners, service delivery, readiness waits and checks are all shown the same way.
//! Only argv is shown, never the request's environment (where sensitive values travel), and
//! the printer masks secrets in what is.

use std::path::Path;

use crate::communicators::{
    Communicator, ExecError, ExecRequest, OutputSink, Stream, UploadOptions,
};
use crate::ui::{Printer, Verbosity};

use super::output::LineSink;

/// A communicator that shows what it runs, per the printer's verbosity.
pub struct Traced {
    inner: Box<dyn Communicator>,
    printer: Printer,
}

impl Traced {
    /// Wraps `inner`; below `-v` it only passes calls on.
    pub fn boxed(inner: Box<dyn Communicator>, printer: &Printer) -> Box<dyn Communicator> {
        Box::new(Self {
            inner,
            printer: printer.clone(),
        })
    }
}

/// How argv reads as one shell line: words with anything unusual single-quoted.
pub fn shell_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Passes output on to the caller's sink and shows it line by line.
struct Tee<'s> {
    inner: &'s mut dyn OutputSink,
    shown: LineSink,
}

impl OutputSink for Tee<'_> {
    fn chunk(&mut self, stream: Stream, data: &[u8]) {
        self.inner.chunk(stream, data);
        self.shown.chunk(stream, data);
    }

    fn shows_live(&self) -> bool {
        true
    }
}

impl Communicator for Traced {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn exec(&self, req: &ExecRequest, sink: &mut dyn OutputSink) -> Result<i32, ExecError> {
        let verbosity = self.printer.verbosity();
        if verbosity < Verbosity::Verbose {
            return self.inner.exec(req, sink);
        }
        let source = self.describe();
        let mut line = shell_line(&req.argv);
        if let Some(user) = &req.user {
            line = format!("(as {user}) {line}");
        }
        self.printer.command(&source, &line);
        if verbosity < Verbosity::Trace || sink.shows_live() {
            return self.inner.exec(req, sink);
        }
        let mut tee = Tee {
            inner: sink,
            shown: LineSink::new(&self.printer, source, true),
        };
        let code = self.inner.exec(req, &mut tee);
        tee.shown.finish();
        code
    }

    fn upload(&self, src: &Path, dest: &str, opts: &UploadOptions) -> Result<(), ExecError> {
        self.printer.command(
            &self.describe(),
            &format!("upload {} to {dest}", src.display()),
        );
        self.inner.upload(src, dest, opts)
    }

    fn upload_bytes(&self, data: &[u8], dest: &str, mode: u32) -> Result<(), ExecError> {
        self.printer.command(
            &self.describe(),
            &format!("upload {} bytes to {dest} (mode {mode:o})", data.len()),
        );
        self.inner.upload_bytes(data, dest, mode)
    }

    fn download(&self, src: &str, dest: &Path) -> Result<(), ExecError> {
        self.printer.command(
            &self.describe(),
            &format!("download {src} to {}", dest.display()),
        );
        self.inner.download(src, dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::communicators::Collect;
    use crate::ui::OutputMode;

    /// Prints `hello` and `oops` for every command.
    struct Echo;

    impl Communicator for Echo {
        fn describe(&self) -> String {
            "echo m".into()
        }

        fn exec(&self, _: &ExecRequest, sink: &mut dyn OutputSink) -> Result<i32, ExecError> {
            sink.chunk(Stream::Stdout, b"hello\n");
            sink.chunk(Stream::Stderr, b"oops\n");
            Ok(0)
        }

        fn upload(&self, _: &Path, _: &str, _: &UploadOptions) -> Result<(), ExecError> {
            Ok(())
        }

        fn upload_bytes(&self, _: &[u8], _: &str, _: u32) -> Result<(), ExecError> {
            Ok(())
        }

        fn download(&self, _: &str, _: &Path) -> Result<(), ExecError> {
            Ok(())
        }
    }

    fn human(verbosity: Verbosity) -> Printer {
        Printer::capturing(
            OutputMode::Human {
                color: false,
                progress: false,
            },
            verbosity,
        )
    }

    /// What a command run through a traced communicator prints at `verbosity`; the caller's
    /// sink always gets the whole output.
    fn shown(p: &Printer, live: bool) -> Vec<String> {
        p.redactor().add("s3cret");
        let comm = Traced::boxed(Box::new(Echo), p);
        let req = ExecRequest {
            env: [("TOKEN".to_string(), "s3cret".to_string())].into(),
            ..ExecRequest::shell("curl -H 'X: s3cret' http://127.0.0.1:8080/")
        };
        if live {
            let mut sink = LineSink::new(p, "provisioner", true);
            comm.exec(&req, &mut sink).unwrap();
            sink.finish();
        } else {
            let mut sink = Collect::default();
            comm.exec(&req, &mut sink).unwrap();
            assert_eq!(
                (sink.stdout, sink.stderr),
                (b"hello\n".to_vec(), b"oops\n".to_vec())
            );
        }
        comm.upload_bytes(b"unit", "/etc/x", 0o644).unwrap();
        p.captured()
    }

    const COMMAND: &str =
        r#"    [echo m] $ sh -c 'curl -H '\''X: ********'\'' http://127.0.0.1:8080/'"#;

    #[test]
    fn normal_shows_no_command_and_verbose_shows_each_command_without_its_output() {
        assert!(shown(&human(Verbosity::Normal), false).is_empty());
        assert_eq!(
            shown(&human(Verbosity::Verbose), false),
            vec![
                COMMAND.to_string(),
                "    [echo m] $ upload 4 bytes to /etc/x (mode 644)".to_string(),
            ]
        );
    }

    #[test]
    fn very_verbose_shows_each_command_and_its_full_output_once() {
        let lines = shown(&human(Verbosity::Trace), false);
        assert_eq!(
            lines[..3],
            [
                COMMAND.to_string(),
                "    [echo m] hello".to_string(),
                "    [echo m] oops".to_string()
            ]
        );
        // A provisioner's sink already shows its output: not twice.
        let lines = shown(&human(Verbosity::Trace), true);
        assert_eq!(
            lines[..3],
            [
                COMMAND.to_string(),
                "    [provisioner] hello".to_string(),
                "    [provisioner] oops".to_string()
            ]
        );
        assert_eq!(lines.len(), 4, "{lines:?}");
    }

    #[test]
    fn json_shows_commands_as_output_events_of_stream_command() {
        let p = Printer::capturing(OutputMode::Json, Verbosity::Verbose);
        let lines = shown(&p, false);
        let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(first["event"], "output");
        assert_eq!(first["stream"], "command");
        assert_eq!(first["source"], "echo m");
        assert!(!lines.iter().any(|l| l.contains("s3cret")), "{lines:?}");
        assert!(!lines.iter().any(|l| l.contains("TOKEN")), "{lines:?}");
    }
}
