//! Multi-document Kubernetes YAML → typed objects, for `herald simulate`/`validate` and tests.
//!
//! Documents are split at `---` lines (a YAML document marker always sits in column 0), so every
//! error carries the line in the original file. Kinds Herald does not read are skipped with a
//! warning, as `kubectl apply` users expect files to mix MetalLB objects with other manifests;
//! a document that is not a Kubernetes object at all is an error.

use std::fmt;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api;
use crate::yaml;

/// One object Herald understands. BGPPeer is always v1beta2 (v1beta1 is converted on load).
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Object {
    IPAddressPool(api::IPAddressPool),
    L2Advertisement(api::L2Advertisement),
    BGPAdvertisement(api::BGPAdvertisement),
    BGPPeer(api::BGPPeer),
    Community(api::Community),
    BFDProfile(api::BFDProfile),
    ServiceL2Status(api::ServiceL2Status),
    ServiceBGPStatus(api::ServiceBGPStatus),
    ConfigurationState(api::ConfigurationState),
    Service(Service),
    Node(Node),
    Namespace(Namespace),
    EndpointSlice(EndpointSlice),
    ConfigMap(ConfigMap),
    Secret(Secret),
}

/// A document that was skipped (unknown kind), with where it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadWarning {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for LoadWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// The objects of one file and the documents skipped.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    pub objects: Vec<Object>,
    pub warnings: Vec<LoadWarning>,
}

/// Input that is not (valid) Kubernetes YAML: file name, 1-based line, reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct LoadError {
    /// The file name (or whatever the caller passed as `source`).
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// Parses multi-document YAML; skipped documents are logged as warnings.
pub fn parse_documents(text: &str, source: &str) -> Result<Vec<Object>, LoadError> {
    let loaded = parse(text, source)?;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    Ok(loaded.objects)
}

/// Parses multi-document YAML, returning the warnings instead of logging them; stops at the
/// first error (see [`parse_all`] for every error).
pub fn parse(text: &str, source: &str) -> Result<Loaded, LoadError> {
    let (loaded, mut errors) = parse_all(text, source);
    if errors.is_empty() {
        Ok(loaded)
    } else {
        Err(errors.swap_remove(0))
    }
}

/// Parses every document, collecting the objects of the good ones and one error per bad one,
/// so a broken document never hides the errors of the next.
pub fn parse_all(text: &str, source: &str) -> (Loaded, Vec<LoadError>) {
    let mut loaded = Loaded::default();
    let mut errors = Vec::new();
    for (first_line, document) in split_documents(text) {
        let value: Value = match yaml::value(&document) {
            Ok(value) => value,
            Err(e) => {
                errors.push(LoadError {
                    file: source.to_string(),
                    line: e.line().map_or(first_line, |l| first_line + l - 1),
                    message: e.message(first_line),
                });
                continue;
            }
        };
        if value.is_null() {
            continue; // only comments, or an empty document
        }
        // Document-level messages point at its first line of content, not at the marker.
        let content_offset = document
            .lines()
            .position(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .unwrap_or(0);
        let doc = Document {
            source,
            first_line,
            content_line: first_line + content_offset,
            text: &document,
        };
        if let Err(e) = doc.add_objects(value, &mut loaded) {
            errors.push(e);
        }
    }
    (loaded, errors)
}

struct Document<'a> {
    source: &'a str,
    /// Line of the document's first text line (chunk line 1).
    first_line: usize,
    /// Line of its first line of content.
    content_line: usize,
    text: &'a str,
}

