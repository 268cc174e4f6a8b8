//! Durations written for people: `90s`, `30m`, `2h`, `1d`, and combinations from the largest
//! unit down (`1h30m`, `1d12h`), as `min_soak` takes them.

use std::time::Duration;

/// The units, largest first, with their length in seconds.
const UNITS: [(char, u64); 4] = [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];

/// What a duration looks like, for hints.
pub const EXAMPLES: &str =
    "a number and a unit (d, h, m, s), largest first: `90s`, `30m`, `2h`, `1d`, `1h30m`";

/// Parses `1h30m`-style text: one or more number-unit pairs, each unit at most once and from
/// the largest down; no spaces, signs or fractions. The error says what is wrong with it.
pub fn parse(text: &str) -> Result<Duration, String> {
    if text.is_empty() {
        return Err("an empty duration".into());
    }
    if text.contains(char::is_whitespace) {
        return Err(format!(
            "`{text}` has spaces: write it without, e.g. `1h30m`"
        ));
    }
    if text.contains(['.', ',']) {
        return Err(format!(
            "`{text}` has a fraction: write it in smaller units, e.g. `1h30m` for 1.5h"
        ));
    }
    let mut total: u64 = 0;
    let mut rest = text;
    // Units still allowed: each only once, and only after larger ones.
    let mut allowed = &UNITS[..];
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            let c = rest.chars().next().unwrap_or_default();
            return Err(if c.is_ascii_alphabetic() && rest.len() == text.len() {
                format!("`{text}` has no number before its unit")
            } else {
                format!("`{text}` has `{c}` where a number should be")
            });
        }
        let (number, after) = rest.split_at(digits);
        let Some(unit) = after.chars().next() else {
            return Err(format!(
                "`{text}` ends in a number without a unit (d, h, m or s)"
            ));
        };
        let Some(pos) = allowed.iter().position(|(u, _)| *u == unit) else {
            return Err(if UNITS.iter().any(|(u, _)| *u == unit) {
                format!("`{text}` repeats a unit or has them out of order (largest first)")
            } else {
                format!("`{text}` has an unknown unit `{unit}` (d, h, m or s)")
            });
        };
        let seconds = number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(allowed[pos].1))
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| format!("`{text}` is too long a duration"))?;
        total = seconds;
        allowed = &allowed[pos + 1..];
        rest = &after[unit.len_utf8()..];
    }
    Ok(Duration::from_secs(total))
}

/// The shortest text [`parse`] reads back as `d` (whole seconds): `1h30m`, `45s`, `0s`.
pub fn format(d: Duration) -> String {
    let mut left = d.as_secs();
    if left == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, len) in UNITS {
        if left >= len {
            out.push_str(&format!("{}{unit}", left / len));
            left %= len;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_single_units_and_combinations() {
        let cases = [
            ("90s", 90),
            ("30m", 1_800),
            ("2h", 7_200),
            ("1d", 86_400),
            ("1h30m", 5_400),
            ("1d2h3m4s", 93_784),
            ("0s", 0),
            ("007m", 420),
        ];
        for (text, secs) in cases {
            assert_eq!(parse(text), Ok(Duration::from_secs(secs)), "{text}");
        }
    }

    #[test]
    fn refuses_anything_else_and_says_why() {
        let cases = [
            ("", "empty"),
            ("2", "without a unit"),
            ("h", "no number"),
            ("2x", "unknown unit `x`"),
            ("1.5h", "a fraction"),
            ("2 hours", "spaces"),
            ("-1h", "`-` where a number"),
            ("1h 30m", "spaces"),
            ("30m1h", "out of order"),
            ("1h1h", "repeats a unit"),
            ("2H", "unknown unit `H`"),
            ("1hr", "`r` where a number"),
            ("99999999999999999999s", "too long"),
            ("213503982334602d", "too long"),
        ];
        for (text, why) in cases {
            let e = parse(text).expect_err(text);
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn formats_what_it_reads() {
        for secs in [0, 1, 59, 60, 61, 3_599, 3_600, 5_400, 86_400, 93_784] {
            let d = Duration::from_secs(secs);
            assert_eq!(parse(&format(d)), Ok(d), "{secs}");
        }
        assert_eq!(format(Duration::from_secs(5_400)), "1h30m");
        assert_eq!(format(Duration::from_millis(1_999)), "1s");
    }
}
