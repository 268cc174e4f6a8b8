//! Mutation testing of the Pipelinefile reader: the example Pipelinefile, mutated by a seeded
//! generator (bounded: 400 cases, deterministic, each case's seed printed on failure), is
//! validated with `--json`. Whatever the mutation, pipe never panics, exits 0 (still valid) or
//! 3 (problems listed with file:line:column), and every line it prints parses as JSON.

use std::path::Path;
use std::process::Command;

const CASES: u64 = 400;

/// splitmix64: a tiny deterministic generator, so a failing case is reproduced by its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Characters that matter to TOML and to pipe's templates, plus some that do not.
const ALPHABET: &[&str] = &[
    "[", "]", "{", "}", "\"", "'", "=", ",", ".", "#", "\n", " ", "\\", "{{", "}}", "vars.", "-",
    "0", "9", "é", "\t", "true", "\"\"\"", "[[", "]]", "x", "/", "..", "\u{0}",
];

fn mutate(text: &str, rng: &mut Rng) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..1 + rng.below(3) {
        let len = chars.len().max(1);
        match rng.below(6) {
            0 => {
                // Delete a short run.
                let at = rng.below(len);
                let n = 1 + rng.below(8);
                let end = (at + n).min(chars.len());
                chars.drain(at.min(chars.len())..end);
            }
            1 => {
                // Insert a token.
                let at = rng.below(len + 1).min(chars.len());
                let token = ALPHABET[rng.below(ALPHABET.len())];
                for (i, c) in token.chars().enumerate() {
                    chars.insert(at + i, c);
                }
            }
            2 => {
                // Replace one character.
                if !chars.is_empty() {
                    let at = rng.below(chars.len());
                    let token = ALPHABET[rng.below(ALPHABET.len())];
                    chars[at] = token.chars().next().unwrap_or('x');
                }
            }
            3 => {
                // Duplicate a line.
                let s: String = chars.iter().collect();
                let mut lines: Vec<&str> = s.lines().collect();
                if !lines.is_empty() {
                    let i = rng.below(lines.len());
                    let line = lines[i];
                    lines.insert(i, line);
                }
                chars = (lines.join("\n") + "\n").chars().collect();
            }
            4 => {
                // Swap two lines.
                let s: String = chars.iter().collect();
                let mut lines: Vec<&str> = s.lines().collect();
                if lines.len() > 1 {
                    let (a, b) = (rng.below(lines.len()), rng.below(lines.len()));
                    lines.swap(a, b);
                }
                chars = (lines.join("\n") + "\n").chars().collect();
            }
            _ => {
                // Truncate.
                let at = rng.below(len);
                chars.truncate(at);
            }
        }
    }
    chars.into_iter().collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            if e.file_name() != "node_modules" {
                copy_dir(&e.path(), &target);
            }
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn mutated_pipelinefiles_never_panic_and_always_answer_in_json() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(repo.join("Pipelinefile.toml")).unwrap();
    // The files the example names, so that only the mutations make it wrong.
    let dir = tempfile::tempdir().unwrap();
    for sub in ["app", "boxes", "provisioners"] {
        copy_dir(&repo.join(sub), &dir.path().join(sub));
    }
    let mut counts = [0usize; 2];
    for case in 0..CASES {
        let seed = 0x5eed_0000 + case;
        let mutated = mutate(&example, &mut Rng(seed));
        std::fs::write(dir.path().join("Pipelinefile.toml"), &mutated).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_pipe"))
            .args(["--json", "validate"])
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .env_remove("PIPE_DIGEST_KEY")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let context = || {
            format!(
                "seed {seed:#x}\n--- Pipelinefile\n{mutated}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
            )
        };
        assert!(!stderr.contains("panicked"), "pipe panicked: {}", context());
        match out.status.code() {
            Some(0) => counts[0] += 1,
            Some(3) => counts[1] += 1,
            other => panic!("exit {other:?}: {}", context()),
        }
        for line in stdout.lines() {
            assert!(
                serde_json::from_str::<serde_json::Value>(line).is_ok(),
                "not JSON: {line}\n{}",
                context()
            );
        }
    }
    // The generator does both: some mutations keep the file valid, most break it.
    assert!(counts[0] > 0 && counts[1] > 0, "valid/invalid: {counts:?}");
}