impl Document<'_> {
    fn error(&self, line: usize, message: impl Into<String>) -> LoadError {
        LoadError {
            file: self.source.to_string(),
            line,
            message: message.into(),
        }
    }

    fn add_objects(&self, value: Value, loaded: &mut Loaded) -> Result<(), LoadError> {
        let Value::Object(map) = &value else {
            return Err(self.error(
                self.content_line,
                "not a Kubernetes object (expected a mapping with apiVersion and kind)",
            ));
        };
        let field = |name: &str| map.get(name).and_then(Value::as_str).map(str::to_string);
        let (Some(api_version), Some(kind)) = (field("apiVersion"), field("kind")) else {
            return Err(self.error(
                self.content_line,
                "not a Kubernetes object: apiVersion and kind are required",
            ));
        };
        if kind == "List" || kind.ends_with("List") && api_version == "v1" {
            let items = map
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for item in items {
                self.add_objects(item, loaded)?;
            }
            return Ok(());
        }
        match self.object(&api_version, &kind, value)? {
            Some(object) => loaded.objects.push(object),
            None => loaded.warnings.push(LoadWarning {
                file: self.source.to_string(),
                line: self.content_line,
                message: format!("skipping {api_version} {kind}: not a kind Herald reads"),
            }),
        }
        Ok(())
    }

    fn object(
        &self,
        api_version: &str,
        kind: &str,
        value: Value,
    ) -> Result<Option<Object>, LoadError> {
        let metallb = |version: &str| api_version == format!("{}/{version}", api::GROUP);
        if let Some(group_version) = api_version.strip_prefix("metallb.io/") {
            let served = match kind {
                "BGPPeer" => matches!(group_version, "v1beta1" | "v1beta2"),
                "IPAddressPool" | "L2Advertisement" | "BGPAdvertisement" | "Community"
                | "BFDProfile" | "ServiceL2Status" | "ServiceBGPStatus" | "ConfigurationState" => {
                    group_version == "v1beta1"
                }
                _ => return Ok(None),
            };
            if !served {
                return Err(self.error(
                    self.content_line,
                    format!("{api_version} {kind}: version not served (MetalLB serves metallb.io/v1beta1{})",
                        if kind == "BGPPeer" { " and metallb.io/v1beta2" } else { "" }),
                ));
            }
        }
        let object = match kind {
            "IPAddressPool" if metallb("v1beta1") => {
                Object::IPAddressPool(self.typed(value, false)?)
            }
            "L2Advertisement" if metallb("v1beta1") => {
                Object::L2Advertisement(self.typed(value, true)?)
            }
            "BGPAdvertisement" if metallb("v1beta1") => {
                Object::BGPAdvertisement(self.typed(value, true)?)
            }
            "BGPPeer" if metallb("v1beta2") => Object::BGPPeer(self.typed(value, true)?),
            "BGPPeer" if metallb("v1beta1") => {
                Object::BGPPeer(self.typed::<api::v1beta1::BGPPeer>(value, true)?.into())
            }
            "Community" if metallb("v1beta1") => Object::Community(self.typed(value, true)?),
            "BFDProfile" if metallb("v1beta1") => Object::BFDProfile(self.typed(value, true)?),
            "ServiceL2Status" if metallb("v1beta1") => {
                Object::ServiceL2Status(self.typed(value, true)?)
            }
            "ServiceBGPStatus" if metallb("v1beta1") => {
                Object::ServiceBGPStatus(self.typed(value, true)?)
            }
            "ConfigurationState" if metallb("v1beta1") => {
                Object::ConfigurationState(self.typed(value, false)?)
            }
            "Service" if api_version == "v1" => Object::Service(self.typed(value, false)?),
            "Node" if api_version == "v1" => Object::Node(self.typed(value, false)?),
            "Namespace" if api_version == "v1" => Object::Namespace(self.typed(value, false)?),
            "ConfigMap" if api_version == "v1" => Object::ConfigMap(self.typed(value, false)?),
            "Secret" if api_version == "v1" => Object::Secret(self.typed(value, false)?),
            "EndpointSlice" if api_version == "discovery.k8s.io/v1" => {
                Object::EndpointSlice(self.typed(value, false)?)
            }
            _ => return Ok(None),
        };
        Ok(Some(object))
    }

    /// Deserializes one object; `spec_optional` kinds get an empty spec when it is absent
    /// (MetalLB's docs show `L2Advertisement`s without one).
    fn typed<T: DeserializeOwned>(
        &self,
        mut value: Value,
        spec_optional: bool,
    ) -> Result<T, LoadError> {
        if spec_optional
            && let Value::Object(map) = &mut value
            && map.get("spec").is_none_or(Value::is_null)
        {
            map.insert("spec".into(), Value::Object(serde_json::Map::default()));
        }
        yaml::from_value(value).map_err(|e| {
            // A parsed value has no positions: re-read the text as `T`, whose error has the
            // line when it fails at the same field (the parser reads a number into a string
            // field, say, where the value does not: then the object's first line).
            let line = yaml::from_str::<T>(self.text)
                .err()
                .filter(|text_error| text_error.path() == e.path())
                .and_then(|text_error| text_error.line())
                .map_or(self.content_line, |l| self.first_line + l - 1);
            let name = yaml::value(self.text)
                .ok()
                .and_then(|v| v.get("metadata")?.get("name")?.as_str().map(str::to_string))
                .map(|n| format!(" {n:?}"))
                .unwrap_or_default();
            let kind = std::any::type_name::<T>()
                .rsplit("::")
                .next()
                .unwrap_or("object");
            self.error(
                line,
                format!("{kind}{name}: {}", e.message(self.first_line)),
            )
        })
    }
}

