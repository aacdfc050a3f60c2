//! JSON values that keep NaN and infinities.
//!
//! JSON has no NaN or infinity, and serde_json writes them as `null`, which reads back as a
//! missing value, or as an error for a plain float. A diverging run must still be visible in
//! its log, so here non-finite floats become the strings `"NaN"`, `"inf"` and `"-inf"`, and
//! those strings read back as floats wherever a float is expected.

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, IntoDeserializer, VariantAccess, Visitor,
};
use serde::ser::{self, Serialize};
use serde_json::{Map, Number, Value};

type JsonResult<T> = std::result::Result<T, serde_json::Error>;

const NAN: &str = "NaN";
const INFINITY: &str = "inf";
const NEG_INFINITY: &str = "-inf";

/// `value` as a JSON value, with non-finite floats as the strings `"NaN"`, `"inf"`, `"-inf"`.
pub(crate) fn to_value<T: Serialize + ?Sized>(value: &T) -> JsonResult<Value> {
    value.serialize(ValueSerializer)
}

/// Reads a `T` from a JSON value written by [`to_value`]: where `T` holds a float, the strings
/// `"NaN"`, `"inf"` and `"-inf"` are read as that float.
pub(crate) fn from_value<T: DeserializeOwned>(value: Value) -> JsonResult<T> {
    T::deserialize(ValueDeserializer(value))
}

fn float_value(value: f64) -> Value {
    match Number::from_f64(value) {
        Some(number) => Value::Number(number),
        None if value.is_nan() => Value::String(NAN.into()),
        None if value > 0.0 => Value::String(INFINITY.into()),
        None => Value::String(NEG_INFINITY.into()),
    }
}

