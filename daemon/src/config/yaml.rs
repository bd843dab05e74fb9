//! Reads YAML text into a small tree that keeps what a good error message
//! needs and typed YAML loaders throw away: the line of every node, each
//! scalar's raw text (so `mode: 0660` stays the octal text the operator
//! wrote, and `70000` is shown back as written), and repeated keys (kept, so
//! the walker can report them instead of silently taking the last).
//! Built on yaml-rust2's event parser; only the first document is read.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// One YAML node and the line (1-based) it starts on.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub kind: Kind,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    /// `~`, `null`, or nothing at all after `key:`.
    Null,
    /// Any other scalar, as written (quotes removed).
    Scalar(String),
    Seq(Vec<Node>),
    /// Pairs in file order; duplicates are kept.
    Map(Vec<(Node, Node)>),
}

impl Kind {
    /// How an error message names a value of this shape.
    pub fn describe(&self) -> &'static str {
        match self {
            Kind::Null => "nothing",
            Kind::Scalar(_) => "a single value",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }
}

/// A YAML syntax error, positioned (1-based line and column).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Parses `text`; `Ok(None)` for a file with no document (empty, or only
/// comments).
pub(crate) fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, false).map_err(|e| SyntaxError {
        line: e.marker().line(),
        column: e.marker().col() + 1,
        message: e.info().to_string(),
    })?;
    Ok(builder.root)
}

enum Frame {
    Seq {
        items: Vec<Node>,
        line: usize,
        anchor: usize,
    },
    Map {
        pairs: Vec<(Node, Node)>,
        key: Option<Node>,
        line: usize,
        anchor: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
}

impl Builder {
    fn finish(&mut self, node: Node, anchor: usize) {
        // Anchor ids start at 1; 0 means "no anchor".
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { pairs, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => pairs.push((k, node)),
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let line = mark.line();
        match event {
            Event::Scalar(text, style, anchor, _tag) => {
                let is_null = style == TScalarStyle::Plain
                    && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL");
                let kind = if is_null {
                    Kind::Null
                } else {
                    Kind::Scalar(text)
                };
                self.finish(Node { kind, line }, anchor);
            }
            Event::Alias(id) => {
                // The parser has already refused an alias to an unknown
                // anchor, so the lookup only misses on inputs it rejects.
                let node = self.anchors.get(&id).cloned().unwrap_or(Node {
                    kind: Kind::Null,
                    line,
                });
                self.finish(node, 0);
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq {
                items: Vec::new(),
                line,
                anchor,
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map {
                pairs: Vec::new(),
                key: None,
                line,
                anchor,
            }),
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq {
                    items,
                    line,
                    anchor,
                }) => self.finish(
                    Node {
                        kind: Kind::Seq(items),
                        line,
                    },
                    anchor,
                ),
                Some(Frame::Map {
                    pairs,
                    line,
                    anchor,
                    ..
                }) => self.finish(
                    Node {
                        kind: Kind::Map(pairs),
                        line,
                    },
                    anchor,
                ),
                None => {}
            },
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(node: &Node) -> &str {
        match &node.kind {
            Kind::Scalar(s) => s,
            other => panic!("not a scalar: {other:?}"),
        }
    }

    #[test]
    fn keeps_raw_scalar_text_and_lines() {
        let root = parse("a: 1\nrepl:\n  mode: 0660\n  name: \"x y\"\n  none:\n")
            .unwrap()
            .unwrap();
        let Kind::Map(pairs) = &root.kind else {
            panic!()
        };
        assert_eq!(scalar(&pairs[0].0), "a");
        assert_eq!(pairs[0].0.line, 1);
        let Kind::Map(inner) = &pairs[1].1.kind else {
            panic!()
        };
        assert_eq!(scalar(&inner[0].1), "0660");
        assert_eq!(inner[0].0.line, 3);
        assert_eq!(scalar(&inner[1].1), "x y");
        assert_eq!(inner[2].1.kind, Kind::Null);
    }

    #[test]
    fn quoted_null_words_stay_strings() {
        let root = parse("a: 'null'\nb: ~\n").unwrap().unwrap();
        let Kind::Map(pairs) = &root.kind else {
            panic!()
        };
        assert_eq!(scalar(&pairs[0].1), "null");
        assert_eq!(pairs[1].1.kind, Kind::Null);
    }

    #[test]
    fn keeps_duplicate_keys_and_resolves_aliases() {
        let root = parse("x: &p 5\na: 1\na: *p\n").unwrap().unwrap();
        let Kind::Map(pairs) = &root.kind else {
            panic!()
        };
        assert_eq!(pairs.len(), 3);
        assert_eq!(scalar(&pairs[2].1), "5");
    }

    #[test]
    fn sequences_flow_and_block() {
        let root = parse("a: [x, y]\nb:\n  - z\n").unwrap().unwrap();
        let Kind::Map(pairs) = &root.kind else {
            panic!()
        };
        assert!(matches!(&pairs[0].1.kind, Kind::Seq(v) if v.len() == 2));
        assert!(matches!(&pairs[1].1.kind, Kind::Seq(v) if v.len() == 1));
    }

    #[test]
    fn empty_text_has_no_document() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("# only a comment\n").unwrap(), None);
    }

    #[test]
    fn syntax_errors_carry_a_one_based_position() {
        let err = parse("repl:\n  a: 1\n   b: 2\n").unwrap_err();
        assert_eq!(err.line, 3, "{err:?}");
        assert!(err.column >= 1, "{err:?}");
        assert!(!err.message.is_empty());
    }
}
