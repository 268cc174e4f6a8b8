//! Ctrl-C and SIGTERM: the first asks the run to stop and clean up, the second says cleanup is
//! in progress, the third abandons cleanup (pipe then says what is left and exits).
//!
//! Long operations poll [`requested`]; nothing is killed from the signal handler itself.

use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNT: AtomicUsize = AtomicUsize::new(0);
static INSTALL: Once = Once::new();

/// Installs the SIGINT/SIGTERM handlers (once per process).
pub fn install() {
    INSTALL.call_once(|| {
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            // SAFETY: the handler only touches an atomic and writes to stderr with write(2),
            // both async-signal-safe.
            let _ = unsafe { signal_hook::low_level::register(sig, on_signal) };
        }
    });
}

fn on_signal() {
    let n = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    let msg: &[u8] = match n {
        1 => b"\ninterrupted: stopping and cleaning up (Ctrl-C again to see progress, a third time to abandon cleanup)\n",
        2 => b"\ncleanup is in progress; press Ctrl-C once more to abandon it (pipe clean removes what is left)\n",
        _ => b"\nabandoning cleanup\n",
    };
    // SAFETY: write(2) on stderr is async-signal-safe.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
    }
}

/// True once Ctrl-C or SIGTERM arrived.
pub fn requested() -> bool {
    COUNT.load(Ordering::SeqCst) > 0
}

/// True once the user asked three times: stop cleaning up.
pub fn abandoned() -> bool {
    COUNT.load(Ordering::SeqCst) >= 3
}

/// Marks the run as interrupted, as a signal would (tests and `--fail-at` hooks use this).
pub fn request() {
    COUNT.fetch_add(1, Ordering::SeqCst);
}

/// Resets the counter (tests only).
#[doc(hidden)]
pub fn reset() {
    COUNT.store(0, Ordering::SeqCst);
}
