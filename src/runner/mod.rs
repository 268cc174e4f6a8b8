//! The step runner: each step may create resources, each resource comes with its cleanup, and
//! on error, Ctrl-C or SIGTERM the cleanups run in reverse. Packer's multistep, with typed
//! values instead of a state bag: a step is a closure returning what the next one needs.
//!
//! Every resource is written to the run's journal *before* it is created; a cleanup that ran
//! (or a resource kept as the run's result) is released from it. What a killed run left is
//! thus always in `.pipe/journal/`, for `pipe clean`.

pub mod journal;

use std::time::{Duration, Instant};

pub use journal::{Journal, Resource};

use crate::error::{Error, Result};
use crate::ui::Printer;

type CleanupFn<'a> = Box<dyn FnOnce() -> Result<()> + 'a>;

struct Cleanup<'a> {
    resource: Resource,
    action: CleanupFn<'a>,
}

/// Runs steps and owns their cleanups.
pub struct Runner<'a> {
    journal: Journal,
    cleanups: Vec<Cleanup<'a>>,
    printer: Printer,
}

impl<'a> Runner<'a> {
    pub fn new(journal: Journal, printer: &Printer) -> Self {
        Self {
            journal,
            cleanups: Vec::new(),
            printer: printer.clone(),
        }
    }

    /// The printer the run reports through.
    pub fn printer(&self) -> &Printer {
        &self.printer
    }

    /// The run id, used to label everything this run creates (`pipe.run=<id>`).
    pub fn run_id(&self) -> String {
        self.journal.run_id().to_string()
    }

    /// A test hook inside a step (see [`pause_point`]), for code that has a runner but no
    /// printer.
    pub fn pause_point(&self, name: &str) {
        pause_point(&self.printer, name);
    }

