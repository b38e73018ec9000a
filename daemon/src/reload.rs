//! What a configuration reload does to the running daemon; the loop that
//! calls it on SIGHUP or a file change is [`crate::service::reload`].
//!
//! A reload re-reads the main file and `conf.d/`, and applies the result
//! only when it is valid and differs from the configuration in force:
//! detector settings and rules take effect at each series' next point with
//! its window kept (resized when `window_size` changed), the anomaly log
//! switches files between two writes, and the log level and limits change
//! at once. Settings bound at start-up (`listen`, `socket_mode`, `admin_listen`,
//! `max_connections`, `[log] journal`) keep
//! their old values and are logged as needing a restart. An invalid
//! configuration is logged with file, key, line and column and the daemon
//! keeps running on the previous one; metrics and `/ready` show the failure
//! until a reload succeeds.
//!
//! SIGHUP also rotates the anomaly log, whatever the configuration's state.

use std::sync::Arc;

use crate::anomalies::log::{AnomalyLogSettings, Rotation};
use crate::clock::unix_now;
use crate::config::{self, Config};
use crate::service::reload::Trigger;
use crate::service::{systemd, telemetry};
use crate::state::AppState;

/// What a reload did.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// A new configuration is in force; the listed keys changed but need a
    /// restart to take effect.
    Applied {
        /// Keys whose new value waits for a restart.
        restart_needed: Vec<&'static str>,
    },
    /// The files give the configuration already in force, apart from keys
    /// that wait for a restart.
    Unchanged,
    /// The files are invalid; the previous configuration stays.
    Invalid(String),
}

/// Reloads the configuration (see the module documentation). The caller
/// serialises reloads (the reload loop runs one at a time).
pub async fn reload(state: &AppState, trigger: Trigger) -> Outcome {
    if trigger == Trigger::Signal {
        systemd::reloading();
    }
    // A few small files: reading them inline is cheaper than a thread hop.
    let loaded = config::load(state.config_path.as_deref());
    let current = state.config();
    let outcome = match loaded {
        Err(errors) => {
            let text = errors.one_line();
            let repeated = state.last_reload_error().as_deref() == Some(text.as_str());
            // The watcher sees every save of a file being edited: report a
            // given problem once, not at each event.
            if trigger == Trigger::Signal || !repeated {
                tracing::error!(
                    problems = errors.0.len(),
                    "Configuration reload failed; still running on the previous configuration: {text}"
                );
                state.metrics.reload(false, unix_now());
                state.set_last_reload_error(Some(text.clone()));
            }
            Outcome::Invalid(text)
        }
        Ok(mut new) => {
            let restart_needed = keep_start_up_settings(&mut new, &current);
            report_restart_needed(state, &restart_needed, trigger);
            if same_settings(&new, &current) {
                unchanged(state, trigger);
                Outcome::Unchanged
            } else {
                applied(state, new, &current, trigger).await;
                Outcome::Applied { restart_needed }
            }
        }
    };
    if trigger == Trigger::Signal {
        let settings = AnomalyLogSettings::from_config(&state.config().log);
        if let Rotation::Failed(e) = state.log.reconfigure(settings, true).await {
            tracing::error!(error = %e, "SIGHUP: the anomaly log was not rotated.");
        }
        systemd::ready(&state.status_line());
    }
    outcome
}

