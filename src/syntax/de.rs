//! serde over the positioned [`Node`] tree.
//!
//! Rule-file structs derive `Deserialize` (with `deny_unknown_fields`) and are
//! read from a [`Node`] by [`from_node`]; every error comes back with the
//! position of the value or key it is about. [`Spanned<T>`] keeps a value's
//! position for checks done after deserialization (a bad regex, a missing
//! source), and a field of type [`Node`] keeps the raw subtree for parts that
//! are compiled by hand (conditions, typed bodies).

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use serde::{Deserialize, Deserializer};

use super::node::{Key, Kind, Node, Pos};

/// A deserialization error with the position it is about.
#[derive(Debug, Clone, PartialEq)]
pub struct DeError {
    pub pos: Option<Pos>,
    pub message: String,
}

impl DeError {
    fn at(mut self, pos: Pos) -> Self {
        self.pos.get_or_insert(pos);
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            pos: None,
            message: msg.to_string(),
        }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let list = expected
            .iter()
            .map(|e| format!("`{e}`"))
            .collect::<Vec<_>>()
            .join(", ");
        match expected.len() {
            0 => Self::custom(format_args!(
                "unknown field `{field}`: this takes no fields"
            )),
            1 => Self::custom(format_args!("unknown field `{field}`, expected {list}")),
            _ => Self::custom(format_args!(
                "unknown field `{field}`, expected one of {list}"
            )),
        }
    }

    fn missing_field(field: &'static str) -> Self {
        Self::custom(format_args!("missing field `{field}`"))
    }
}

/// Reads a `T` from a node.
pub fn from_node<'a, T: Deserialize<'a>>(node: &'a Node) -> Result<T, DeError> {
    T::deserialize(node).map_err(|e| e.at(node.pos))
}

/// A value with the position it was written at.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned<T> {
    pub pos: Pos,
    pub value: T,
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// A position is not part of the schema: a `Spanned<T>` is written as a `T`.
impl<T: schemars::JsonSchema> schemars::JsonSchema for Spanned<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> std::borrow::Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

const SPANNED: &str = "$hookwire::Spanned";
const NODE: &str = "$hookwire::Node";

thread_local! {
    // The node (or position) handed from the deserializer to the `Deserialize`
    // impls below, which serde's visitor API has no slot for.
    static HANDOFF: RefCell<Option<Node>> = const { RefCell::new(None) };
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spanned<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Spanned<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value")
            }
            fn visit_newtype_struct<D: Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<Spanned<T>, D::Error> {
                let pos = HANDOFF
                    .with(|h| h.borrow_mut().take())
                    .map(|n| n.pos)
                    .unwrap_or_default();
                Ok(Spanned {
                    pos,
                    value: T::deserialize(d)?,
                })
            }
        }
        d.deserialize_newtype_struct(SPANNED, V(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
                HANDOFF
                    .with(|h| h.borrow_mut().take())
                    .ok_or_else(|| E::custom("a rule-file value can only be read from a rule file"))
            }
        }
        d.deserialize_newtype_struct(NODE, V)
    }
}

type DeResult<T> = std::result::Result<T, DeError>;