/// Splits at document markers (`---` in column 0, optionally followed by content) and drops
/// `...` end markers. Returns each document with the 1-based line it starts on.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut documents = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        let is_marker = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if is_marker {
            documents.push((start, std::mem::take(&mut current)));
            // Content after the marker belongs to the new document, on this same line.
            start = line_number;
            current.push_str(line[3..].trim_start());
            current.push('\n');
            continue;
        }
        if line == "..." || line.starts_with("... ") {
            continue;
        }
        if current.is_empty() && documents.is_empty() && index == 0 {
            start = line_number;
        }
        current.push_str(line);
        current.push('\n');
    }
    documents.push((start, current));
    documents
}

#[cfg(test)]
mod tests {
    use super::*;

    const POOL_AND_AD: &str = "\
# leading comment
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: first-pool
  namespace: metallb-system
spec:
  addresses:
  - 192.168.1.240-192.168.1.250
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata:
  name: example
  namespace: metallb-system
";

    #[test]
    fn reads_metallb_objects_and_defaults_a_missing_spec() {
        let objects = parse_documents(POOL_AND_AD, "a.yaml").expect("valid");
        assert_eq!(objects.len(), 2);
        let Object::IPAddressPool(pool) = &objects[0] else {
            panic!("{objects:?}")
        };
        assert_eq!(pool.spec.addresses, ["192.168.1.240-192.168.1.250"]);
        let Object::L2Advertisement(ad) = &objects[1] else {
            panic!("{objects:?}")
        };
        assert!(ad.spec.ip_address_pools.is_empty());
    }

    #[test]
    fn converts_v1beta1_bgppeer_like_metallb() {
        let text = "apiVersion: metallb.io/v1beta1\nkind: BGPPeer\nmetadata: {name: p}\nspec:\n  myASN: 64500\n  peerASN: 64501\n  peerAddress: 10.0.0.1\n  nodeSelectors:\n  - matchLabels: {a: b}\n    matchExpressions: [{key: k, operator: In, values: [v]}]\n";
        let objects = parse_documents(text, "p.yaml").expect("valid");
        let Object::BGPPeer(peer) = &objects[0] else {
            panic!("{objects:?}")
        };
        assert_eq!(peer.spec.my_asn, 64500);
        assert_eq!(peer.spec.hold_time.as_deref(), Some("0s"));
        let selector = &peer.spec.node_selectors[0];
        assert_eq!(
            selector
                .match_labels
                .as_ref()
                .and_then(|m| m.get("a"))
                .map(String::as_str),
            Some("b")
        );
        assert_eq!(selector.match_expressions.as_ref().map(Vec::len), Some(1));
    }

