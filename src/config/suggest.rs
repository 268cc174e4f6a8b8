//! "Did you mean" for misspelled keys, names and expressions.

/// The candidate closest to `word`, if one is close enough to be a likely typo.
pub fn closest<'a, I>(word: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let lower = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| {
            let c_lower = c.to_ascii_lowercase();
            let jw = strsim::jaro_winkler(&lower, &c_lower);
            // A swap of two neighbours (`nmae`, `prot`, `evn`) is one edit, not two.
            let lev = strsim::osa_distance(&lower, &c_lower);
            (c, jw, lev)
        })
        // Short words need a close edit-distance match: jaro-winkler is generous with them.
        .filter(|(c, jw, lev)| {
            let max_edits = match c.len() {
                0..=2 => 0,
                3..=4 => 1,
                _ => 2,
            };
            *lev <= max_edits || (*jw > 0.88 && c.len() > 4)
        })
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.2.cmp(&a.2)))
        .map(|(c, _, _)| c)
}

/// `did you mean `x`?` for the closest candidate.
pub fn did_you_mean<'a, I>(word: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = &'a str>,
{
    closest(word, candidates).map(|c| format!("did you mean `{c}`?"))
}

/// `a`, `b` and `c`: candidates listed for a hint.
pub fn list<'a, I>(items: I) -> String
where
    I: IntoIterator<Item = &'a str>,
{
    join(items, "and")
}

/// `a`, `b` or `c`: alternatives.
pub fn list_or<'a, I>(items: I) -> String
where
    I: IntoIterator<Item = &'a str>,
{
    join(items, "or")
}

fn join<'a, I>(items: I, last_word: &str) -> String
where
    I: IntoIterator<Item = &'a str>,
{
    let items: Vec<String> = items.into_iter().map(|i| format!("`{i}`")).collect();
    match items.as_slice() {
        [] => "none".to_string(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} {last_word} {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_typos_but_not_strangers() {
        let keys = ["precache", "provision"];
        assert_eq!(closest("provison", keys), Some("provision"));
        assert_eq!(closest("precach", keys), Some("precache"));
        assert_eq!(closest("zebra", keys), None);
        assert_eq!(closest("dokcer", ["docker", "qemu", "ec2"]), Some("docker"));
        assert_eq!(closest("ec3", ["docker", "qemu", "ec2"]), Some("ec2"));
        assert_eq!(closest("x", ["a", "b"]), None);
        // Short keys with two letters swapped.
        assert_eq!(closest("nmae", ["name", "command"]), Some("name"));
        assert_eq!(closest("prot", ["port", "host_port"]), Some("port"));
        assert_eq!(closest("evn", ["env", "vars"]), Some("env"));
    }

    #[test]
    fn lists_read_like_prose() {
        assert_eq!(list(["a"]), "`a`");
        assert_eq!(list(["a", "b", "c"]), "`a`, `b` and `c`");
    }
}
