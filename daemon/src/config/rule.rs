//! `[[rule]]` matching: which series a rule applies to.
//!
//! A rule sets at least one matcher, and applies to a series when all the
//! matchers it sets match:
//! - `series`: a glob over the whole series name, e.g. `"cpu.*"`;
//! - `metric`: a glob over the metric name alone, the part of the name
//!   before `{` (remote-write and line-protocol series are named
//!   `metric{label="value",...}`);
//! - `labels`: exact label values, e.g. `labels = { job = "node" }`, read
//!   from the name's `{...}` part; a series without labels matches none.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use globset::{GlobBuilder, GlobMatcher};

use super::DetectorOverrides;
use super::toml_walk::quote;
use crate::ingest::labels::{LabelledName, parse_series_name};

/// A glob over series names, as `[[rule]] series` and the `series_glob`
/// query parameters take it: `*` (also across `/` and `.`), `?`, `[abc]`,
/// `{a,b}`; a backslash escapes the next character (`\{` is a literal `{`).
#[derive(Clone, Debug)]
pub struct SeriesGlob {
    text: String,
    matcher: GlobMatcher,
}

impl SeriesGlob {
    /// Compiles `text`; the error says what is wrong with the pattern.
    pub fn new(text: &str) -> Result<SeriesGlob, globset::Error> {
        let glob = GlobBuilder::new(text)
            .literal_separator(false)
            .backslash_escape(true)
            .build()?;
        Ok(SeriesGlob {
            text: text.to_owned(),
            matcher: glob.compile_matcher(),
        })
    }

    /// Whether the series `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        self.matcher.is_match(name)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl PartialEq for SeriesGlob {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

/// What a `[[rule]]` matches: at least one of its fields is set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuleMatch {
    /// `series`: a glob over the whole name.
    pub series: Option<SeriesGlob>,
    /// `metric`: a glob over the metric name (before `{`).
    pub metric: Option<SeriesGlob>,
    /// `labels`: label name to the exact value it must have.
    pub labels: BTreeMap<String, String>,
}

impl RuleMatch {
    /// Whether nothing is set (such a rule is refused: it would match
    /// every series, which is what `[detector]` is for).
    pub fn is_empty(&self) -> bool {
        self.series.is_none() && self.metric.is_none() && self.labels.is_empty()
    }

    /// Whether the series `name` matches. `parsed` caches the name split
    /// into metric and labels across the rules tried for one series
    /// (`None` until needed; `Some(None)` for a name whose `{...}` part is
    /// not a label set: it has no labels and is all metric name).
    pub fn matches(&self, name: &str, parsed: &mut Option<Option<LabelledName>>) -> bool {
        if self.series.as_ref().is_some_and(|glob| !glob.matches(name)) {
            return false;
        }
        if self.metric.is_none() && self.labels.is_empty() {
            return true;
        }
        let parsed = parsed.get_or_insert_with(|| parse_series_name(name));
        let metric = parsed.as_ref().map_or(name, |p| p.metric.as_str());
        if self
            .metric
            .as_ref()
            .is_some_and(|glob| !glob.matches(metric))
        {
            return false;
        }
        self.labels.iter().all(|(label, value)| {
            parsed
                .as_ref()
                .and_then(|p| p.label(label))
                .is_some_and(|v| v == value)
        })
    }

    /// The matchers as TOML keys, one per line (for `--check-config`).
    pub fn write_toml(&self, out: &mut String) {
        if let Some(series) = &self.series {
            let _ = writeln!(out, "series = {}", quote(series.as_str()));
        }
        if let Some(metric) = &self.metric {
            let _ = writeln!(out, "metric = {}", quote(metric.as_str()));
        }
        if !self.labels.is_empty() {
            let _ = writeln!(out, "labels = {}", self.labels_inline());
        }
    }

    /// A short description: the `series` glob alone when only it is set
    /// (`"cpu.*"`), else the matchers as inline TOML (`metric = "node_*",
    /// labels = { job = "node" }`).
    pub fn describe(&self) -> String {
        match self {
            RuleMatch {
                series: Some(series),
                metric: None,
                labels,
            } if labels.is_empty() => series.as_str().to_owned(),
            _ => {
                let mut parts = Vec::new();
                if let Some(series) = &self.series {
                    parts.push(format!("series = {}", quote(series.as_str())));
                }
                if let Some(metric) = &self.metric {
                    parts.push(format!("metric = {}", quote(metric.as_str())));
                }
                if !self.labels.is_empty() {
                    parts.push(format!("labels = {}", self.labels_inline()));
                }
                parts.join(", ")
            }
        }
    }

    /// `{ job = "node", mode = "idle" }`.
    fn labels_inline(&self) -> String {
        let pairs: Vec<String> = self
            .labels
            .iter()
            .map(|(label, value)| format!("{} = {}", toml_key(label), quote(value)))
            .collect();
        format!("{{ {} }}", pairs.join(", "))
    }
}

