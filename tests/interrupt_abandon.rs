//! The third Ctrl-C abandons cleanup: pipe stops removing things, says what is left, and keeps
//! it in the journal for `pipe clean`. Its own test binary, because the interrupt count is
//! process-wide.

use std::cell::RefCell;

use pipe::runner::{Journal, Resource, Runner, journal};
use pipe::ui::{OutputMode, Printer, Verbosity};

#[test]
fn a_third_interrupt_abandons_cleanup_and_lists_what_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let printer = Printer::with_mode(
        OutputMode::Human {
            color: false,
            progress: false,
        },
        Verbosity::Quiet,
    );
    let removed: RefCell<Vec<&str>> = RefCell::new(Vec::new());
    let mut runner = Runner::new(Journal::start(dir.path(), "bake", "p").unwrap(), &printer);
    for name in ["first", "second"] {
        runner
            .create(
                Resource::Container { name: name.into() },
                || Ok(()),
                || {
                    removed.borrow_mut().push(name);
                    Ok(())
                },
            )
            .unwrap();
    }
    // Ctrl-C three times before cleanup gets going.
    for _ in 0..3 {
        pipe::interrupt::request();
    }
    assert!(pipe::interrupt::abandoned());
    let err = runner
        .finish::<()>(Err(pipe::error::Error::Interrupted))
        .unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("interrupted"), "{text}");
    assert!(
        text.contains("cleanup abandoned; left behind: container second, container first"),
        "{text}"
    );
    assert!(text.contains("pipe clean"), "{text}");
    assert_eq!(err.exit_code(), 130);
    assert!(removed.borrow().is_empty(), "nothing was removed");
    let left = journal::list(dir.path()).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(
        left[0].1.resources.len(),
        2,
        "both stay journaled for pipe clean"
    );
}
