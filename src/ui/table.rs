//! Plain-text tables whose columns are as wide as their widest cell.

/// `header` and `rows` as lines of columns separated by two spaces, each column as wide as its
/// widest cell (the last one unpadded), so long names never push a row out of line.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = w - cell.chars().count();
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let rows = vec![
            vec![
                "dev".into(),
                "pipe-a-very-long-pipeline-name-dev-machine".into(),
                "running".into(),
            ],
            vec!["production".into(), "m".into(), "exited".into()],
        ];
        assert_eq!(
            table(&["ENV", "MACHINE", "STATE"], &rows),
            "ENV         MACHINE                                     STATE\n\
             dev         pipe-a-very-long-pipeline-name-dev-machine  running\n\
             production  m                                           exited\n"
        );
    }
}
