//! YAML in and out, with one set of rules for every reader and writer in Herald (configuration
//! files, the legacy ConfigMap, the generated CRDs), on [`serde_saphyr`].
//!
//! Reading follows the YAML 1.2 core schema: only `true`/`false` (any case) are booleans, and
//! `yes`, `on`, `0755` or `1_000` stay strings. Errors carry the path of the field that failed
//! (`spec.ports[1].port: ...`) and, where the parser knows it, the line.
//!
//! Writing emits plain scalars wherever YAML 1.2 reads them back as the same string (so
//! `65535:65282` and `203.0.113.1` are not quoted), quotes the rest, and never folds long strings
//! into block scalars: one line per value, as the manifests and `convert-configmap` print them.

use std::cell::RefCell;
use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Options for every read.
fn read_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        with_snippet: false,
    }
}

/// Options for every write.
fn write_options() -> serde_saphyr::SerializerOptions {
    serde_saphyr::ser_options! {
        yaml_12: true,
        no_lang_directive: true,
        prefer_block_scalars: false,
    }
}

/// Why a text or value did not deserialize.
#[derive(Debug)]
pub struct Error {
    /// Where in the object it failed (`spec.addresses[0]`); `None` at the top.
    path: Option<String>,
    cause: Cause,
}

#[derive(Debug)]
enum Cause {
    /// From the YAML parser or while deserializing from it: knows its position.
    Yaml(Box<serde_saphyr::Error>),
    /// While deserializing an already parsed value: has no position.
    Value(serde_json::Error),
}

impl Error {
    /// The 1-based line, counted from the first line of the text parsed, when known.
    pub fn line(&self) -> Option<usize> {
        match &self.cause {
            Cause::Yaml(e) => e
                .location()
                .map(|l| l.line())
                .filter(|&line| line > 0)
                .and_then(|line| usize::try_from(line).ok()),
            Cause::Value(_) => None,
        }
    }

    /// Where in the object it failed (`spec.ports[1].port`); `None` at the top level.
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// One line: the field path and the reason, without the position [`Error::line`] reports.
    /// Other positions the message quotes (where an alias was defined, say) are counted from
    /// `first_line`, the line of the file the parsed text starts on.
    pub fn message(&self, first_line: usize) -> String {
        let reason = match &self.cause {
            Cause::Yaml(e) => {
                let offset = u64::try_from(first_line.saturating_sub(1)).unwrap_or(0);
                let rendered = e.render_with_options(serde_saphyr::render_options! {
                    snippets: serde_saphyr::SnippetMode::Off,
                    line_offset: offset,
                });
                match self.line() {
                    Some(line) => strip_position(&rendered, first_line + line - 1),
                    None => rendered,
                }
            }
            Cause::Value(e) => e.to_string(),
        };
        match self.path.as_deref() {
            Some(path) => format!("{path}: {reason}"),
            None => reason,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message(1))?;
        match self.line() {
            Some(line) => write!(f, " (line {line})"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for Error {}

/// Drops the trailing " at line L, column C" the renderer appends, when L is `line`.
fn strip_position(message: &str, line: usize) -> String {
    let suffix = format!(" at line {line}, column ");
    match message.rfind(&suffix) {
        Some(i)
            if message[i + suffix.len()..]
                .chars()
                .all(|c| c.is_ascii_digit()) =>
        {
            message[..i].to_string()
        }
        _ => message.to_string(),
    }
}

/// A path kept only when it says more than "the whole document".
fn path_of(path: &serde_path_to_error::Path) -> Option<String> {
    let text = path.to_string();
    (text != ".").then_some(text)
}

/// Deserializes one YAML document (empty or comments only: YAML null) into `T`.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, Error> {
    let path = RefCell::new(None);
    serde_saphyr::with_deserializer_from_str_with_options(text, read_options(), |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            *path.borrow_mut() = path_of(e.path());
            e.into_inner()
        })
    })
    .map_err(|e| Error {
        path: path.into_inner(),
        cause: Cause::Yaml(Box::new(e)),
    })
}

