//! Series names for labelled metrics, in canonical Prometheus form:
//! `name{label="value",...}`.
//!
//! Remote-write and line protocol identify a series by a metric name and a
//! set of labels. Both become one series name, written the way the
//! Prometheus text format writes a sample: labels sorted by name, no space
//! after the commas, and `\`, `"` and newline in values escaped as `\\`,
//! `\"` and `\n`. A metric without labels is its bare name. The same set of
//! labels always gives the same name, whatever order they arrived in, so
//! the log, `/anomalies`, `/series` and alerts all show one name.
//!
//! [`parse_series_name`] reads such a name back (for the `metric` and
//! `labels` matchers of `[[rule]]`).

/// Longest series name accepted from remote-write and line protocol, in
/// bytes: labels make names long. A longer one is skipped and counted,
/// not refused, because Prometheus drops a whole batch on a 4xx.
pub const MAX_LABELLED_NAME_BYTES: usize = 4096;

/// Appends the canonical name of metric `metric` with `labels` (pairs of
/// label name and value, any order; sorted here in place) to `out`. The
/// pairs may be `&str`, `Cow<str>` or `String`, so that each format passes
/// the labels it holds without copying them into another list.
pub fn write_series_name<N, V>(out: &mut String, metric: &str, labels: &mut [(N, V)])
where
    N: AsRef<str>,
    V: AsRef<str>,
{
    out.push_str(metric);
    if labels.is_empty() {
        return;
    }
    // Senders usually sort labels already: sort only when needed.
    if !labels.is_sorted_by(|a, b| a.0.as_ref() <= b.0.as_ref()) {
        labels.sort_unstable_by(|a, b| {
            (a.0.as_ref(), a.1.as_ref()).cmp(&(b.0.as_ref(), b.1.as_ref()))
        });
    }
    out.push('{');
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name.as_ref());
        out.push_str("=\"");
        escape_label_value(out, value.as_ref());
        out.push('"');
    }
    out.push('}');
}

/// Appends `value` escaped as the Prometheus text format escapes a label
/// value: `\` → `\\`, `"` → `\"`, newline → `\n`.
pub fn escape_label_value(out: &mut String, value: &str) {
    let needs = |b: &u8| matches!(b, b'\\' | b'"' | b'\n');
    if !value.as_bytes().iter().any(needs) {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Appends `name` with every character outside `[a-zA-Z0-9_:]` replaced by
/// `_`: how line protocol's measurement, field and tag names become
/// Prometheus metric and label names.
pub fn push_sanitized(out: &mut String, name: &str) {
    if name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
    {
        out.push_str(name);
        return;
    }
    out.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            c
        } else {
            '_'
        }
    }));
}

/// A series name read back into its metric name and labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelledName {
    /// The metric name: everything before `{` (the whole name when there
    /// are no labels).
    pub metric: String,
    /// Label names and (unescaped) values, in the order of the name.
    pub labels: Vec<(String, String)>,
}

impl LabelledName {
    /// The value of label `name`, if the series has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(label, _)| label == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Reads a series name of the form `metric{label="value",...}` (as
/// [`write_series_name`] writes it); a name without `{` is a metric without
/// labels. `None` when the part from `{` on is not a well-formed label set.
pub fn parse_series_name(name: &str) -> Option<LabelledName> {
    let Some(open) = name.find('{') else {
        return Some(LabelledName {
            metric: name.to_owned(),
            labels: Vec::new(),
        });
    };
    let metric = name[..open].to_owned();
    let mut rest = name[open + 1..].strip_suffix('}')?;
    let mut labels = Vec::new();
    while !rest.is_empty() {
        let (label, after) = rest.split_once("=\"")?;
        if label.is_empty() || label.contains([',', '"', '{', '}']) {
            return None;
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    _ => return None,
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((label.to_owned(), value));
        rest = &after[end + 1..];
        if !rest.is_empty() {
            rest = rest.strip_prefix(',')?;
            if rest.is_empty() {
                return None;
            }
        }
    }
    Some(LabelledName { metric, labels })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(metric: &str, labels: &[(&str, &str)]) -> String {
        let mut labels = labels.to_vec();
        let mut out = String::new();
        write_series_name(&mut out, metric, &mut labels);
        out
    }

    #[test]
    fn labels_are_sorted_and_values_escaped() {
        assert_eq!(name("up", &[]), "up");
        assert_eq!(
            name(
                "node_cpu_seconds_total",
                &[("mode", "idle"), ("cpu", "3"), ("job", "node")]
            ),
            r#"node_cpu_seconds_total{cpu="3",job="node",mode="idle"}"#
        );
        assert_eq!(
            name("m", &[("path", "C:\\dir \"x\"\nend")]),
            r#"m{path="C:\\dir \"x\"\nend"}"#
        );
    }

    #[test]
    fn sanitizing_keeps_prometheus_characters_only() {
        let mut out = String::new();
        push_sanitized(&mut out, "cpu usage-idle.1:ok");
        assert_eq!(out, "cpu_usage_idle_1:ok");
        out.clear();
        push_sanitized(&mut out, "héllo");
        assert_eq!(out, "h_llo");
    }

    #[test]
    fn malformed_label_sets_are_not_parsed() {
        for bad in [
            "m{",
            "m{a}",
            "m{a=\"x}",
            "m{a=\"x\",}",
            "m{=\"x\"}",
            "m{a=\"x\"b=\"y\"}",
            "m{a=\"\\q\"}",
        ] {
            assert_eq!(parse_series_name(bad), None, "{bad}");
        }
        let plain = parse_series_name("cpu").unwrap();
        assert_eq!((plain.metric.as_str(), plain.labels.len()), ("cpu", 0));
    }

    proptest! {
        #[test]
        fn a_written_name_parses_back(
            metric in "[a-zA-Z_:][a-zA-Z0-9_:]{0,12}",
            labels in proptest::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,8}", "\\PC{0,8}|[\\\\\"\n,{}=]{0,4}", 0..5),
        ) {
            let pairs: Vec<(&str, &str)> =
                labels.iter().rev().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let written = name(&metric, &pairs);
            let parsed = parse_series_name(&written).unwrap();
            prop_assert_eq!(parsed.metric, metric);
            let expected: Vec<(String, String)> =
                labels.into_iter().collect();
            prop_assert_eq!(parsed.labels, expected);
        }
    }
}
