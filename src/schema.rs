//! The JSON Schemas outpost publishes (tool inputs and outputs, the config file), made portable:
//! only what JSON Schema itself defines, so that every client's validator reads them cleanly.

use schemars::Schema;
use schemars::transform::{RestrictFormats, Transform, transform_subschemas};
use serde_json::{Map, Value};

/// Removes the `format`s JSON Schema does not define (schemars marks integers `uint64`, `int32`,
/// …, and floats `double`, which validators such as Ajv warn about), first writing the bounds of
/// 32-bit integers as `minimum`/`maximum` (schemars gives those for smaller integers only).
/// The formats allowed are those of the `$schema` the root names (2020-12 for rmcp's tool
/// schemas and the config's).
pub fn make_portable(schema: &mut Map<String, Value>) {
    transform(schema, |owned| {
        IntegerBounds.transform(owned);
        RestrictFormats::default().transform(owned);
    });
}

/// Applies `change` to `schema` as a schemars [`Schema`].
fn transform(schema: &mut Map<String, Value>, change: impl FnOnce(&mut Schema)) {
    let mut owned = Schema::from(std::mem::take(schema));
    change(&mut owned);
    if let Value::Object(map) = owned.to_value() {
        *schema = map;
    }
}

/// [`make_portable`], and (for a tool's input schema, which a model reads) shorter
/// without changing what it accepts: no root `$schema` (MCP takes 2020-12 when none is named, and
/// rmcp's is 2020-12) and no `"default": null` or `"default": false`, which say no more than the
/// property's absence. One pass over the schema.
pub fn make_portable_tool_input(schema: &mut Map<String, Value>) {
    transform(schema, |owned| {
        IntegerBounds.transform(owned);
        RestrictFormats::default().transform(owned);
        DropEmptyDefaults.transform(owned);
    });
    schema.remove("$schema");
}

struct DropEmptyDefaults;

impl Transform for DropEmptyDefaults {
    fn transform(&mut self, schema: &mut Schema) {
        if let Some(obj) = schema.as_object_mut()
            && matches!(obj.get("default"), Some(Value::Null | Value::Bool(false)))
        {
            obj.remove("default");
        }
        transform_subschemas(self, schema);
    }
}

/// Adds the range of an `int32`/`uint32` format as `minimum`/`maximum`, where not given.
struct IntegerBounds;

impl Transform for IntegerBounds {
    fn transform(&mut self, schema: &mut Schema) {
        let format = schema.get("format").and_then(Value::as_str);
        let range = match format {
            Some("int32") => Some((i64::from(i32::MIN), i64::from(i32::MAX))),
            Some("uint32") => Some((0, i64::from(u32::MAX))),
            _ => None,
        };
        if let (Some((min, max)), Some(obj)) = (range, schema.as_object_mut()) {
            obj.entry("minimum").or_insert(min.into());
            obj.entry("maximum").or_insert(max.into());
        }
        transform_subschemas(self, schema);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn non_standard_formats_go_and_standard_ones_stay() {
        let Value::Object(mut schema) = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "n": {"type": "integer", "format": "uint64", "minimum": 0},
                "when": {"type": "string", "format": "date-time"},
                "list": {"type": "array", "items": {"type": "number", "format": "double"}},
                "maybe": {"anyOf": [{"$ref": "#/$defs/X"}, {"type": "null"}]}
            },
            "$defs": {
                "X": {"type": "integer", "format": "int32", "maximum": 7},
                "Y": {"type": ["integer", "null"], "format": "uint32", "minimum": 0}
            }
        }) else {
            unreachable!()
        };
        make_portable(&mut schema);
        let text = Value::Object(schema.clone()).to_string();
        for gone in ["uint64", "double", "int32", "uint32"] {
            assert!(!text.contains(gone), "{text}");
        }
        assert_eq!(schema["properties"]["when"]["format"], "date-time");
        assert_eq!(schema["properties"]["n"]["minimum"], 0);
        assert_eq!(schema["$defs"]["X"]["maximum"], 7);
        assert_eq!(schema["$defs"]["X"]["minimum"], i32::MIN);
        assert_eq!(schema["$defs"]["Y"]["maximum"], u32::MAX);
    }

    #[test]
    fn tool_inputs_lose_only_what_says_nothing() {
        let Value::Object(mut schema) = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "a": {"type": ["number", "null"], "default": null},
                "b": {"type": "boolean", "default": false},
                "c": {"type": "boolean", "default": true},
                "d": {"type": "integer", "default": 3}
            }
        }) else {
            unreachable!()
        };
        make_portable_tool_input(&mut schema);
        assert_eq!(
            Value::Object(schema),
            json!({
                "type": "object",
                "properties": {
                    "a": {"type": ["number", "null"]},
                    "b": {"type": "boolean"},
                    "c": {"type": "boolean", "default": true},
                    "d": {"type": "integer", "default": 3}
                }
            })
        );
    }
}
