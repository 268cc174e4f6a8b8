//! Waiting for a resource to reach a state: polls from about a second, each interval 1.5 times
//! the last (capped), each jittered by ±20% so that many waiters do not poll in step, up to a
//! limit. Giving up names the resource, the state and how long it was waited for. A look that
//! fails with throttling or a server error (after the SDK's own retries) is a look that saw
//! nothing: the wait goes on, unless [`MAX_FAILED_LOOKS`] fail in a row.

use std::time::{Duration, Instant};

use super::error::AwsError;

/// Looks in a row that may fail with throttling or a server error before the wait gives up.
pub const MAX_FAILED_LOOKS: u32 = 5;

/// How a wait polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitPolicy {
    /// The first interval.
    pub first: Duration,
    /// No interval grows beyond this.
    pub max_interval: Duration,
    /// Give up after this long.
    pub limit: Duration,
}

impl WaitPolicy {
    /// Polls from 1 s up to every 15 s, for at most `limit`.
    pub fn up_to(limit: Duration) -> Self {
        Self {
            first: Duration::from_secs(1),
            max_interval: Duration::from_secs(15),
            limit,
        }
    }
}

/// What one look at the resource found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// In the state waited for.
    Done,
    /// Not yet; the state it is in.
    Pending(String),
    /// In a state it will not leave for the one waited for, and why.
    Failed { state: String, reason: String },
}

/// What is waited for, for messages.
#[derive(Debug, Clone, Copy)]
pub struct Waiting<'a> {
    /// `instance`, `image`.
    pub what: &'static str,
    pub id: &'a str,
    /// `running`, `available`.
    pub state: &'a str,
}

/// Polls `look` until it sees [`Seen::Done`]; `stop` (Ctrl-C) is asked before every look and
/// between them.
pub fn until(
    waiting: Waiting<'_>,
    policy: WaitPolicy,
    stop: &dyn Fn() -> bool,
    mut look: impl FnMut() -> Result<Seen, AwsError>,
) -> Result<(), AwsError> {
    let started = Instant::now();
    let mut interval = policy.first;
    let mut failed_looks = 0;
    loop {
        // Ctrl-C before a look too: what was not seen done when it came is not taken as done
        // (an AMI still being made is deregistered, not kept as a layer).
        if stop() {
            return Err(AwsError::Interrupted);
        }
        let seen = match look() {
            // Throttled or a server error even after the SDK's own retries: the next poll,
            // after a longer pause, may get through; only a run of them ends the wait.
            Err(e) if e.is_transient() && failed_looks + 1 < MAX_FAILED_LOOKS => {
                failed_looks += 1;
                Seen::Pending(format!("not seen: {e}"))
            }
            other => {
                failed_looks = 0;
                other?
            }
        };
        let last = match seen {
            Seen::Done => return Ok(()),
            Seen::Pending(state) => state,
            Seen::Failed { state, reason } => {
                return Err(AwsError::WaitFailed {
                    what: waiting.what,
                    id: waiting.id.to_string(),
                    state: waiting.state.to_string(),
                    last: state,
                    reason: if reason.is_empty() {
                        String::new()
                    } else {
                        format!(": {reason}")
                    },
                });
            }
        };
        let waited = started.elapsed();
        if waited >= policy.limit {
            return Err(AwsError::WaitTimeout {
                what: waiting.what,
                id: waiting.id.to_string(),
                state: waiting.state.to_string(),
                last,
                waited,
            });
        }
        let pause = jittered(interval).min(policy.limit - waited);
        sleep_unless(pause, stop)?;
        interval = interval.mul_f64(1.5).min(policy.max_interval);
    }
}

/// Sleeps `d` in short slices, returning early with [`AwsError::Interrupted`] when `stop`.
pub fn sleep_unless(d: Duration, stop: &dyn Fn() -> bool) -> Result<(), AwsError> {
    let end = Instant::now() + d;
    loop {
        if stop() {
            return Err(AwsError::Interrupted);
        }
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(100)));
    }
}