    /// Runs one named step; an interrupt before it starts ends the run.
    pub fn step<T>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.judged_step(name, f, |_| None)
    }

    /// Runs one named step whose value can itself be a failure (a verification whose checks
    /// failed is an `Ok` outcome): when `verdict` returns a detail, the step is shown as
    /// failed with it (human and `--json`), and the value is still returned.
    pub fn judged_step<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut Self) -> Result<T>,
        verdict: impl FnOnce(&T) -> Option<String>,
    ) -> Result<T> {
        pause_point(&self.printer, name);
        if crate::interrupt::requested() {
            return Err(Error::Interrupted);
        }
        let handle = self.printer.step(name);
        let started = Instant::now();
        let result = f(self);
        let result = match result {
            Ok(v) if crate::interrupt::requested() => {
                drop(v);
                Err(Error::Interrupted)
            }
            other => other,
        };
        let _ = started;
        match &result {
            Ok(v) => match verdict(v) {
                None => handle.done(None),
                Some(detail) => handle.failed(Some(detail)),
            },
            Err(e) => handle.failed(Some(short(e))),
        }
        result
    }

    /// Creates a resource: journals it, runs `create`, and registers `cleanup` for it. If
    /// `create` fails the cleanup still runs later (a half-created resource is still a leak).
    pub fn create<T>(
        &mut self,
        resource: Resource,
        create: impl FnOnce() -> Result<T>,
        cleanup: impl FnOnce() -> Result<()> + 'a,
    ) -> Result<T> {
        self.journal.intend(resource.clone())?;
        self.cleanups.push(Cleanup {
            resource,
            action: Box::new(cleanup),
        });
        create()
    }

    /// Keeps a resource as the run's result: no cleanup, out of the journal.
    pub fn keep(&mut self, resource: &Resource) -> Result<()> {
        self.cleanups.retain(|c| &c.resource != resource);
        self.journal.release(resource)?;
        Ok(())
    }

    /// Removes a resource now (it was temporary), through its registered cleanup.
    pub fn dispose(&mut self, resource: &Resource) -> Result<()> {
        if let Some(pos) = self.cleanups.iter().rposition(|c| &c.resource == resource) {
            let c = self.cleanups.remove(pos);
            (c.action)().map_err(|e| {
                let message = format!("removing {resource}: {e}");
                // It stays in the journal: say who removes it.
                let later = "`pipe clean` removes it later (it stays in the run's journal)";
                let hint = match e.hint() {
                    Some(h) => format!("{h}; {later}"),
                    None => later.to_string(),
                };
                Error::runtime(message, Some(hint)).caused_by(e)
            })?;
        }
        self.journal.release(resource)?;
        Ok(())
    }

    /// A mark in the run: what is created after it can be kept or disposed of together
    /// ([`Runner::keep_since`], [`Runner::dispose_since`]).
    pub fn mark(&self) -> usize {
        self.cleanups.len()
    }

    /// Keeps every resource created since `mark` as the run's result.
    pub fn keep_since(&mut self, mark: usize) -> Result<()> {
        let kept: Vec<Resource> = self
            .cleanups
            .iter()
            .skip(mark)
            .map(|c| c.resource.clone())
            .collect();
        for res in &kept {
            self.keep(res)?;
        }
        Ok(())
    }

    /// Removes every resource created since `mark` now, newest first; the first failure is
    /// returned after all were tried.
    pub fn dispose_since(&mut self, mark: usize) -> Result<()> {
        let mut first = None;
        while self.cleanups.len() > mark {
            let res = self.cleanups[self.cleanups.len() - 1].resource.clone();
            if let Err(e) = self.dispose(&res) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Ends the run. On success temporary resources are still cleaned up (everything not
    /// kept); on failure the same, and cleanup errors are reported with the original error.
    pub fn finish<T>(mut self, result: Result<T>) -> Result<T> {
        let failures = self.cleanup_all(result.is_err());
        let journal = self.journal;
        let finish = journal.finish();
        match result {
            Ok(v) if failures.is_empty() => {
                finish?;
                Ok(v)
            }
            Ok(_) => Err(Error::Cleanup {
                error: None,
                failures,
            }),
            Err(e) if failures.is_empty() => Err(e),
            Err(e) => Err(Error::Cleanup {
                error: Some(Box::new(e)),
                failures,
            }),
        }
    }

    fn cleanup_all(&mut self, failed: bool) -> Vec<String> {
        let mut failures = Vec::new();
        if self.cleanups.is_empty() {
            return failures;
        }
        let handle = failed.then(|| self.printer.step("cleaning up"));
        while let Some(c) = self.cleanups.pop() {
            if crate::interrupt::abandoned() {
                let mut left: Vec<String> = vec![c.resource.to_string()];
                left.extend(
                    self.cleanups
                        .drain(..)
                        .rev()
                        .map(|c| c.resource.to_string()),
                );
                failures.push(format!(
                    "cleanup abandoned; left behind: {} (run `pipe clean` to remove them)",
                    left.join(", ")
                ));
                break;
            }
            match (c.action)() {
                Ok(()) => {
                    let _ = self.journal.release(&c.resource);
                }
                Err(e) => failures.push(format!("{}: {e}", c.resource)),
            }
        }
        if let Some(h) = handle {
            if failures.is_empty() {
                h.done(None);
            } else {
                h.failed(Some(format!("{} left", failures.len())));
            }
        }
        failures
    }
}

/// Test hook, for the signal tests: with `PIPE_TEST_PAUSE_AT=<prefix>` set, a step (or another
/// pause point) whose name starts with the prefix prints `test hook: paused at ...` and waits
/// for Ctrl-C/SIGTERM (at most two minutes), so a test can signal exactly there. Unset, it costs
/// one environment lookup.
#[doc(hidden)]
pub fn pause_point(printer: &Printer, name: &str) {
    let Some(want) = std::env::var_os("PIPE_TEST_PAUSE_AT") else {
        return;
    };
    let want = want.to_string_lossy();
    if want.is_empty() || !name.starts_with(want.as_ref()) {
        return;
    }
    printer.warn(format!("test hook: paused at `{name}`"), None);
    let started = Instant::now();
    while !crate::interrupt::requested() && started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn short(e: &Error) -> String {
    let s = e.to_string();
    s.lines().next().unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::{OutputMode, Verbosity};
    use std::cell::RefCell;

    fn printer() -> Printer {
        Printer::with_mode(
            OutputMode::Human {
                color: false,
                progress: false,
            },
            Verbosity::Quiet,
        )
    }

    #[test]
    fn cleanups_run_in_reverse_and_keep_the_original_error() {
        let dir = tempfile::tempdir().unwrap();
        let log = RefCell::new(Vec::new());
        let p = printer();
        let mut r = Runner::new(Journal::start(dir.path(), "test", "p").unwrap(), &p);
        let res: Result<()> = (|| {
            r.step("one", |r| {
                r.create(
                    Resource::Container { name: "a".into() },
                    || Ok(()),
                    || {
                        log.borrow_mut().push("rm a");
                        Ok(())
                    },
                )
            })?;
            r.step("two", |r| {
                r.create(
                    Resource::Image {
                        reference: "b".into(),
                    },
                    || Ok(()),
                    || {
                        log.borrow_mut().push("rm b");
                        Err(Error::runtime("boom", None))
                    },
                )
            })?;
            r.step("three", |_| Err(Error::runtime("step three failed", None)))
        })();
        let err = r.finish(res).unwrap_err();
        assert_eq!(*log.borrow(), vec!["rm b", "rm a"]);
        let text = err.to_string();
        assert!(text.contains("step three failed"), "{text}");
        assert!(text.contains("image b: boom"), "{text}");
        // The failed cleanup's resource stays in the journal for `pipe clean`.
        let left = journal::list(dir.path()).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(
            left[0].1.resources,
            vec![Resource::Image {
                reference: "b".into()
            }]
        );
    }

    #[test]
    fn kept_resources_survive_and_the_journal_goes_away() {
        let dir = tempfile::tempdir().unwrap();
        let p = printer();
        let removed = RefCell::new(false);
        let mut r = Runner::new(Journal::start(dir.path(), "test", "p").unwrap(), &p);
        let img = Resource::Image {
            reference: "kept".into(),
        };
        r.create(
            img.clone(),
            || Ok(()),
            || {
                *removed.borrow_mut() = true;
                Ok(())
            },
        )
        .unwrap();
        r.keep(&img).unwrap();
        r.finish(Ok(())).unwrap();
        assert!(!*removed.borrow());
        assert!(journal::list(dir.path()).unwrap().is_empty());
    }
}
