//! Drift between the programs and what ships beside them: every `--flag` of
//! `--help` and every configuration key must be in the man pages and the
//! shipped default configurations, and the defaults those configurations
//! show in comments must be the built-in ones.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::helper::binary;

/// The repository root (this crate lives in `tests/`).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_path_buf()
}

fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A man page's source with roff's escaped minus signs made plain.
fn man_page(name: &str) -> String {
    read(&format!("man/{name}")).replace("\\-", "-")
}

/// The `--long` options that `program args... --help` lists.
fn help_flags(program: &str, args: &[&str]) -> Vec<String> {
    let output = Command::new(binary(program))
        .args(args)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(output.status.success(), "{program} {args:?} --help failed");
    let text = String::from_utf8(output.stdout).expect("--help is UTF-8");
    let mut flags: Vec<String> = text
        .split(|c: char| c.is_whitespace() || ",[]<>()=`".contains(c))
        .filter(|word| word.starts_with("--") && word.len() > 2)
        .map(|word| word.trim_end_matches(['.', ':', ';']).to_owned())
        .filter(|word| {
            word[2..]
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '-')
        })
        .collect();
    flags.sort();
    flags.dedup();
    assert!(
        flags.len() >= 3,
        "too few flags found in {program} --help: {flags:?}"
    );
    flags
}

/// The keys a man page documents: the first word of each `.B`/`.BR` line.
fn man_keys(page: &str) -> Vec<String> {
    page.lines()
        .filter_map(|line| {
            let rest = line
                .strip_prefix(".B ")
                .or_else(|| line.strip_prefix(".BR "))?;
            let word = rest.split_whitespace().next()?.trim_matches('"');
            Some(word.to_owned())
        })
        .collect()
}

/// The key of a `key = value` line (not a comment's prose that happens to
/// contain " = ").
fn key_of(line: &str) -> Option<&str> {
    let (key, _) = line.split_once(" = ")?;
    key.chars()
        .all(|c| c.is_ascii_lowercase() || c == '_')
        .then_some(key)
}

/// The keys a shipped configuration shows, set or commented out
/// (`key = value` or `#key = value`), with the table each is under (the
/// last header line, commented or not, without brackets).
fn config_keys(text: &str) -> Vec<String> {
    let mut table = String::new();
    let mut keys = Vec::new();
    for line in text.lines() {
        let line = line.strip_prefix('#').unwrap_or(line);
        if line.starts_with('[') {
            table = line.trim_matches(['[', ']']).to_owned();
        } else if let Some(key) = key_of(line) {
            keys.push(if table.is_empty() {
                key.to_owned()
            } else {
                format!("{table}.{key}")
            });
        }
    }
    keys
}

/// `text` with every commented-out `#key = value` line made active, except
/// the keys in `keep_commented` and the lines under a commented-out table
/// header (examples such as `#[[rule]]`).
fn uncomment_defaults(text: &str, keep_commented: &[&str]) -> String {
    let mut in_example = false;
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with('[') {
            in_example = false;
        } else if line.starts_with("#[") {
            in_example = true;
        }
        let active = match line.strip_prefix('#') {
            Some(rest) if !in_example => match key_of(rest) {
                Some(key) if !keep_commented.contains(&key) => rest,
                _ => line,
            },
            _ => line,
        };
        out.push_str(active);
        out.push('\n');
    }
    out
}

fn assert_flags_documented(program: &str, subcommands: &[&[&str]], page: &str) {
    let text = man_page(page);
    for args in subcommands {
        for flag in help_flags(program, args) {
            assert!(
                text.contains(&flag),
                "{flag} of `{program} {}` is missing from man/{page}",
                args.join(" ")
            );
        }
    }
}

#[test]
fn every_flag_of_help_is_in_the_man_pages() {
    assert_flags_documented("anomalyd", &[&[], &["replay"], &["evaluate"]], "anomalyd.8");
    assert_flags_documented("anomaly-generator", &[&[]], "anomaly-generator.8");
}

