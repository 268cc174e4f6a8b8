//! Located errors in a Pipelinefile, rendered the way compilers do:
//!
//! ```text
//! error: unknown key `provison` in [base]
//!   --> Pipelinefile.toml:12:1
//!    |
//! 12 | provison = []
//!    | ^^^^^^^^
//!    = help: did you mean `provision`?
//! ```

use std::fmt::Write as _;
use std::path::Path;

use super::model::Span;

/// One problem in a Pipelinefile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub message: String,
    /// Where; `None` for problems about the file as a whole.
    pub span: Option<Span>,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>, span: Span) -> Self {
        Self {
            message: message.into(),
            span: Some(span),
            hint: None,
        }
    }

    pub fn whole_file(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            span: None,
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = source[line_start..offset].chars().count() + 1;
    (line, col)
}

/// Where each line starts, built once per file: locating a diagnostic is then a binary
/// search, so reporting many problems takes time proportional to their number, not to their
/// number times the file's size.
pub struct LineIndex<'a> {
    source: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(source: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(source.match_indices('\n').map(|(i, _)| i + 1));
        Self { source, starts }
    }

    /// 1-based line and column (in characters), and the line's byte range without its
    /// newline.
    fn locate(&self, offset: usize) -> (usize, usize, usize, usize) {
        let offset = offset.min(self.source.len());
        let line = self.starts.partition_point(|s| *s <= offset);
        let start = self.starts[line - 1];
        let end = self
            .starts
            .get(line)
            .map_or(self.source.len(), |next| next - 1);
        let col = self.source[start..offset].chars().count() + 1;
        (line, col, start, end)
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let (line, col, _, _) = self.locate(offset);
        (line, col)
    }

    /// The byte offset of a 1-based line and column (in characters), clamped to the line
    /// (a tool that reports lines and columns, such as shellcheck, back to a span).
    pub fn offset(&self, line: usize, col: usize) -> usize {
        let Some(&start) = self.starts.get(line.max(1) - 1) else {
            return self.source.len();
        };
        let end = self
            .starts
            .get(line.max(1))
            .map_or(self.source.len(), |next| next - 1);
        self.source[start..end]
            .char_indices()
            .nth(col.max(1) - 1)
            .map_or(end, |(i, _)| start + i)
    }
}

/// Renders diagnostics for `display_path` (as the user should see it), one after the other,
/// followed by a summary line (`has 1 error`, `has N errors`), as `--json` reports the count.
pub fn render(diagnostics: &[Diagnostic], display_path: &Path, source: &str) -> String {
    let mut out = String::new();
    let index = LineIndex::new(source);
    for (i, d) in diagnostics.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        render_one(&mut out, "error", d, display_path, &index);
    }
    if !diagnostics.is_empty() {
        let n = diagnostics.len();
        let _ = writeln!(
            out,
            "\nerror: {} has {n} error{}",
            display_path.display(),
            if n == 1 { "" } else { "s" }
        );
    }
    out
}

/// Renders one diagnostic about `source` (the file shown as `path`) under `level` (`error`,
/// `warning`): the same shape for every file pipe points into, the Pipelinefile or a
/// provisioner's script (`pipe lint`).
pub fn render_one(
    out: &mut String,
    level: &str,
    d: &Diagnostic,
    path: &Path,
    index: &LineIndex<'_>,
) {
    let source = index.source;
    let _ = writeln!(out, "{level}: {}", d.message);
    let Some(span) = d.span else {
        let _ = writeln!(out, "  --> {}", path.display());
        if let Some(hint) = &d.hint {
            let _ = writeln!(out, "   = help: {hint}");
        }
        return;
    };
    let (line, col, line_start, line_end) = index.locate(span.start);
    let gutter = line.to_string().len();
    let pad = " ".repeat(gutter);
    let _ = writeln!(out, "{pad}--> {}:{line}:{col}", path.display());
    // Control characters of the offending line never reach the terminal as they are: each is
    // shown as U+FFFD, one column wide like the character it replaces.
    let text: String = source[line_start..line_end]
        .trim_end_matches('\r')
        .chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect();
    // The caret covers the span on its first line, at least one character.
    let span_end = span.end.min(line_end).max(span.start);
    let width = source[span.start.min(source.len())..span_end.min(source.len())]
        .chars()
        .count()
        .max(1);
    let _ = writeln!(out, "{pad} |");
    let _ = writeln!(out, "{line} | {text}");
    let _ = writeln!(out, "{pad} | {}{}", " ".repeat(col - 1), "^".repeat(width));
    if let Some(hint) = &d.hint {
        let _ = writeln!(out, "{pad} = help: {hint}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_caret_under_the_span() {
        let src = "[base]\nprovison = []\n";
        let d = Diagnostic::new("unknown key `provison` in [base]", Span::new(7, 15))
            .with_hint("did you mean `provision`?");
        let text = render(&[d], Path::new("Pipelinefile.toml"), src);
        assert_eq!(
            text,
            "error: unknown key `provison` in [base]\n --> Pipelinefile.toml:2:1\n  |\n2 | provison = []\n  | ^^^^^^^^\n  = help: did you mean `provision`?\n\nerror: Pipelinefile.toml has 1 error\n"
        );
    }

    #[test]
    fn control_characters_of_the_source_line_are_not_printed() {
        let src = "name = \"a\u{1b}[31mb\"\n";
        let d = Diagnostic::new("bad", Span::new(7, 8));
        let text = render(&[d], Path::new("P.toml"), src);
        assert!(!text.contains('\u{1b}'), "{text:?}");
        assert!(text.contains("name = \"a\u{FFFD}[31mb\""), "{text:?}");
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("é = 1\nx", 7), (2, 1));
        assert_eq!(line_col("ab", 1), (1, 2));
        let src = "é = 1\nx\n\nlast";
        let index = LineIndex::new(src);
        for offset in 0..=src.len() {
            if src.is_char_boundary(offset) {
                assert_eq!(index.line_col(offset), line_col(src, offset), "at {offset}");
            }
        }
    }
}
