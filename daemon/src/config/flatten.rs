//! Flattens a `Config` through its `Serialize` impl into its keys, in
//! declaration order, each with the YAML text `config check` prints for it
//! and what the schema's markers (`fields.rs`) say about it. Walking
//! `Config::default()` gives the key table; walking a loaded configuration
//! gives `config check`'s values.

use serde::ser::{self, Impossible, Serialize, SerializeSeq, SerializeStruct};
use serde::Serializer;

use super::fields::{MASKED, NOT_A_KEY, PATH, PLAIN};
use super::secret::MASK;
use super::values::format_clock_error;

/// One key of the configuration.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Leaf {
    /// Dotted, relative to `repl:` (`grpc.tls.cert_file`).
    pub key: String,
    /// The value as YAML text.
    pub yaml: String,
    /// The key takes a list.
    pub list: bool,
    /// The key takes a path.
    pub path: bool,
}

/// Every key of `value` (a `Config`), in declaration order.
pub(crate) fn leaves<T: Serialize>(value: &T) -> Vec<Leaf> {
    let mut out = Vec::new();
    // Config's Serialize only produces what `Walk` supports; anything else
    // would be a schema change that the key table tests catch.
    if let Ok(node) = value.serialize(Walk) {
        flatten("", node, &mut out);
    }
    out
}

fn flatten(prefix: &str, node: Node, out: &mut Vec<Leaf>) {
    match node {
        Node::Skip => {}
        Node::Section(fields) => {
            for (name, child) in fields {
                let key = if prefix.is_empty() {
                    name.to_string()
                } else {
                    format!("{prefix}.{name}")
                };
                flatten(&key, child, out);
            }
        }
        Node::Value { value, path } => out.push(Leaf {
            key: prefix.to_string(),
            list: matches!(value, Value::List(_)),
            yaml: value.yaml(),
            path,
        }),
    }
}

/// A YAML double-quoted scalar. JSON string syntax is a subset of it, and
/// serde_json escapes every character YAML needs escaped.
pub(crate) fn quoted(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

enum Value {
    Null,
    /// Printed as is: numbers, booleans, enum names, durations.
    Bare(String),
    /// Printed in quotes.
    Text(String),
    /// A list of texts.
    List(Vec<String>),
}

impl Value {
    fn yaml(&self) -> String {
        match self {
            Value::Null => "null".into(),
            Value::Bare(t) => t.clone(),
            Value::Text(t) => quoted(t),
            Value::List(items) => {
                let items: Vec<String> = items.iter().map(|t| quoted(t)).collect();
                format!("[{}]", items.join(", "))
            }
        }
    }
}

enum Node {
    Skip,
    Section(Vec<(&'static str, Node)>),
    Value { value: Value, path: bool },
}

fn value(value: Value) -> Result<Node, Error> {
    Ok(Node::Value { value, path: false })
}

type Error = serde::de::value::Error;

fn unsupported(what: &str) -> Error {
    ser::Error::custom(format!("a configuration key cannot hold {what}"))
}

struct Walk;

macro_rules! bare {
    ($($method:ident: $ty:ty),*) => {$(
        fn $method(self, v: $ty) -> Result<Node, Error> {
            value(Value::Bare(v.to_string()))
        }
    )*};
}

impl Serializer for Walk {
    type Ok = Node;
    type Error = Error;
    type SerializeSeq = Items;
    type SerializeTuple = Impossible<Node, Error>;
    type SerializeTupleStruct = Impossible<Node, Error>;
    type SerializeTupleVariant = Impossible<Node, Error>;
    type SerializeMap = Impossible<Node, Error>;
    type SerializeStruct = Section;
    type SerializeStructVariant = Impossible<Node, Error>;

    bare!(serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64);

    fn serialize_f32(self, v: f32) -> Result<Node, Error> {
        self.serialize_f64(f64::from(v))
    }

    /// The only fractional keys are fractions (`coordinator.clock_error`),
    /// printed as a percentage when that reads back exactly.
    fn serialize_f64(self, v: f64) -> Result<Node, Error> {
        value(Value::Text(format_clock_error(v)))
    }

    fn serialize_char(self, v: char) -> Result<Node, Error> {
        value(Value::Text(v.to_string()))
    }

    fn serialize_str(self, v: &str) -> Result<Node, Error> {
        value(Value::Text(v.to_string()))
    }

    fn serialize_bytes(self, _: &[u8]) -> Result<Node, Error> {
        Err(unsupported("bytes"))
    }

    fn serialize_none(self) -> Result<Node, Error> {
        value(Value::Null)
    }

    fn serialize_some<T: ?Sized + Serialize>(self, v: &T) -> Result<Node, Error> {
        v.serialize(self)
    }

    fn serialize_unit(self) -> Result<Node, Error> {
        value(Value::Null)
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result<Node, Error> {
        value(Value::Null)
    }

    /// The enums (`SslMode`, `LogLevel`, ...) print their YAML spelling.
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<Node, Error> {
        value(Value::Bare(variant.to_string()))
    }

    /// The schema's markers.
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        name: &'static str,
        v: &T,
    ) -> Result<Node, Error> {
        let inner = v.serialize(Walk)?;
        Ok(match (name, inner) {
            (NOT_A_KEY, _) => Node::Skip,
            (PLAIN, Node::Value { value, path }) => Node::Value {
                value: match value {
                    Value::Text(t) => Value::Bare(t),
                    other => other,
                },
                path,
            },
            (MASKED, Node::Value { value, path }) => Node::Value {
                value: match value {
                    Value::Null => Value::Null,
                    _ => Value::Text(MASK.to_string()),
                },
                path,
            },
            (PATH, Node::Value { value, .. }) => Node::Value { value, path: true },
            (_, inner) => inner,
        })
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<Node, Error> {
        Err(unsupported("an enum with data"))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Items, Error> {
        Ok(Items(Vec::with_capacity(len.unwrap_or(0))))
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Error> {
        Err(unsupported("a tuple"))
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        Err(unsupported("a tuple"))
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(unsupported("an enum with data"))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(unsupported("a map"))
    }

    fn serialize_struct(self, _: &'static str, len: usize) -> Result<Section, Error> {
        Ok(Section(Vec::with_capacity(len)))
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(unsupported("an enum with data"))
    }
}

/// A list key's items, each printed as text.
struct Items(Vec<String>);

impl SerializeSeq for Items {
    type Ok = Node;
    type Error = Error;

    fn serialize_element<T: ?Sized + Serialize>(&mut self, v: &T) -> Result<(), Error> {
        match v.serialize(Walk)? {
            Node::Value {
                value: Value::Text(t) | Value::Bare(t),
                ..
            } => {
                self.0.push(t);
                Ok(())
            }
            _ => Err(unsupported("a list of anything but single values")),
        }
    }

    fn end(self) -> Result<Node, Error> {
        value(Value::List(self.0))
    }
}

/// A section: its keys and subsections, in order.
struct Section(Vec<(&'static str, Node)>);

impl SerializeStruct for Section {
    type Ok = Node;
    type Error = Error;

    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        name: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        self.0.push((name, v.serialize(Walk)?));
        Ok(())
    }

    fn end(self) -> Result<Node, Error> {
        Ok(Node::Section(self.0))
    }
}
