//! [`Loader`]: defaults, then a TOML file, then the environment, through figment.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};

use crate::error::Problem;
use crate::{Settings, SettingsError, redact};

/// The default prefix of environment variables (`OMNIBOX_RELAY__BATCH_SIZE`).
pub const ENV_PREFIX: &str = "OMNIBOX_";

/// Loads [`Settings`]: built-in defaults, overridden by a TOML file, overridden by
/// `DATABASE_URL` (for `database.url`), overridden by `OMNIBOX_*` variables, where `__`
/// separates nesting levels: `OMNIBOX_RELAY__BATCH_SIZE=500` sets `[relay] batch_size`,
/// `OMNIBOX_RABBITMQ__CONSUMER__PREFETCH=32` sets `[rabbitmq.consumer] prefetch`.
/// `OMNIBOX_CONFIG` is not a setting (binaries use it to name the file) and is skipped.
///
/// Unknown keys, in the file or in the environment, are errors, as are values of the wrong
/// type; each names the key and where it came from.
///
/// ```
/// use omnibox_settings::Settings;
///
/// let settings = Settings::from_toml_str(r#"
///     [relay]
///     batch_size = 500
///     publish_timeout = "5s"
/// "#).unwrap();
/// assert_eq!(settings.relay.batch_size, 500);
/// assert_eq!(settings.relay.publish_timeout, std::time::Duration::from_secs(5));
///
/// let err = Settings::from_toml_str("[relay]\nbatchsize = 5\n").unwrap_err();
/// assert!(err.to_string().contains("`relay.batchsize`: unknown key"), "{err}");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Loader {
    file: Option<PathBuf>,
    text: Option<String>,
    env_prefix: Option<String>,
    database_url_env: Option<String>,
}

impl Default for Loader {
    fn default() -> Self {
        Self {
            file: None,
            text: None,
            env_prefix: Some(ENV_PREFIX.to_owned()),
            database_url_env: Some("DATABASE_URL".to_owned()),
        }
    }
}

impl Loader {
    /// Defaults, `DATABASE_URL` and `OMNIBOX_*` variables; no file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Read this TOML file (it must exist).
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.file = Some(path.into());
        self
    }

    /// Use this TOML text instead of a file.
    pub fn toml(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// Use another prefix for environment variables, or `None` to read none.
    pub fn env_prefix(mut self, prefix: Option<&str>) -> Self {
        self.env_prefix = prefix.map(str::to_owned);
        self
    }

    /// Take `database.url` from this variable when it is set (default `DATABASE_URL`), or
    /// from none.
    pub fn database_url_env(mut self, var: Option<&str>) -> Self {
        self.database_url_env = var.map(str::to_owned);
        self
    }

    /// Load and check the settings.
    pub fn load(&self) -> Result<Settings, SettingsError> {
        let mut text = self.text.clone();
        if let Some(path) = &self.file {
            let t = std::fs::read_to_string(path).map_err(|e| SettingsError::Read {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            text = Some(t);
        }
        let mut figment = Figment::new();
        if let Some(t) = &text {
            figment = figment.merge(Toml::string(t));
        }
        if let Some(var) = &self.database_url_env {
            let var = var.clone();
            figment = figment.merge(
                Env::raw()
                    .filter(move |k| k.as_str().eq_ignore_ascii_case(&var))
                    .map(|_| "database.url".into()),
            );
        }
        if let Some(prefix) = &self.env_prefix {
            figment = figment.merge(
                Env::prefixed(prefix)
                    .filter(|k| !k.as_str().eq_ignore_ascii_case("config"))
                    .split("__"),
            );
        }
        let settings: Settings = figment
            .extract()
            .map_err(|e| self.problems(e, text.as_deref()))?;
        settings.check()?;
        Ok(settings)
    }

    fn problems(&self, error: figment::Error, text: Option<&str>) -> SettingsError {
        let problems = error
            .into_iter()
            .map(|e| {
                let mut key = e.path.join(".");
                let message = match &e.kind {
                    figment::error::Kind::UnknownField(field, expected) => {
                        if e.path.last() != Some(field) {
                            key = if key.is_empty() {
                                field.clone()
                            } else {
                                format!("{key}.{field}")
                            };
                        }
                        if expected.is_empty() {
                            "unknown key".to_owned()
                        } else {
                            format!("unknown key; expected one of {}", expected.join(", "))
                        }
                    }
                    kind => kind.to_string(),
                };
                Problem {
                    origin: self.origin(&key, text),
                    key,
                    message: redact(&message),
                }
            })
            .collect();
        SettingsError::Invalid(problems)
    }

    /// Where the value of `key` came from: the variable that sets it, else the file.
    fn origin(&self, key: &str, text: Option<&str>) -> String {
        if let Some(prefix) = &self.env_prefix {
            let var = format!("{prefix}{}", key.replace('.', "__")).to_ascii_uppercase();
            if !key.is_empty() && std::env::var_os(&var).is_some() {
                return format!("environment variable {var}");
            }
        }
        if key == "database.url"
            && let Some(var) = &self.database_url_env
            && std::env::var_os(var).is_some()
        {
            return format!("environment variable {var}");
        }
        let name = match &self.file {
            Some(p) => display(p),
            None if text.is_some() => "settings text".to_owned(),
            None => return "defaults".to_owned(),
        };
        match text.and_then(|t| line_of(t, key)) {
            Some(line) => format!("{name} line {line}"),
            None => name,
        }
    }
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

/// The 1-based line that sets `key` (`relay.batch_size`) in TOML `text`: a `key = value`
/// line under its table header, a dotted key, or the header of a table named `key`.
/// Inline tables and arrays of tables are not searched (the file name alone is reported).
pub(crate) fn line_of(text: &str, key: &str) -> Option<usize> {
    let unquote = |s: &str| s.trim().trim_matches('"').trim_matches('\'').to_owned();
    let mut table: Vec<String> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            let header = header.trim_start_matches('[');
            let name = header.split(']').next().unwrap_or_default();
            table = name.split('.').map(unquote).collect();
            if table.join(".") == key {
                return Some(i + 1);
            }
            continue;
        }
        if let Some((k, _)) = line.split_once('=') {
            let mut path = table.clone();
            path.extend(k.split('.').map(unquote));
            let full = path.join(".");
            if full == key || key.starts_with(&format!("{full}.")) {
                return Some(i + 1);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::line_of;

    #[test]
    fn finds_keys_under_headers_and_dotted_keys() {
        let t =
            "# c\n[relay]\nbatch_size = 5\n\n[rabbitmq.consumer]\nprefetch = 2\n[store]\nx.y = 1\n";
        assert_eq!(line_of(t, "relay.batch_size"), Some(3));
        assert_eq!(line_of(t, "rabbitmq.consumer.prefetch"), Some(6));
        assert_eq!(line_of(t, "rabbitmq.consumer"), Some(5));
        assert_eq!(line_of(t, "store.x.y"), Some(8));
        assert_eq!(line_of(t, "relay.nope"), None);
    }
}