fn assert_keys_documented(known: &[String], page: &str, shipped: &str) {
    let in_page = man_keys(&man_page(page));
    let in_file = config_keys(&read(shipped));
    for dotted in known {
        let key = dotted.rsplit('.').next().expect("a key");
        assert!(
            in_page.iter().any(|k| k == key),
            "{dotted} is not documented in man/{page} (as `.B {key}`)"
        );
        // A [[rule]]/[[series]] table may set the top-level or [detector]
        // keys too; those are documented where they belong.
        assert!(
            in_file.iter().any(|k| k == dotted),
            "{dotted} is missing from {shipped} (set or as a `#{key} = default` comment)"
        );
    }
    for key in &in_file {
        let table_key = key.split_once('.');
        let known_as_is = known.contains(key);
        // Keys of [[rule]] and [[series]] examples may be any key a rule or
        // series takes: its own, or one of the section it overrides.
        let known_in_example = table_key.is_some_and(|(table, k)| {
            matches!(table, "rule" | "series")
                && known
                    .iter()
                    .any(|known| known.rsplit('.').next() == Some(k))
        });
        assert!(
            known_as_is || known_in_example,
            "{shipped} shows {key}, which the program does not know"
        );
    }
}

#[test]
fn every_config_key_is_in_the_man_pages_and_shipped_configs() {
    assert_keys_documented(
        &anomalyd::config::known_keys(),
        "anomalyd.toml.5",
        "etc/anomalyd/anomalyd.toml",
    );
    assert_keys_documented(
        &anomaly_generator::config::known_keys(),
        "anomaly-generator.toml.5",
        "etc/anomalyd/generator.toml",
    );
}

#[test]
fn the_defaults_shown_in_the_anomalyd_config_are_the_builtin_ones() {
    let shipped = read("etc/anomalyd/anomalyd.toml");
    let path = Path::new("/etc/anomalyd/anomalyd.toml");
    let as_shipped = anomalyd::config::Config::from_toml_str(&shipped, path)
        .expect("the shipped config is valid");
    // admin_listen, external_url, auth_token_file and the tls_* files are
    // unset by default (the comments show examples); min_samples and half_life follow
    // window_size, resolve_multiplier threshold_multiplier, rate_burst
    // rate_limit (the comments show their values or examples).
    let examples = [
        "admin_listen",
        "external_url",
        "auth_token_file",
        "rate_burst",
        "tls_cert_file",
        "tls_key_file",
        "tls_client_ca_file",
    ];
    let mut kept = examples.to_vec();
    kept.extend(["min_samples", "resolve_multiplier", "half_life"]);
    let uncommented = uncomment_defaults(&shipped, &kept);
    assert_ne!(uncommented, shipped, "no commented default found");
    let with_defaults = anomalyd::config::Config::from_toml_str(&uncommented, path)
        .unwrap_or_else(|e| panic!("the commented defaults do not parse: {e}"));
    assert_eq!(
        with_defaults, as_shipped,
        "a `#key = value` comment in etc/anomalyd/anomalyd.toml is not the built-in default"
    );
    let derived = uncomment_defaults(&shipped, &examples);
    let derived = anomalyd::config::Config::from_toml_str(&derived, path).expect("valid");
    assert_eq!(
        derived.detector.effective_min_samples(),
        as_shipped.detector.effective_min_samples(),
        "min_samples"
    );
    assert_eq!(
        derived.detector.effective_resolve_multiplier(),
        as_shipped.detector.effective_resolve_multiplier(),
        "resolve_multiplier"
    );
    assert_eq!(
        derived.detector.effective_half_life(),
        as_shipped.detector.effective_half_life(),
        "half_life"
    );
    // What the file sets on purpose for the package.
    assert_eq!(as_shipped.log.rotate.as_str(), "external");
    let builtin = anomalyd::config::Config::default();
    assert_eq!(builtin.log.rotate.as_str(), "self");
    let shipped_dir = Some(anomalyd::config::StateDirectory::Path(
        "/var/lib/anomalyd".into(),
    ));
    assert_eq!(as_shipped.state.directory, shipped_dir);
    assert_eq!(builtin.state.directory, None, "off unless $STATE_DIRECTORY");
}