/// A TOML key: bare when it can be, quoted otherwise.
fn toml_key(key: &str) -> String {
    if !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        key.to_owned()
    } else {
        quote(key)
    }
}

/// A `[[rule]]`: detector overrides for the series it matches.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Which series it applies to.
    pub matcher: RuleMatch,
    /// The `[detector]` keys this rule overrides.
    pub overrides: DetectorOverrides,
    /// The file the rule comes from.
    pub file: PathBuf,
}

impl Rule {
    /// A rule for the series matching the glob `series`.
    pub fn new(
        series: &str,
        overrides: DetectorOverrides,
        file: impl Into<PathBuf>,
    ) -> Result<Rule, globset::Error> {
        let matcher = RuleMatch {
            series: Some(SeriesGlob::new(series)?),
            ..RuleMatch::default()
        };
        Ok(Rule::with_matcher(matcher, overrides, file))
    }

    /// A rule for the series `matcher` matches.
    pub fn with_matcher(
        matcher: RuleMatch,
        overrides: DetectorOverrides,
        file: impl Into<PathBuf>,
    ) -> Rule {
        Rule {
            matcher,
            overrides,
            file: file.into(),
        }
    }

    /// Whether this rule applies to the series `series`.
    pub fn matches(&self, series: &str) -> bool {
        self.matcher.matches(series, &mut None)
    }

    /// What it matches, in short (see [`RuleMatch::describe`]).
    pub fn describe(&self) -> String {
        self.matcher.describe()
    }
}

impl PartialEq for Rule {
    fn eq(&self, other: &Self) -> bool {
        self.matcher == other.matcher
            && self.overrides == other.overrides
            && self.file == other.file
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(series: Option<&str>, metric: Option<&str>, labels: &[(&str, &str)]) -> RuleMatch {
        RuleMatch {
            series: series.map(|s| SeriesGlob::new(s).unwrap()),
            metric: metric.map(|s| SeriesGlob::new(s).unwrap()),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn matches(matcher: &RuleMatch, name: &str) -> bool {
        matcher.matches(name, &mut None)
    }

    #[test]
    fn all_the_matchers_a_rule_sets_must_match() {
        let idle =
            r#"node_cpu_seconds_total{cpu="3",instance="web-1:9100",job="node",mode="idle"}"#;
        let api = r#"http_requests_total{job="api",path="/a,b=\"c\""}"#;
        let node = rule(None, None, &[("job", "node")]);
        assert!(matches(&node, idle));
        assert!(!matches(&node, api));
        assert!(!matches(&node, "cpu.host1"), "no labels, no match");
        let cpu_node = rule(
            None,
            Some("node_cpu_*"),
            &[("job", "node"), ("mode", "idle")],
        );
        assert!(matches(&cpu_node, idle));
        let user = idle.replace("idle", "user");
        assert!(!matches(&cpu_node, &user));
        let metric = rule(None, Some("http_*"), &[]);
        assert!(matches(&metric, api));
        assert!(!matches(&metric, idle));
        assert!(
            matches(&rule(None, Some("cpu.*"), &[]), "cpu.host1"),
            "no braces: all metric"
        );
        let quoted = rule(None, None, &[("path", "/a,b=\"c\"")]);
        assert!(
            matches(&quoted, api),
            "escaped values are compared unescaped"
        );
        let both = rule(Some("*instance=\"web-1*"), Some("node_*"), &[]);
        assert!(matches(&both, idle));
        assert!(!matches(&both, api));
    }

    #[test]
    fn a_backslash_makes_braces_and_brackets_literal() {
        let name = r#"up{job="node"}"#;
        let literal = rule(Some(r#"up\{job="node"\}"#), None, &[]);
        assert!(matches(&literal, name));
        let unescaped = SeriesGlob::new(r#"up{job="node"}"#).unwrap();
        assert!(
            !unescaped.matches(name),
            "an unescaped {{...}} is an alternation"
        );
        let brackets = rule(Some(r"disk\[0\]*"), None, &[]);
        assert!(matches(&brackets, "disk[0].read"));
    }

    #[test]
    fn descriptions_and_toml() {
        assert_eq!(rule(Some("cpu.*"), None, &[]).describe(), "cpu.*");
        let m = rule(None, Some("node_*"), &[("job", "node"), ("odd key", "x")]);
        assert_eq!(
            m.describe(),
            r#"metric = "node_*", labels = { job = "node", "odd key" = "x" }"#
        );
        let mut out = String::new();
        m.write_toml(&mut out);
        assert_eq!(
            out,
            "metric = \"node_*\"\nlabels = { job = \"node\", \"odd key\" = \"x\" }\n"
        );
        assert!(RuleMatch::default().is_empty());
    }
}
