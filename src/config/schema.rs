//! The Pipelinefile's JSON Schema, generated from [`super::keys`], the table of keys the
//! parser checks against: editors that read a `#:schema` comment (taplo, Even Better TOML)
//! complete keys, show their descriptions and flag a misspelt one. `pipe schema` prints it;
//! the repository keeps a copy in `schema/pipelinefile.schema.json`.
//!
//! The schema states keys and value types; the checks that need the whole file (declared
//! vars, referenced files, ports, the promotion graph) stay the parser's.

use serde_json::{Map, Value, json};

use super::keys::{
    ANSIBLE_SHAPE, FILE_SHAPE, INLINE_KEY, Key, SECTIONS_SHAPE, SHELL_KEY, SHELL_SETTINGS_SHAPE, Ty,
};

/// The file `pipe init` writes the schema to, beside the Pipelinefile, and points its
/// `#:schema` line at.
pub const FILE_NAME: &str = "pipelinefile.schema.json";

/// The schema, as pretty-printed JSON with a trailing newline.
pub fn render() -> String {
    let mut text = serde_json::to_string_pretty(&schema()).expect("a JSON value serializes");
    text.push('\n');
    text
}

/// The schema as a JSON value.
pub fn schema() -> Value {
    let mut root = table(SECTIONS_SHAPE);
    let obj = root.as_object_mut().expect("a table is an object");
    let mut head = Map::new();
    head.insert(
        "$schema".into(),
        json!("http://json-schema.org/draft-07/schema#"),
    );
    head.insert("title".into(), json!("Pipelinefile.toml"));
    head.insert(
        "description".into(),
        json!("pipe's Pipelinefile: boxes, base and app layers, services, verify checks and environments."),
    );
    head.insert("required".into(), json!(["pipeline"]));
    head.extend(std::mem::take(obj));
    Value::Object(head)
}

fn of(ty: &Ty) -> Value {
    match ty {
        Ty::Str => json!({ "type": "string" }),
        Ty::Int { min, max } => {
            let mut v = json!({ "type": "integer", "minimum": min });
            if let Some(max) = max {
                v["maximum"] = json!(max);
            }
            v
        }
        Ty::Port => json!({ "type": "integer", "minimum": 1, "maximum": 65535 }),
        Ty::Bool => json!({ "type": "boolean" }),
        Ty::OneOf(values) => json!({ "type": "string", "enum": values }),
        Ty::Scalar => json!({ "type": ["string", "integer", "boolean"] }),
        Ty::Array(item) => json!({ "type": "array", "items": of(item) }),
        Ty::Table(keys) => table(keys),
        Ty::Map(value) => json!({ "type": "object", "additionalProperties": of(value) }),
        Ty::AnyOf(tys) => json!({ "anyOf": tys.iter().map(of).collect::<Vec<_>>() }),
        Ty::Provisioner => provisioner(),
    }
}

/// A table with exactly `keys`.
fn table(keys: &[Key]) -> Value {
    let properties: Map<String, Value> = keys
        .iter()
        .map(|k| {
            let mut v = of(&k.ty);
            v.as_object_mut()
                .expect("every type is an object")
                .insert("description".into(), json!(k.doc));
            (k.name.to_string(), v)
        })
        .collect();
    json!({
        "type": "object",
        "properties": properties,
        "additionalProperties": false,
    })
}

/// One of the provisioner kinds: the table of that kind's keys, its kind key required.
fn provisioner() -> Value {
    let with_kind = |kind: Key| -> Vec<Key> {
        std::iter::once(kind)
            .chain(SHELL_SETTINGS_SHAPE.iter().copied())
            .collect()
    };
    let kinds: [(&str, Vec<Key>); 4] = [
        (FILE_SHAPE[0].name, FILE_SHAPE.to_vec()),
        (SHELL_KEY.name, with_kind(SHELL_KEY)),
        (INLINE_KEY.name, with_kind(INLINE_KEY)),
        (ANSIBLE_SHAPE[0].name, ANSIBLE_SHAPE.to_vec()),
    ];
    let alternatives: Vec<Value> = kinds
        .iter()
        .map(|(kind, keys)| {
            let mut t = table(keys);
            t["required"] = json!([kind]);
            t
        })
        .collect();
    json!({ "oneOf": alternatives })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::keys::PROVISIONER_KINDS;

    #[test]
    fn every_provisioner_kind_is_an_alternative() {
        let s = schema();
        let alts = s["properties"]["base"]["properties"]["provision"]["items"]["oneOf"]
            .as_array()
            .unwrap()
            .clone();
        let kinds: Vec<&str> = alts
            .iter()
            .map(|a| a["required"][0].as_str().unwrap())
            .collect();
        assert_eq!(kinds, PROVISIONER_KINDS);
    }

    #[test]
    fn tables_are_closed() {
        let s = schema();
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["properties"]["pipeline"]["additionalProperties"], false);
        assert_eq!(
            s["properties"]["env"]["additionalProperties"]["additionalProperties"],
            false
        );
    }
}