impl<'de> Deserializer<'de> for &'de Node {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> DeResult<V::Value> {
        let r = match &self.kind {
            Kind::Null => v.visit_unit(),
            Kind::Bool(b) => v.visit_bool(*b),
            Kind::Int(i) => v.visit_i64(*i),
            Kind::Float(f) => v.visit_f64(*f),
            Kind::Str(s) => v.visit_borrowed_str(s),
            Kind::Seq(items) => v.visit_seq(SeqAccess { iter: items.iter() }),
            Kind::Map(entries) => v.visit_map(MapAccess {
                iter: entries.iter(),
                value: None,
            }),
        };
        r.map_err(|e| e.at(self.pos))
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> DeResult<V::Value> {
        match self.kind {
            Kind::Null => v.visit_none(),
            _ => v.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> DeResult<V::Value> {
        match name {
            NODE => {
                HANDOFF.with(|h| *h.borrow_mut() = Some(self.clone()));
                v.visit_unit()
            }
            SPANNED => {
                HANDOFF.with(|h| *h.borrow_mut() = Some(Node::new(self.pos, Kind::Null)));
                v.visit_newtype_struct(self)
            }
            _ => v.visit_newtype_struct(self),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> DeResult<V::Value> {
        let list = || {
            variants
                .iter()
                .map(|e| format!("`{e}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let r = match &self.kind {
            Kind::Str(s) => v.visit_enum(s.as_str().into_deserializer()),
            Kind::Map(entries) if entries.len() == 1 => {
                let (key, value) = &entries[0];
                v.visit_enum(EnumAccess { key, value })
            }
            Kind::Map(entries) if entries.is_empty() => Err(de::Error::custom(format_args!(
                "expected one of {}, found an empty map",
                list()
            ))),
            Kind::Map(entries) => {
                let names = entries
                    .iter()
                    .map(|(k, _)| format!("`{}`", k.name))
                    .collect::<Vec<_>>();
                Err(de::Error::custom(format_args!(
                    "takes exactly one of {}, found {}",
                    list(),
                    names.join(" and ")
                )))
            }
            _ => Err(de::Error::custom(format_args!(
                "expected one of {}, found {}",
                list(),
                self.describe()
            ))),
        };
        r.map_err(|e| e.at(self.pos))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

struct SeqAccess<'de> {
    iter: std::slice::Iter<'de, Node>,
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'de> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> DeResult<Option<T::Value>> {
        match self.iter.next() {
            Some(node) => seed.deserialize(node).map(Some).map_err(|e| e.at(node.pos)),
            None => Ok(None),
        }
    }
}

struct MapAccess<'de> {
    iter: std::slice::Iter<'de, (Key, Node)>,
    value: Option<&'de Node>,
}

impl<'de> de::MapAccess<'de> for MapAccess<'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> DeResult<Option<K::Value>> {
        match self.iter.next() {
            Some((key, value)) => {
                self.value = Some(value);
                let k: de::value::BorrowedStrDeserializer<'de, DeError> =
                    de::value::BorrowedStrDeserializer::new(&key.name);
                seed.deserialize(k).map(Some).map_err(|e| e.at(key.pos))
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> DeResult<V::Value> {
        match self.value.take() {
            Some(node) => seed.deserialize(node).map_err(|e| e.at(node.pos)),
            None => Err(de::Error::custom("value requested before key")),
        }
    }
}

struct EnumAccess<'de> {
    key: &'de Key,
    value: &'de Node,
}

impl<'de> de::EnumAccess<'de> for EnumAccess<'de> {
    type Error = DeError;
    type Variant = &'de Node;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> DeResult<(V::Value, &'de Node)> {
        let k: de::value::BorrowedStrDeserializer<'de, DeError> =
            de::value::BorrowedStrDeserializer::new(&self.key.name);
        let variant = seed.deserialize(k).map_err(|e| e.at(self.key.pos))?;
        Ok((variant, self.value))
    }
}

impl<'de> de::VariantAccess<'de> for &'de Node {
    type Error = DeError;

    fn unit_variant(self) -> DeResult<()> {
        match self.kind {
            Kind::Null => Ok(()),
            _ => Err(DeError {
                pos: Some(self.pos),
                message: format!("expected nothing, found {}", self.describe()),
            }),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> DeResult<T::Value> {
        seed.deserialize(self).map_err(|e| e.at(self.pos))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, v: V) -> DeResult<V::Value> {
        self.deserialize_any(v)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        v: V,
    ) -> DeResult<V::Value> {
        match self.kind {
            // `github: {}` and a bare `github:` both mean "no options".
            Kind::Null => v
                .visit_map(MapAccess {
                    iter: [].iter(),
                    value: None,
                })
                .map_err(|e| e.at(self.pos)),
            _ => self.deserialize_any(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::node::parse_yaml;
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Thing {
        name: Spanned<String>,
        count: Option<u32>,
        raw: Option<Node>,
        kind: Option<Choice>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case", deny_unknown_fields)]
    enum Choice {
        A { x: u32 },
        B,
    }

    fn read(text: &str) -> DeResult<Thing> {
        let node = parse_yaml(text).unwrap();
        // The tree must outlive the borrow; leak it in tests only.
        let node: &'static Node = Box::leak(Box::new(node));
        from_node(node)
    }

    #[test]
    fn errors_point_at_the_value_or_key() {
        let cases: &[(&str, u32, u32, &str)] = &[
            (
                "name: a\ncolor: red\n",
                2,
                1,
                "unknown field `color`, expected one of `name`, `count`, `raw`, `kind`",
            ),
            (
                "name: a\ncount: many\n",
                2,
                8,
                "invalid type: string \"many\", expected u32",
            ),
            ("count: 1\n", 1, 1, "missing field `name`"),
            (
                "name: a\nkind: {a: {x: 1}, b: null}\n",
                2,
                7,
                "takes exactly one of `a`, `b`, found `a` and `b`",
            ),
            (
                "name: a\nkind:\n  a: {x: 1, y: 2}\n",
                3,
                13,
                "unknown field `y`, expected `x`",
            ),
        ];
        for (text, line, col, message) in cases {
            let e = read(text).unwrap_err();
            assert_eq!(
                (e.pos, e.message.as_str()),
                (
                    Some(Pos {
                        line: *line,
                        col: *col
                    }),
                    *message
                ),
                "{text}"
            );
        }
    }

    #[test]
    fn spanned_and_raw_nodes_keep_their_positions() {
        let t = read("kind: b\nname: hello\nraw:\n  k: [1]\n").unwrap();
        assert_eq!(t.name.pos, Pos { line: 2, col: 7 });
        assert_eq!(&*t.name, "hello");
        assert_eq!(
            t.raw.unwrap().get("k").unwrap().pos,
            Pos { line: 4, col: 6 }
        );
        assert_eq!(t.kind, Some(Choice::B));
    }
}