#[test]
fn the_defaults_shown_in_the_generator_config_are_the_builtin_ones() {
    use anomaly_generator::config::GeneratorConfig;
    let shipped = read("etc/anomalyd/generator.toml");
    let path = Path::new("/etc/anomalyd/generator.toml");
    let as_shipped = GeneratorConfig::from_toml_str(&shipped, path).expect("valid");
    assert_eq!(
        GeneratorConfig {
            file: None,
            ..as_shipped.clone()
        },
        GeneratorConfig::default(),
        "the shipped generator config sets something: it should only comment"
    );
    // seed, listen and the files are unset by default (the comments
    // show examples); noise and season_amplitude default to a share of the
    // range, which the comments show as numbers: compared below.
    let keep = [
        "seed",
        "listen",
        "auth_token_file",
        "ca_file",
        "nats_creds_file",
        "nats_ca_file",
        "noise",
        "season_amplitude",
    ];
    let uncommented = uncomment_defaults(&shipped, &keep);
    let with_defaults = GeneratorConfig::from_toml_str(&uncommented, path)
        .unwrap_or_else(|e| panic!("the commented defaults do not parse: {e}"));
    assert_eq!(
        with_defaults, as_shipped,
        "a `#key = value` comment in etc/anomalyd/generator.toml is not the built-in default"
    );
    let derived = uncomment_defaults(&shipped, &["seed", "listen", "auth_token_file", "ca_file"]);
    let derived = GeneratorConfig::from_toml_str(&derived, path).expect("valid");
    let (shown, builtin) = (&derived.series[0].pattern, &as_shipped.series[0].pattern);
    assert_eq!(shown.noise_std_dev(), builtin.noise_std_dev(), "noise");
    assert_eq!(shown.amplitude(), builtin.amplitude(), "season_amplitude");
}

/// The evaluation corpus is what [8/11] §4 asks for: a valid generator
/// configuration of at least 20 series of 20,000 points, covering every
/// shape, with tuning and held-out seeds apart.
#[test]
fn the_corpus_covers_every_shape() {
    use anomaly_generator::config::{GeneratorConfig, NoiseDistribution};
    let text = read("tests/data/corpus.toml");
    let (generator, corpus) = text
        .split_once("\n[corpus]\n")
        .expect("a [corpus] table at the end");
    let config = GeneratorConfig::from_toml_str(generator, Path::new("corpus.toml"))
        .unwrap_or_else(|e| panic!("the corpus is not a generator configuration: {e}"));
    assert!(config.series.len() >= 20, "{} series", config.series.len());
    let number = |key: &str| -> u64 {
        corpus
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("[corpus] {key}"))
            .parse()
            .unwrap()
    };
    assert_eq!(number("points"), 20_000);
    let seeds = |key: &str| -> Vec<String> {
        let line = corpus
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key} = [")))
            .unwrap();
        line.trim_end_matches(']')
            .split(", ")
            .map(str::to_owned)
            .collect()
    };
    let (tune, heldout) = (seeds("tune_seeds"), seeds("heldout_seeds"));
    assert!(!tune.is_empty() && tune.iter().all(|s| !heldout.contains(s)));
    let patterns: Vec<_> = config.series.iter().map(|s| &s.pattern).collect();
    let any = |shape: &str, f: &dyn Fn(&anomaly_generator::config::Pattern) -> bool| {
        assert!(patterns.iter().any(|p| f(p)), "no series with {shape}");
    };
    any("spikes", &|p| {
        p.anomaly_probability > 0.0 && p.burst_probability == 0.0
    });
    any("bursts", &|p| p.burst_probability > 0.0);
    any("level shifts", &|p| p.level_shift_probability > 0.0);
    any("trend changes", &|p| p.trend_change_probability > 0.0);
    any("variance changes", &|p| p.variance_change_probability > 0.0);
    any("daily seasonality", &|p| {
        p.season_period.as_secs() == 86_400 && p.amplitude() > 0.0
    });
    any("daily seasonality without anomalies", &|p| {
        p.season_period.as_secs() == 86_400 && p.amplitude() > 0.0 && p.anomaly_probability == 0.0
    });
    any("flat series with jumps", &|p| p.noise_std_dev() == 0.0);
    any("counter resets", &|p| {
        p.counter && p.counter_reset_probability > 0.0
    });
    any("Student-t noise", &|p| {
        p.noise_distribution == NoiseDistribution::StudentT
    });
}