/// Deserializes one YAML document into an untyped value (YAML null for an empty document).
pub fn value(text: &str) -> Result<serde_json::Value, Error> {
    serde_saphyr::from_str_with_options(text, read_options()).map_err(|e| Error {
        path: None,
        cause: Cause::Yaml(Box::new(e)),
    })
}

/// Deserializes `T` from a value read by [`value`]: numbers stay numbers (a number where a
/// string is expected is an error, as the API server says).
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, Error> {
    serde_path_to_error::deserialize(value).map_err(|e| Error {
        path: path_of(e.path()),
        cause: Cause::Value(e.into_inner()),
    })
}

/// One YAML document (no `---` marker), ending with a newline.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, serde_saphyr::SerializeError> {
    serde_saphyr::to_string_with_options(value, write_options())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Port {
        #[allow(dead_code)]
        port: u16,
    }

    #[derive(Debug, Deserialize)]
    struct Spec {
        #[allow(dead_code)]
        ports: Vec<Port>,
    }

    #[test]
    fn yaml_12_scalars() {
        let v = value("a: yes\nb: on\nc: 0755\nd: 1_000\ne: 0x10\nf: True\ng: ~\n").unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a": "yes", "b": "on", "c": "0755", "d": "1_000", "e": 16, "f": true, "g": null})
        );
        assert_eq!(
            value("# only a comment\n").unwrap(),
            serde_json::Value::Null
        );
        assert_eq!(value("").unwrap(), serde_json::Value::Null);
    }

    #[test]
    fn typed_errors_name_the_field_and_the_line() {
        let e = from_str::<Spec>("ports:\n- port: 80\n- port: eighty\n").unwrap_err();
        assert_eq!(e.line(), Some(3));
        assert!(e.message(1).starts_with("ports[1].port: "), "{e}");
        assert!(!e.message(1).contains("line 3"), "{e}");

        let v = value("ports:\n- port: 80\n- port: eighty\n").unwrap();
        let e = from_value::<Spec>(v).unwrap_err();
        assert_eq!(e.line(), None);
        assert_eq!(
            e.message(1),
            "ports[1].port: invalid type: string \"eighty\", expected u16"
        );
    }

    #[test]
    fn syntax_errors_have_a_line_and_no_path() {
        let e = value("a: [1, 2\n").unwrap_err();
        assert_eq!(e.line(), Some(1));
        let message = e.message(10);
        assert!(message.contains("unclosed"), "{message}");
        assert!(!message.contains("at line"), "{message}");
        // Positions quoted inside a message are lines of the file too.
        let e = from_str::<Spec>("defs: &p {port: eighty}\nports:\n- *p\n").unwrap_err();
        assert_eq!(e.line(), Some(3));
        let message = e.message(10);
        assert!(message.contains("defined at line 10"), "{message}");
        assert!(message.contains("used at line 12"), "{message}");
        let e = value("a: 1\na: 2\n").unwrap_err();
        assert_eq!(e.line(), Some(2));
        assert!(e.message(1).contains("duplicate"), "{e}");
    }

    #[test]
    fn writes_plain_yaml_12_on_one_line_per_value() {
        let mut map = BTreeMap::new();
        map.insert("community", "65535:65282");
        map.insert("address", "203.0.113.1");
        map.insert("rule", "!has(self.x)");
        map.insert("word", "yes");
        map.insert(
            "long",
            "A label selector is a label query over a set of resources. The result of matchLabels and matchExpressions are ANDed.",
        );
        let text = to_string(&map).unwrap();
        assert_eq!(
            text,
            "address: 203.0.113.1\ncommunity: 65535:65282\nlong: A label selector is a label query over a set of resources. The result of matchLabels and matchExpressions are ANDed.\nrule: \"!has(self.x)\"\nword: yes\n"
        );
        // And it reads back as written.
        let back: BTreeMap<String, String> = from_str(&text).unwrap();
        assert_eq!(back.get("word").map(String::as_str), Some("yes"));
        assert_eq!(
            back.get("community").map(String::as_str),
            Some("65535:65282")
        );
    }
}
