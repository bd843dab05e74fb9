//! Text bound for a terminal. Node names, hosts, error messages and audit
//! values reach the CLI from peers, PostgreSQL and other sessions; an
//! escape sequence among them could clear the screen, move the cursor,
//! rewrite earlier lines or set the window title, and a bidirectional
//! override could show text in another order than it has. Every such
//! character is shown as a visible `\u{..}` escape instead. Line breaks
//! and tabs of our own layout stay.

/// `text` with every control and bidirectional-formatting character but
/// `\n` and `\t` replaced by its `\u{..}` escape.
pub fn printable(text: &str) -> String {
    if !text.chars().any(needs_escape) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if needs_escape(c) {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    out
}

fn needs_escape(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        // Bidirectional embeddings, overrides and isolates, and the marks.
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn escape_sequences_and_other_controls_are_shown_not_obeyed() {
        assert_eq!(
            printable("node\u{1b}[2J\u{1b}]0;owned\u{7}"),
            "node\\u{1b}[2J\\u{1b}]0;owned\\u{7}"
        );
        assert_eq!(
            printable("a\rb\u{8}c\u{0}d\u{9b}e"),
            "a\\u{d}b\\u{8}c\\u{0}d\\u{9b}e"
        );
    }

    #[test]
    fn bidirectional_overrides_are_shown() {
        assert_eq!(printable("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(printable("x\u{2066}y\u{2069}"), "x\\u{2066}y\\u{2069}");
    }

    #[test]
    fn ordinary_text_and_the_layout_stay_as_they_are() {
        let table = "NODE    NAME\nnode-a  Nœud A — Zürich\t✓\n";
        assert_eq!(printable(table), table);
        assert_eq!(printable(""), "");
    }
}
