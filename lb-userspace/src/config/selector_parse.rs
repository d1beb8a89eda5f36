//! `metav1.LabelSelector` → [`Selector`], with Kubernetes' validity rules and MetalLB's
//! duplicate rules for selector lists.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::selector::{Operator, Requirement, Selector};

impl Selector {
    /// Validates and converts a LabelSelector as `metav1.LabelSelectorAsSelector` does: label
    /// keys and values must be valid, the operator known, In/NotIn need values and
    /// Exists/DoesNotExist take none.
    pub fn parse(selector: &LabelSelector) -> Result<Selector, String> {
        let mut parsed = Selector::default();
        for (key, value) in selector.match_labels.iter().flatten() {
            check_key(key).map_err(|e| format!("matchLabels: {e}"))?;
            check_value(value).map_err(|e| format!("matchLabels[{key:?}]: {e}"))?;
            parsed.match_labels.insert(key.clone(), value.clone());
        }
        for (i, expression) in selector.match_expressions.iter().flatten().enumerate() {
            let at = |e: String| format!("matchExpressions[{i}]: {e}");
            check_key(&expression.key).map_err(at)?;
            let values = expression.values.clone().unwrap_or_default();
            let operator = match expression.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(at(format!(
                        "{other:?} is not a valid label selector operator"
                    )));
                }
            };
            match operator {
                Operator::In | Operator::NotIn if values.is_empty() => {
                    return Err(at(format!(
                        "values: must be specified when operator is {:?}",
                        expression.operator
                    )));
                }
                Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                    return Err(at(format!(
                        "values: may not be specified when operator is {:?}",
                        expression.operator
                    )));
                }
                _ => {}
            }
            for value in &values {
                check_value(value).map_err(|e| at(format!("values: {e}")))?;
            }
            let mut values = values;
            values.sort();
            values.dedup();
            parsed.match_expressions.push(Requirement {
                key: expression.key.clone(),
                operator,
                values,
            });
        }
        Ok(parsed)
    }
}

/// Parses a selector list as MetalLB does for every list it reads: no two identical
/// selectors (values compared sorted), no two identical expressions in one selector, no value
/// repeated in one expression, and every selector valid. Returns the parsed selectors of the
/// valid entries and `(field path, message)` for every problem.
pub(crate) fn parse_list(
    selectors: &[LabelSelector],
    field: &str,
) -> (Vec<Selector>, Vec<(String, String)>) {
    let mut parsed = Vec::new();
    let mut problems = Vec::new();
    let normalized: Vec<String> = selectors.iter().map(normalized_text).collect();
    for (i, selector) in selectors.iter().enumerate() {
        let path = format!("{field}[{i}]");
        let mut ok = true;
        for (j, expression) in selector.match_expressions.iter().flatten().enumerate() {
            let values = expression.values.as_deref().unwrap_or_default();
            if let Some(dup) = first_duplicate(values) {
                problems.push((
                    format!("{path}.matchExpressions[{j}].values"),
                    format!(
                        "duplicate definition of match expression value in label selector {dup:?}"
                    ),
                ));
                ok = false;
            }
            let earlier = selector.match_expressions.iter().flatten().take(j);
            if earlier
                .clone()
                .any(|e| expression_text(e) == expression_text(expression))
            {
                problems.push((
                    format!("{path}.matchExpressions[{j}]"),
                    format!(
                        "duplicate definition of match expressions {}",
                        expression_text(expression)
                    ),
                ));
                ok = false;
            }
        }
        if normalized[..i].contains(&normalized[i]) {
            problems.push((
                path.clone(),
                format!("duplicate definition of {field} {}", normalized[i]),
            ));
            ok = false;
        }
        match Selector::parse(selector) {
            Ok(s) if ok => parsed.push(s),
            Ok(_) => {}
            Err(e) => problems.push((path, format!("invalid label selector: {e}"))),
        }
    }
    (parsed, problems)
}

fn first_duplicate(values: &[String]) -> Option<&String> {
    values
        .iter()
        .enumerate()
        .find(|(i, v)| values[..*i].contains(v))
        .map(|(_, v)| v)
}

fn expression_text(
    e: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement,
) -> String {
    let mut values = e.values.clone().unwrap_or_default();
    values.sort();
    format!("{{{} {} [{}]}}", e.key, e.operator, values.join(","))
}