/// Says which keys wait for a restart: on SIGHUP (the operator asked),
/// and otherwise only when the set changed, so that writes in the
/// configuration directory (a log file kept there) cannot make a reload
/// log and so trigger the next one.
fn report_restart_needed(state: &AppState, keys: &[&'static str], trigger: Trigger) {
    let keys = keys.join(", ");
    let previous = state.swap_pending_restart(keys.clone());
    if !keys.is_empty() && (trigger == Trigger::Signal || previous != keys) {
        tracing::warn!(
            keys = %keys,
            "Configuration changed where only a restart applies it; these keys keep their running values until then."
        );
    }
}

/// A reload that found nothing to apply: said only on SIGHUP or when it
/// fixes a failed one.
fn unchanged(state: &AppState, trigger: Trigger) {
    let recovered = state.last_reload_error().is_some();
    if recovered || trigger == Trigger::Signal {
        state.metrics.reload(true, unix_now());
        state.set_last_reload_error(None);
        tracing::info!(
            "Configuration re-read; nothing to apply{}.",
            if recovered {
                " (the invalid version was fixed)"
            } else {
                ""
            }
        );
    }
}

/// Applies `new`, which differs from `current` in keys that apply now.
async fn applied(state: &AppState, new: Config, current: &Config, trigger: Trigger) {
    if trigger == Trigger::Watch {
        systemd::reloading();
    }
    let changes = changed_keys(current, &new);
    for warning in &new.notes.0 {
        tracing::warn!("Configuration: {warning}");
    }
    apply(state, Arc::new(new)).await;
    state.metrics.reload(true, unix_now());
    state.set_last_reload_error(None);
    tracing::info!(
        files = %state.config().sources(),
        changed = %changes.join(", "),
        "Configuration reloaded."
    );
    if trigger == Trigger::Watch {
        systemd::ready(&state.status_line());
    }
}

/// Puts `config` in force.
async fn apply(state: &AppState, config: Arc<Config>) {
    let switched = state.table.set_config(config.clone());
    if switched > 0 {
        tracing::info!(
            series = switched,
            "The detector of {switched} series changed; their state was reset (they warm up again)."
        );
    }
    state.recent.set_capacity(config.log.recent_anomalies);
    state.journal.set_rate(config.log.journal_anomaly_rate);
    state.alerts.apply(&config.alert);
    telemetry::set_level(config.log.level);
    let settings = AnomalyLogSettings::from_config(&config.log);
    state.set_config(config);
    // Lines appended before this point go to the old file, later ones to
    // the new: the writer handles both in order.
    state.log.reconfigure(settings, false).await;
}

/// Whether two configurations have the same settings (the files they were
/// read from may differ, for example an empty file added to `conf.d/`).
pub fn same_settings(a: &Config, b: &Config) -> bool {
    // Every section by name: a new one fails to compile here until it is
    // compared.
    let Config {
        server,
        detector,
        rules,
        log,
        state,
        alert,
        cluster,
        files: _,
        notes: _,
    } = a;
    *server == b.server
        && *detector == b.detector
        && *log == b.log
        && *state == b.state
        && *alert == b.alert
        && *cluster == b.cluster
        && rules.len() == b.rules.len()
        && rules
            .iter()
            .zip(&b.rules)
            .all(|(x, y)| x.matcher == y.matcher && x.overrides == y.overrides)
}

/// Resets the settings that cannot change while running to their values in
/// `current`, and returns the names of those that differed.
fn keep_start_up_settings(new: &mut Config, current: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if new.server.listen != current.server.listen {
        new.server.listen = current.server.listen.clone();
        changed.push("server.listen");
    }
    if new.server.socket_mode != current.server.socket_mode {
        new.server.socket_mode = current.server.socket_mode;
        changed.push("server.socket_mode");
    }
    if new.server.admin_listen != current.server.admin_listen {
        new.server.admin_listen = current.server.admin_listen;
        changed.push("server.admin_listen");
    }
    if new.server.max_connections != current.server.max_connections {
        new.server.max_connections = current.server.max_connections;
        changed.push("server.max_connections");
    }
    // The member joins, with its partition count and leases, at start.
    if new.cluster != current.cluster {
        new.cluster.clone_from(&current.cluster);
        changed.push("cluster");
    }
    // The journald layer is chosen when telemetry starts.
    if new.log.journal != current.log.journal {
        new.log.journal = current.log.journal;
        changed.push("log.journal");
    }
    changed
}

/// The keys whose effective value differs, as `key: old -> new` (rules as
/// `rule[N].key`, in precedence order).
pub fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let tokens_rotated = old.server.auth_token_file == new.server.auth_token_file
        && old.server.auth_tokens != new.server.auth_tokens;
    let rotated = new
        .server
        .auth_tokens
        .as_ref()
        .filter(|_| tokens_rotated)
        .map(|tokens| format!("server.auth_token_file: re-read, {} token(s)", tokens.len()));
    let certificate_renewed = (old.server.tls_cert_file == new.server.tls_cert_file
        && old.server.tls.is_some()
        && new.server.tls.is_some()
        && old.server.tls != new.server.tls)
        .then(|| "server.tls_cert_file: re-read, the certificate or key changed".to_owned());
    let (old, new) = (flatten(&old.to_toml()), flatten(&new.to_toml()));
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|key| match (old.get(key), new.get(key)) {
            (a, b) if a == b => None,
            (a, b) => Some(format!(
                "{key}: {} -> {}",
                a.map_or("(unset)", String::as_str),
                b.map_or("(unset)", String::as_str)
            )),
        })
        .chain(rotated)
        .chain(certificate_renewed)
        .collect()
}