/// `d` times a factor in [0.8, 1.2), from the clock's low bits (no cryptographic need).
fn jittered(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let mut x = u64::from(nanos) ^ 0x9e37_79b9_7f4a_7c15;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    let unit = (x % 10_000) as f64 / 10_000.0;
    d.mul_f64(0.8 + 0.4 * unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast(limit_ms: u64) -> WaitPolicy {
        WaitPolicy {
            first: Duration::from_millis(5),
            max_interval: Duration::from_millis(20),
            limit: Duration::from_millis(limit_ms),
        }
    }

    const W: Waiting<'static> = Waiting {
        what: "instance",
        id: "i-1",
        state: "running",
    };

    #[test]
    fn polls_until_done() {
        let mut n = 0;
        until(W, fast(5_000), &|| false, || {
            n += 1;
            Ok(if n < 3 {
                Seen::Pending("pending".into())
            } else {
                Seen::Done
            })
        })
        .unwrap();
        assert_eq!(n, 3);
    }

    #[test]
    fn giving_up_names_the_resource_the_state_and_the_time() {
        let err = until(W, fast(60), &|| false, || {
            Ok(Seen::Pending("pending".into()))
        })
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("instance i-1 was not running after 0s (last seen: pending)"),
            "{text}"
        );
    }

    #[test]
    fn a_dead_end_state_fails_at_once_and_stop_interrupts() {
        let err = until(W, fast(5_000), &|| false, || {
            Ok(Seen::Failed {
                state: "terminated".into(),
                reason: "Server.InternalError".into(),
            })
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "instance i-1 became terminated while waiting for it to be running: Server.InternalError"
        );
        let mut looked = false;
        let err = until(W, fast(5_000), &|| true, || {
            looked = true;
            Ok(Seen::Done)
        })
        .unwrap_err();
        assert!(matches!(err, AwsError::Interrupted));
        assert!(!looked, "no look after Ctrl-C");
    }

    fn throttled() -> AwsError {
        AwsError::Api {
            operation: "DescribeInstances",
            code: Some("RequestLimitExceeded".into()),
            detail: "RequestLimitExceeded: Request limit exceeded.".into(),
        }
    }

    #[test]
    fn throttled_looks_are_waited_through_but_not_forever_and_other_errors_end_the_wait() {
        let mut n = 0;
        until(W, fast(5_000), &|| false, || {
            n += 1;
            match n {
                1..=4 => Err(throttled()),
                5 => Ok(Seen::Pending("pending".into())),
                6..=9 => Err(throttled()),
                _ => Ok(Seen::Done),
            }
        })
        .unwrap();
        assert_eq!(
            n, 10,
            "two runs of four failed looks, each followed by a good one"
        );

        let mut n = 0;
        let err = until(W, fast(5_000), &|| false, || {
            n += 1;
            Err(throttled())
        })
        .unwrap_err();
        assert_eq!(n, MAX_FAILED_LOOKS);
        assert_eq!(err.code(), Some("RequestLimitExceeded"));

        let mut n = 0;
        let err = until(W, fast(5_000), &|| false, || {
            n += 1;
            Err(AwsError::Api {
                operation: "DescribeInstances",
                code: Some("UnauthorizedOperation".into()),
                detail: "UnauthorizedOperation: no".into(),
            })
        })
        .unwrap_err();
        assert_eq!(n, 1, "not worth another look");
        assert_eq!(err.code(), Some("UnauthorizedOperation"));
    }

    #[test]
    fn a_wait_that_gives_up_while_throttled_says_so() {
        let slow = WaitPolicy {
            first: Duration::from_millis(50),
            max_interval: Duration::from_millis(50),
            limit: Duration::from_millis(60),
        };
        let err = until(W, slow, &|| false, || Err(throttled())).unwrap_err();
        assert!(
            err.to_string()
                .contains("last seen: not seen: DescribeInstances failed"),
            "{err}"
        );
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(1));
            assert!(d >= Duration::from_millis(800) && d < Duration::from_millis(1200));
        }
    }
}