/// A canonical text of a selector for duplicate detection (labels sorted by key, expression
/// values sorted, expressions in written order as MetalLB compares them).
fn normalized_text(s: &LabelSelector) -> String {
    let labels: Vec<String> = s
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let expressions: Vec<String> = s
        .match_expressions
        .iter()
        .flatten()
        .map(expression_text)
        .collect();
    format!(
        "{{matchLabels: {{{}}}, matchExpressions: [{}]}}",
        labels.join(","),
        expressions.join(",")
    )
}

/// Kubernetes `IsQualifiedName`: optional DNS-subdomain prefix, `/`, and a name of at most 63
/// alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let dns_ok = !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !dns_ok {
            return Err(format!(
                "invalid label key {key:?}: prefix must be a DNS subdomain"
            ));
        }
    }
    if name.is_empty() || !is_label_name(name) {
        return Err(format!(
            "invalid label key {key:?}: name part must be 1-63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
        ));
    }
    Ok(())
}

fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_name(value) {
        Ok(())
    } else {
        Err(format!(
            "invalid label value {value:?}: must be at most 63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
        ))
    }
}

fn is_label_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    s.len() <= 63
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| {
                values
                    .iter()
                    .map(std::string::ToString::to_string)
                    .collect()
            }),
        }
    }

    fn sel(labels: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>) -> LabelSelector {
        LabelSelector {
            match_labels: (!labels.is_empty()).then(|| {
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }),
            match_expressions: (!exprs.is_empty()).then_some(exprs),
        }
    }

    #[test]
    fn parse_accepts_valid_selectors_and_sorts_values() {
        let s = Selector::parse(&sel(
            &[("example.com/zone", "a")],
            vec![expr("tier", "In", &["b", "a"])],
        ))
        .expect("valid");
        assert_eq!(s.match_expressions[0].values, ["a", "b"]);
        assert_eq!(s.match_labels["example.com/zone"], "a");
        assert!(
            Selector::parse(&LabelSelector::default())
                .expect("empty")
                .is_empty()
        );
    }

    #[test]
    fn parse_rejects_what_kubernetes_rejects() {
        let cases = [
            (
                sel(&[], vec![expr("k", "Foo", &["a"])]),
                "\"Foo\" is not a valid label selector operator",
            ),
            (sel(&[], vec![expr("k", "In", &[])]), "must be specified"),
            (sel(&[], vec![expr("k", "NotIn", &[])]), "must be specified"),
            (
                sel(&[], vec![expr("k", "Exists", &["a"])]),
                "may not be specified",
            ),
            (
                sel(&[], vec![expr("k", "DoesNotExist", &["a"])]),
                "may not be specified",
            ),
            (sel(&[("bad key!", "a")], vec![]), "invalid label key"),
            (
                sel(&[("Upper.Case/k", "a")], vec![]),
                "prefix must be a DNS subdomain",
            ),
            (sel(&[("a/b/c", "a")], vec![]), "invalid label key"),
            (sel(&[("k", "-bad")], vec![]), "invalid label value"),
            (sel(&[], vec![expr("", "Exists", &[])]), "invalid label key"),
            (
                sel(&[], vec![expr("k", "In", &["ok", "not ok"])]),
                "invalid label value",
            ),
        ];
        for (selector, want) in cases {
            let e = Selector::parse(&selector).expect_err(want);
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
    }

    #[test]
    fn list_duplicates_are_reported_with_their_path() {
        let a = sel(&[], vec![expr("k", "In", &["x", "y"])]);
        let b = sel(&[], vec![expr("k", "In", &["y", "x"])]);
        let (parsed, problems) = parse_list(&[a, b], "spec.nodeSelectors");
        assert_eq!(parsed.len(), 1);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, "spec.nodeSelectors[1]");
        assert!(
            problems[0]
                .1
                .starts_with("duplicate definition of spec.nodeSelectors")
        );

        let repeated_value = sel(&[], vec![expr("k", "In", &["x", "x"])]);
        let (_, problems) = parse_list(&[repeated_value], "f");
        assert_eq!(problems[0].0, "f[0].matchExpressions[0].values");

        let repeated_expr = sel(&[], vec![expr("k", "In", &["x"]), expr("k", "In", &["x"])]);
        let (_, problems) = parse_list(&[repeated_expr], "f");
        assert_eq!(problems[0].0, "f[0].matchExpressions[1]");

        let invalid = sel(&[], vec![expr("k", "Bogus", &[])]);
        let (parsed, problems) = parse_list(&[invalid, LabelSelector::default()], "f");
        assert_eq!(parsed.len(), 1);
        assert_eq!(problems[0].0, "f[0]");
    }
}