/// `section.key` → value of every key line of [`Config::to_toml`] output.
fn flatten(toml: &str) -> std::collections::BTreeMap<String, String> {
    let mut keys = std::collections::BTreeMap::new();
    let mut section = String::new();
    let mut rules = 0;
    for line in toml.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == "[[rule]]" {
            rules += 1;
            section = format!("rule[{rules}]");
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else if let Some((key, value)) = line.split_once(" = ") {
            keys.insert(format!("{section}.{key}"), value.to_owned());
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(text: &str, file: &str) -> Config {
        Config::from_toml_str(text, Path::new(file)).unwrap()
    }

    #[test]
    fn settings_compare_without_file_names() {
        let a = config("[[rule]]\nseries = \"a*\"\nwindow_size = 5\n", "x.toml");
        let b = config("[[rule]]\nseries = \"a*\"\nwindow_size = 5\n", "y.toml");
        assert!(same_settings(&a, &b));
        let c = config("[[rule]]\nseries = \"a*\"\nwindow_size = 6\n", "x.toml");
        assert!(!same_settings(&a, &c));
        let d = config("[log]\nkeep = 2\n", "x.toml");
        assert!(!same_settings(&Config::default(), &d));
    }

    #[test]
    fn changed_keys_name_old_and_new_values() {
        let old = config("[detector]\nwindow_size = 5\n", "x.toml");
        let new = config(
            "[detector]\nwindow_size = 6\n[[rule]]\nseries = \"a\"\ndirection = \"both\"\n",
            "x.toml",
        );
        assert_eq!(
            changed_keys(&old, &new),
            [
                "detector.window_size: 5 -> 6",
                "rule[1].direction: (unset) -> \"both\"",
                "rule[1].series: (unset) -> \"a\"",
            ]
        );
        assert!(changed_keys(&old, &old).is_empty());
    }

    #[test]
    fn every_section_counts_as_a_change() {
        let base = config("", "x.toml");
        for text in [
            "[server]\nmax_body_bytes = 10\n",
            "[detector]\nwindow_size = 6\n",
            "[[rule]]\nseries = \"a\"\n",
            "[log]\nkeep = 2\n",
            "[state]\nsnapshot_interval = \"1s\"\n",
            "[state]\ndirectory = \"/tmp/x\"\n",
            "[[alert.webhook]]\nurl = \"http://127.0.0.1:9/\"\n",
        ] {
            let new = config(text, "x.toml");
            assert!(!same_settings(&base, &new), "{text}");
            assert!(!changed_keys(&base, &new).is_empty(), "{text}");
        }
        assert!(
            same_settings(&base, &config("", "y.toml")),
            "files differ only"
        );
    }

    #[test]
    fn start_up_settings_keep_their_values() {
        let current = Config::default();
        let mut new = config(
            "[server]\nlisten = \"127.0.0.1:9\"\nmax_connections = 5\nmax_body_bytes = 10\n\
             [log]\njournal = true\n",
            "x.toml",
        );
        let changed = keep_start_up_settings(&mut new, &current);
        assert_eq!(
            changed,
            ["server.listen", "server.max_connections", "log.journal"]
        );
        assert!(!new.log.journal);
        assert_eq!(new.server.listen, current.server.listen);
        assert_eq!(new.server.max_connections, current.server.max_connections);
        assert_eq!(new.server.max_body_bytes, 10, "the rest is applied");
    }
}
