//! Aligned plain-text output: a table with a header row, and a block of
//! `key  value` lines. Columns are separated by two spaces and padded by
//! character count; the last column is never padded (no trailing blanks).

/// A table with a header row.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        let all: Vec<&Vec<String>> = std::iter::once(&header).chain(&self.rows).collect();
        let columns = self.headers.len();
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                all.iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in all {
            // An empty last cell would leave the padding of the one before.
            out.push_str(line(row, &widths).trim_end());
            out.push('\n');
        }
        out
    }
}

fn line(cells: &[String], widths: &[usize]) -> String {
    let mut text = String::new();
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            text.push_str("  ");
        }
        text.push_str(cell);
        if i + 1 < cells.len() {
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(cell.chars().count());
            text.extend(std::iter::repeat_n(' ', pad));
        }
    }
    text
}

/// `key  value` lines with the values aligned.
pub fn pairs(items: &[(&str, String)]) -> String {
    let width = items
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (key, value) in items {
        out.push_str(&line(&[key.to_string(), value.clone()], &[width]));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_without_trailing_blanks() {
        let mut t = Table::new(&["NODE_ID", "STATUS"]);
        t.row(vec!["a".into(), "healthy".into()]);
        t.row(vec!["node-long".into(), "-".into()]);
        t.row(vec!["b".into(), String::new()]);
        assert_eq!(
            t.render(),
            "NODE_ID    STATUS\na          healthy\nnode-long  -\nb\n"
        );
    }

    #[test]
    fn pairs_align_their_values() {
        let text = pairs(&[
            ("state", "running".into()),
            ("postgresql", "connected".into()),
        ]);
        assert_eq!(text, "state       running\npostgresql  connected\n");
    }
}