    #[test]
    fn skips_unknown_kinds_with_a_warning_naming_the_line() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: metallb-system}\n";
        let loaded = parse(text, "mixed.yaml").expect("valid");
        assert_eq!(loaded.objects.len(), 1);
        assert_eq!(loaded.warnings.len(), 1);
        assert_eq!(loaded.warnings[0].line, 1);
        assert!(
            loaded.warnings[0]
                .to_string()
                .contains("apps/v1 Deployment")
        );
    }

    /// Exact file lines for every kind of load error, whatever document they are in.
    #[test]
    fn errors_carry_file_and_line() {
        const NS: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n";
        let cases: [(String, usize, &str); 10] = [
            // Unclosed flow sequence: reported where it opens, on line 8 of the file.
            (
                format!("{NS}---\napiVersion: v1\nkind: Node\nmetadata:\n  name: [unclosed\n"),
                8,
                "unclosed bracket '['",
            ),
            (format!("{NS}---\nfoo: bar\n"), 5, "not a Kubernetes object"),
            (
                format!("{NS}---\n\n# comment\n\nkind: Service\n"),
                8,
                "apiVersion and kind are required",
            ),
            (
                "---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: p\nspec:\n  addresses: 10.0.0.0/24\n".into(),
                7,
                "IPAddressPool \"p\": spec.addresses: invalid type: string",
            ),
            (
                format!("{NS}---\n{NS}---\napiVersion: v1\nkind: Service\nmetadata: {{name: s}}\nspec:\n  ports:\n  - port: 80\n  - port: eighty\n"),
                15,
                "Service \"s\": spec.ports[1].port: invalid type",
            ),
            (
                format!("{NS}--- \napiVersion: v1\nkind: Node\nmetadata: {{name: [x}}\n"),
                7,
                "mismatched bracket '[' closed by '}'",
            ),
            (
                "apiVersion: v1\r\nkind: Namespace\r\nmetadata: {name: a}\r\n---\r\nfoo: [1, 2\r\n".into(),
                5,
                "unclosed bracket '['",
            ),
            ("just a string\n".into(), 1, "not a Kubernetes object"),
            (
                format!("{NS}---\napiVersion: metallb.io/v1beta2\nkind: L2Advertisement\nmetadata: {{name: x}}\n"),
                5,
                "version not served",
            ),
            ("a: b\n  c: d\n".into(), 2, "mapping values are not allowed"),
        ];
        for (text, line, fragment) in cases {
            let e = parse(&text, "f.yaml").expect_err(&text);
            assert_eq!((e.file.as_str(), e.line), ("f.yaml", line), "{text:?}: {e}");
            assert!(e.message.contains(fragment), "{text:?}: {e}");
            assert!(
                !e.message.contains(&format!("line {line}")),
                "{text:?}: {e}"
            );
            assert!(
                e.to_string().starts_with(&format!("f.yaml:{line}: ")),
                "{e}"
            );
        }
    }

    #[test]
    fn parse_all_reports_every_bad_document_and_keeps_the_good_ones() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nfoo: [\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n---\nbar: baz\n";
        let (loaded, errors) = parse_all(text, "m.yaml");
        assert_eq!(loaded.objects.len(), 2);
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [5, 11], "{errors:?}");
        assert_eq!(parse(text, "m.yaml").expect_err("first error").line, 5);
    }

    #[test]
    fn unserved_metallb_versions_are_errors() {
        let text = "apiVersion: metallb.io/v1beta2\nkind: IPAddressPool\nmetadata: {name: p}\nspec: {addresses: []}\n";
        let e = parse(text, "v.yaml").expect_err("not served");
        assert!(e.message.contains("version not served"), "{e}");
    }

    #[test]
    fn lists_are_flattened_and_comment_only_documents_ignored() {
        let text = "# nothing\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Node\n  metadata: {name: n1}\n- apiVersion: v1\n  kind: Node\n  metadata: {name: n2}\n...\n";
        let objects = parse_documents(text, "l.yaml").expect("valid");
        assert_eq!(objects.len(), 2);
    }
}