fn non_finite(text: &str) -> Option<f64> {
    match text {
        NAN => Some(f64::NAN),
        INFINITY => Some(f64::INFINITY),
        NEG_INFINITY => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// Builds a [`Value`] tree; the same as `serde_json::to_value` except for non-finite floats.
struct ValueSerializer;

impl ser::Serializer for ValueSerializer {
    type Ok = Value;
    type Error = serde_json::Error;
    type SerializeSeq = SeqSerializer;
    type SerializeTuple = SeqSerializer;
    type SerializeTupleStruct = SeqSerializer;
    type SerializeTupleVariant = VariantSerializer<SeqSerializer>;
    type SerializeMap = MapSerializer;
    type SerializeStruct = MapSerializer;
    type SerializeStructVariant = VariantSerializer<MapSerializer>;

    fn serialize_bool(self, v: bool) -> JsonResult<Value> {
        Ok(Value::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> JsonResult<Value> {
        Ok(Value::from(v))
    }
    fn serialize_i16(self, v: i16) -> JsonResult<Value> {
        Ok(Value::from(v))
    }
    fn serialize_i32(self, v: i32) -> JsonResult<Value> {
        Ok(Value::from(v))
    }
    fn serialize_i64(self, v: i64) -> JsonResult<Value> {
        Ok(Value::from(v))
    }
    fn serialize_u8(self, v: u8) -> JsonResult<Value> {
        Ok(Value::from(v))
    }
    fn serialize_u16(self, v: u16) -> JsonResult<Value> {
        Ok(Value::from(v))
    }
    fn serialize_u32(self, v: u32) -> JsonResult<Value> {
        Ok(Value::from(v))
    }
    fn serialize_u64(self, v: u64) -> JsonResult<Value> {
        Ok(Value::from(v))
    }
    fn serialize_f32(self, v: f32) -> JsonResult<Value> {
        // Through the shortest decimal of the f32, so 0.1f32 is written `0.1` as serde_json
        // writes it, not `0.10000000149011612`.
        let widened = if v.is_finite() {
            v.to_string().parse().unwrap_or(f64::from(v))
        } else {
            f64::from(v)
        };
        Ok(float_value(widened))
    }
    fn serialize_f64(self, v: f64) -> JsonResult<Value> {
        Ok(float_value(v))
    }
    fn serialize_char(self, v: char) -> JsonResult<Value> {
        Ok(Value::String(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> JsonResult<Value> {
        Ok(Value::String(v.to_owned()))
    }
    fn serialize_bytes(self, v: &[u8]) -> JsonResult<Value> {
        Ok(Value::Array(v.iter().map(|&b| Value::from(b)).collect()))
    }
    fn serialize_none(self) -> JsonResult<Value> {
        Ok(Value::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> JsonResult<Value> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> JsonResult<Value> {
        Ok(Value::Null)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> JsonResult<Value> {
        Ok(Value::Null)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> JsonResult<Value> {
        Ok(Value::String(variant.to_owned()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> JsonResult<Value> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> JsonResult<Value> {
        let mut object = Map::new();
        object.insert(variant.to_owned(), to_value(value)?);
        Ok(Value::Object(object))
    }
    fn serialize_seq(self, len: Option<usize>) -> JsonResult<SeqSerializer> {
        Ok(SeqSerializer(Vec::with_capacity(len.unwrap_or(0))))
    }
    fn serialize_tuple(self, len: usize) -> JsonResult<SeqSerializer> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> JsonResult<SeqSerializer> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> JsonResult<VariantSerializer<SeqSerializer>> {
        Ok(VariantSerializer {
            variant,
            inner: SeqSerializer(Vec::with_capacity(len)),
        })
    }
    fn serialize_map(self, _len: Option<usize>) -> JsonResult<MapSerializer> {
        Ok(MapSerializer::default())
    }
    fn serialize_struct(self, _name: &'static str, _len: usize) -> JsonResult<MapSerializer> {
        Ok(MapSerializer::default())
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> JsonResult<VariantSerializer<MapSerializer>> {
        Ok(VariantSerializer {
            variant,
            inner: MapSerializer::default(),
        })
    }
}

/// The items of a sequence or tuple.
struct SeqSerializer(Vec<Value>);

impl SeqSerializer {
    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> JsonResult<()> {
        self.0.push(to_value(value)?);
        Ok(())
    }
}

impl ser::SerializeSeq for SeqSerializer {
    type Ok = Value;
    type Error = serde_json::Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> JsonResult<()> {
        self.push(value)
    }
    fn end(self) -> JsonResult<Value> {
        Ok(Value::Array(self.0))
    }
}

impl ser::SerializeTuple for SeqSerializer {
    type Ok = Value;
    type Error = serde_json::Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> JsonResult<()> {
        self.push(value)
    }
    fn end(self) -> JsonResult<Value> {
        Ok(Value::Array(self.0))
    }
}

impl ser::SerializeTupleStruct for SeqSerializer {
    type Ok = Value;
    type Error = serde_json::Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> JsonResult<()> {
        self.push(value)
    }
    fn end(self) -> JsonResult<Value> {
        Ok(Value::Array(self.0))
    }
}

/// The entries of a map or struct; a map key must serialise to a string, number or bool.
#[derive(Default)]
struct MapSerializer {
    entries: Map<String, Value>,
    next_key: Option<String>,
}

impl MapSerializer {
    fn insert<T: Serialize + ?Sized>(&mut self, key: String, value: &T) -> JsonResult<()> {
        self.entries.insert(key, to_value(value)?);
        Ok(())
    }
}

impl ser::SerializeMap for MapSerializer {
    type Ok = Value;
    type Error = serde_json::Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> JsonResult<()> {
        let key = match to_value(key)? {
            Value::String(text) => text,
            Value::Number(number) => number.to_string(),
            Value::Bool(flag) => flag.to_string(),
            other => {
                return Err(ser::Error::custom(format!(
                    "a map key must be a string, number or bool, not {other}"
                )));
            }
        };
        self.next_key = Some(key);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> JsonResult<()> {
        let key = self
            .next_key
            .take()
            .ok_or_else(|| ser::Error::custom("a map value came before its key"))?;
        self.insert(key, value)
    }
    fn end(self) -> JsonResult<Value> {
        Ok(Value::Object(self.entries))
    }
}

impl ser::SerializeStruct for MapSerializer {
    type Ok = Value;
    type Error = serde_json::Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> JsonResult<()> {
        self.insert(key.to_owned(), value)
    }
    fn end(self) -> JsonResult<Value> {
        Ok(Value::Object(self.entries))
    }
}

/// A tuple or struct variant, written as `{ "Variant": [..] }` or `{ "Variant": {..} }`.
struct VariantSerializer<Inner> {
    variant: &'static str,
    inner: Inner,
}

impl<Inner> VariantSerializer<Inner> {
    fn wrap(variant: &'static str, value: Value) -> Value {
        let mut object = Map::new();
        object.insert(variant.to_owned(), value);
        Value::Object(object)
    }
}

impl ser::SerializeTupleVariant for VariantSerializer<SeqSerializer> {
    type Ok = Value;
    type Error = serde_json::Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> JsonResult<()> {
        self.inner.push(value)
    }
    fn end(self) -> JsonResult<Value> {
        Ok(Self::wrap(self.variant, Value::Array(self.inner.0)))
    }
}

impl ser::SerializeStructVariant for VariantSerializer<MapSerializer> {
    type Ok = Value;
    type Error = serde_json::Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> JsonResult<()> {
        self.inner.insert(key.to_owned(), value)
    }
    fn end(self) -> JsonResult<Value> {
        Ok(Self::wrap(self.variant, Value::Object(self.inner.entries)))
    }
}

/// Reads a [`Value`] tree as serde_json does, except that a float may be one of the strings
/// of [`float_value`].
struct ValueDeserializer(Value);

impl<'de> IntoDeserializer<'de, serde_json::Error> for ValueDeserializer {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> de::Deserializer<'de> for ValueDeserializer {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> JsonResult<V::Value> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(flag) => visitor.visit_bool(flag),
            Value::Number(number) => {
                if let Some(unsigned) = number.as_u64() {
                    visitor.visit_u64(unsigned)
                } else if let Some(signed) = number.as_i64() {
                    visitor.visit_i64(signed)
                } else {
                    visitor.visit_f64(number.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(text) => visitor.visit_string(text),
            Value::Array(items) => {
                let mut items = de::value::SeqDeserializer::<_, serde_json::Error>::new(
                    items.into_iter().map(ValueDeserializer),
                );
                let value = visitor.visit_seq(&mut items)?;
                items.end()?;
                Ok(value)
            }
            Value::Object(entries) => {
                let mut entries = de::value::MapDeserializer::<_, serde_json::Error>::new(
                    entries
                        .into_iter()
                        .map(|(key, value)| (key, ValueDeserializer(value))),
                );
                let value = visitor.visit_map(&mut entries)?;
                entries.end()?;
                Ok(value)
            }
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> JsonResult<V::Value> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> JsonResult<V::Value> {
        match &self.0 {
            Value::String(text) => match non_finite(text) {
                Some(value) => visitor.visit_f64(value),
                None => self.deserialize_any(visitor),
            },
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> JsonResult<V::Value> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            other => visitor.visit_some(ValueDeserializer(other)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> JsonResult<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> JsonResult<V::Value> {
        match self.0 {
            Value::String(variant) => visitor.visit_enum(EnumDeserializer {
                variant,
                value: Value::Null,
            }),
            Value::Object(entries) if entries.len() == 1 => {
                let (variant, value) = entries.into_iter().next().expect("one entry");
                visitor.visit_enum(EnumDeserializer { variant, value })
            }
            other => Err(de::Error::custom(format!(
                "expected an enum variant (a string or an object with one key), found {other}"
            ))),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 char str string bytes byte_buf unit
        unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

/// One enum variant: its name and its payload (`null` for a unit variant).
struct EnumDeserializer {
    variant: String,
    value: Value,
}

impl<'de> EnumAccess<'de> for EnumDeserializer {
    type Error = serde_json::Error;
    type Variant = ValueDeserializer;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> JsonResult<(S::Value, ValueDeserializer)> {
        let name: de::value::StringDeserializer<serde_json::Error> =
            self.variant.into_deserializer();
        Ok((seed.deserialize(name)?, ValueDeserializer(self.value)))
    }
}

impl<'de> VariantAccess<'de> for ValueDeserializer {
    type Error = serde_json::Error;

    fn unit_variant(self) -> JsonResult<()> {
        match self.0 {
            Value::Null => Ok(()),
            other => Err(de::Error::custom(format!(
                "a unit variant has no payload, found {other}"
            ))),
        }
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> JsonResult<S::Value> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> JsonResult<V::Value> {
        de::Deserializer::deserialize_any(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> JsonResult<V::Value> {
        de::Deserializer::deserialize_any(self, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, serde::Serialize, Deserialize)]
    enum Shape {
        Point,
        Circle(f64),
        Pair(f32, f64),
        Box { width: f64, height: Option<f64> },
    }

    #[derive(Debug, serde::Serialize, Deserialize)]
    struct Record {
        step: usize,
        loss: f64,
        small: f32,
        values: Vec<f64>,
        maybe: Option<f64>,
        missing: Option<f64>,
        shapes: Vec<Shape>,
        label: String,
    }

    fn same(a: f64, b: f64) -> bool {
        a == b || (a.is_nan() && b.is_nan())
    }

    #[test]
    fn non_finite_floats_round_trip_as_strings_everywhere() {
        let record = Record {
            step: 3,
            loss: f64::NAN,
            small: f32::NEG_INFINITY,
            values: vec![1.5, f64::INFINITY, -0.0, f64::NEG_INFINITY],
            maybe: Some(f64::NAN),
            missing: None,
            shapes: vec![
                Shape::Point,
                Shape::Circle(f64::INFINITY),
                Shape::Pair(f32::NAN, 2.0),
                Shape::Box {
                    width: f64::NEG_INFINITY,
                    height: None,
                },
            ],
            label: "inf".into(),
        };
        let line = serde_json::to_string(&to_value(&record).unwrap()).unwrap();
        assert!(
            line.contains(r#""loss":"NaN""#)
                && line.contains(r#""small":"-inf""#)
                && line.contains(r#""values":[1.5,"inf",-0.0,"-inf"]"#)
                && line.contains(r#""missing":null"#),
            "{line}"
        );
        let back: Record = from_value(serde_json::from_str(&line).unwrap()).unwrap();
        assert_eq!(back.step, 3);
        assert!(back.loss.is_nan());
        assert_eq!(back.small, f32::NEG_INFINITY);
        assert!(
            back.values
                .iter()
                .zip(&record.values)
                .all(|(a, b)| same(*a, *b))
        );
        assert!(back.maybe.is_some_and(f64::is_nan));
        assert_eq!(back.missing, None);
        assert_eq!(back.label, "inf", "a string field stays a string");
        match &back.shapes[..] {
            [
                Shape::Point,
                Shape::Circle(circle),
                Shape::Pair(first, second),
                Shape::Box { width, height },
            ] => {
                assert_eq!(*circle, f64::INFINITY);
                assert!(first.is_nan() && *second == 2.0);
                assert_eq!((*width, *height), (f64::NEG_INFINITY, None));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn finite_values_are_written_as_serde_json_writes_them() {
        let record = (0.1f32, 0.1f64, u64::MAX, -7i64, "text", [true, false]);
        let ours = serde_json::to_string(&to_value(&record).unwrap()).unwrap();
        assert_eq!(ours, serde_json::to_string(&record).unwrap());
    }

    #[test]
    fn a_string_where_a_float_belongs_is_still_an_error() {
        let err = from_value::<f64>(Value::String("infinity".into())).unwrap_err();
        assert!(err.to_string().contains("infinity"), "{err}");
    }
}
