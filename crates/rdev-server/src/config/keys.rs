//! Which keys rdev's configuration has, and what happens to the ones it does not: an
//! unknown key in the file stops rdev with one line naming it; an `RDEV_*` environment
//! variable is configuration only when its first part names a top-level key, because the
//! prefix is shared with the short aliases (`RDEV_CLAUDE_BIN`, see `aliases`), the CLI's
//! `RDEV_SERVER`, and test harness settings. Others are skipped and named in a
//! start-up warning. Key names come from the field lists serde derives, never from a second
//! hand-written list, so every key someone adds is covered.

use serde::{
    de::{self, Visitor},
    Deserialize, Deserializer,
};

use super::Config;

/// `RDEV_*` variables rdev or its CLI reads outside the configuration; never warned about.
/// (The short aliases of `aliases` are configuration and never warned about either.)
const NOT_CONFIG_ENV: &[&str] = &["RDEV_CONFIG", "RDEV_SERVER"];

/// Whether the variable `RDEV_<rest>` is configuration: its first `__`-separated part is a
/// top-level key (`WORKER_CONCURRENCY`, `AGENTS__SANDBOX`). A nested part that is unknown
/// (`RDEV_AGENTS__SANDBOKS`) then fails like an unknown key in the file.
pub(super) fn is_config_env(rest: &str) -> bool {
    let top = rest.split("__").next().unwrap_or_default();
    struct_fields::<Config>()
        .iter()
        .any(|k| k.eq_ignore_ascii_case(top))
}

/// The configuration path of an `RDEV_*` variable (prefix gone, `__` already `.`): every
/// part lower-cased, so `WORKER_CONCURRENCY` finds `worker_concurrency`, except the part
/// right after an `env` table, which names an environment variable and keeps its case:
/// `AGENTS.CLAUDE_CODE.ENV.ANTHROPIC_API_KEY` is `agents.claude_code.env.ANTHROPIC_API_KEY`.
pub(super) fn env_key_path(key: &str) -> String {
    let mut after_env = false;
    let parts: Vec<String> = key
        .split('.')
        .map(|part| {
            let keep = std::mem::replace(&mut after_env, part.eq_ignore_ascii_case("env"));
            if keep {
                after_env = false;
                part.to_owned()
            } else {
                part.to_ascii_lowercase()
            }
        })
        .collect();
    parts.join(".")
}

/// `RDEV_*` variables in this process's environment that are neither configuration nor read
/// elsewhere by rdev, each with the key it probably meant.
pub fn ignored_env_vars() -> Vec<(String, Option<String>)> {
    let keys: Vec<String> = struct_fields::<Config>()
        .iter()
        .map(|k| format!("RDEV_{}", k.to_ascii_uppercase()))
        .collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let mut ignored: Vec<_> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| {
            k.strip_prefix("RDEV_")
                .is_some_and(|rest| !is_config_env(rest))
                && !NOT_CONFIG_ENV.contains(&k.as_str())
                && !super::aliases::is_alias(k)
        })
        .map(|k| {
            let hint = suggest(&k, &keys).map(str::to_owned);
            (k, hint)
        })
        .collect();
    ignored.sort();
    ignored
}

/// Warns once about [`ignored_env_vars`], so a misspelt variable is not silently lost.
pub(super) fn warn_ignored_env() {
    for (name, hint) in ignored_env_vars() {
        let hint = hint
            .map(|k| format!("; did you mean {k}?"))
            .unwrap_or_default();
        tracing::warn!("{name} is not a configuration key and is ignored{hint}");
    }
}

/// One line for a configuration error: an unknown key is named with its full path, where
/// it came from, and the key it was probably meant to be.
pub(super) fn describe(e: &figment::Error) -> String {
    if let figment::error::Kind::UnknownField(field, expected) = &e.kind {
        // figment's path usually ends with the unknown key already.
        let mut key: Vec<&str> = e.path.iter().map(String::as_str).collect();
        if key.last() != Some(&field.as_str()) {
            key.push(field);
        }
        let source = match &e.metadata {
            Some(md) => match &md.source {
                Some(src) => format!(" in {} {src}", md.name),
                None => format!(" in {}", md.name),
            },
            None => String::new(),
        };
        let hint = match suggest(field, expected) {
            Some(s) => format!("; did you mean `{s}`?"),
            None => String::new(),
        };
        return format!("unknown key `{}`{source}{hint}", key.join("."));
    }
    e.to_string().replace('\n', "; ")
}

/// The field names `T`'s derived `Deserialize` accepts (empty when `T` is not a struct).
/// `Option<S>` gives the fields of `S`.
pub fn struct_fields<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    // The grabber always fails once it has seen the fields; the error is the expected end.
    let _ = T::deserialize(FieldGrabber(&mut fields));
    fields
}

/// A deserializer that records the field list of the first struct asked of it.
struct FieldGrabber<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for FieldGrabber<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("fields recorded"))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_some(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// The candidate closest to `key` when it is close enough to be a likely typo
/// (`worker_concurency` -> `worker_concurrency`).
pub fn suggest<'a>(key: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (key.chars().count() / 3).max(2);
    candidates
        .iter()
        .map(|c| (edit_distance(key, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb))
                .min(above + 1)
                .min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
// figment's `Jail` closures return its large error type; that is its API, not ours.
#[allow(clippy::result_large_err)]
mod tests {
    use super::{super::AgentsConfig, *};
    use crate::config::WoodpeckerConfig;

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Section {
        alpha: u32,
        #[serde(rename = "beta_key")]
        beta: Option<String>,
        #[serde(skip)]
        hidden: bool,
    }

    #[test]
    fn config_fields_come_from_the_derived_impl() {
        assert_eq!(struct_fields::<Section>(), ["alpha", "beta_key"]);
        assert_eq!(struct_fields::<Option<Section>>(), ["alpha", "beta_key"]);
        assert!(struct_fields::<u64>().is_empty());
        assert!(struct_fields::<Config>().contains(&"worker_concurrency"));
    }

    #[test]
    fn config_typos_get_the_nearest_key() {
        let keys = ["worker_concurrency", "worker_lease_secs", "listen"];
        assert_eq!(
            suggest("worker_concurency", &keys),
            Some("worker_concurrency")
        );
        assert_eq!(suggest("lisen", &keys), Some("listen"));
        assert_eq!(suggest("something_else", &keys), None);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    /// The one-line error of [`Config::load`] in a jail holding `toml` as `rdev.toml`.
    fn load_error(jail: &mut figment::Jail, toml: &str) -> String {
        jail.create_file("rdev.toml", toml).unwrap();
        let err = Config::load(None)
            .expect_err("the file is refused")
            .to_string();
        assert_eq!(err.lines().count(), 1, "{err}");
        err
    }

    #[test]
    fn config_unknown_key_in_the_file_stops_with_its_name() {
        figment::Jail::expect_with(|jail| {
            let err = load_error(jail, "worker_concurency = 4\n");
            assert!(
                err.contains("unknown key `worker_concurency`")
                    && err.contains("rdev.toml")
                    && err.contains("did you mean `worker_concurrency`?"),
                "{err}"
            );
            let err = load_error(jail, "[agents]\nsandboks = \"none\"\n");
            assert!(err.contains("unknown key `agents.sandboks`"), "{err}");
            assert!(err.contains("did you mean `sandbox`?"), "{err}");
            let err = load_error(jail, "[agents.claude_code]\npermision_mode = \"plan\"\n");
            assert!(
                err.contains("unknown key `agents.claude_code.permision_mode`"),
                "{err}"
            );
            let err = load_error(
                jail,
                "[woodpecker]\nurl = \"http://ci\"\ntoken = \"t\"\npoll = 5\n",
            );
            assert!(err.contains("unknown key `woodpecker.poll`"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn config_env_reads_only_variables_named_after_a_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("RDEV_MASTER_KEY", "not-configuration");
            jail.set_env("RDEV_CLAUDE_BIN", "/opt/claude");
            jail.set_env("RDEV_SERVER", "http://127.0.0.1:1");
            jail.set_env("RDEV_WORKER_CONCURENCY", "9");
            jail.set_env("RDEV_WORKER_CONCURRENCY", "3");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.worker_concurrency, 3);
            let ignored = ignored_env_vars();
            assert!(
                ignored.contains(&(
                    "RDEV_WORKER_CONCURENCY".to_owned(),
                    Some("RDEV_WORKER_CONCURRENCY".to_owned())
                )),
                "{ignored:?}"
            );
            assert!(
                !ignored.iter().any(|(k, _)| k == "RDEV_MASTER_KEY"
                    || k == "RDEV_CLAUDE_BIN"
                    || k == "RDEV_SERVER"
                    || k == "RDEV_WORKER_CONCURRENCY"),
                "{ignored:?}"
            );

            // Below a known key the tables are strict, as in the file.
            jail.set_env("RDEV_AGENTS__SANDBOKS", "none");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("unknown key `agents.sandboks`"), "{err}");
            assert!(err.contains("RDEV_"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn config_env_keeps_the_case_of_variable_names_below_env_tables() {
        assert_eq!(
            env_key_path("AGENTS.CLAUDE_CODE.ENV.ANTHROPIC_API_KEY"),
            "agents.claude_code.env.ANTHROPIC_API_KEY"
        );
        assert_eq!(env_key_path("WORKER_CONCURRENCY"), "worker_concurrency");
        assert_eq!(env_key_path("AGENTS.SANDBOX"), "agents.sandbox");
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "RDEV_AGENTS__CLAUDE_CODE__ENV__ANTHROPIC_API_KEY",
                "sk-test-1",
            );
            jail.set_env(
                "RDEV_AGENTS__CLAUDE_CODE__ENV__ANTHROPIC_BASE_URL",
                "http://x",
            );
            jail.set_env(
                "RDEV_AGENTS__OPENCODE__SERVER__ENV__OPENAI_API_KEY",
                "sk-test-2",
            );
            jail.set_env("RDEV_AGENTS__SANDBOX", "none");
            jail.create_file(
                "rdev.toml",
                "[agents.claude_code.env]\nCLAUDE_CODE_MAX_RETRIES = \"0\"\n",
            )?;
            let c = Config::load(None).map_err(|e| e.to_string())?;
            let env = &c.agents.claude_code.env;
            let names: Vec<&str> = env.keys().map(String::as_str).collect();
            assert_eq!(
                names,
                [
                    "ANTHROPIC_API_KEY",
                    "ANTHROPIC_BASE_URL",
                    "CLAUDE_CODE_MAX_RETRIES"
                ]
            );
            assert_eq!(env["ANTHROPIC_API_KEY"].expose(), "sk-test-1");
            let server_env = &c.agents.opencode.server.env;
            assert_eq!(server_env["OPENAI_API_KEY"].expose(), "sk-test-2");
            assert_eq!(c.agents.sandbox, rdev_agents::sandbox::SandboxMode::None);
            Ok(())
        });
    }

    #[test]
    fn config_load_makes_the_default_paths_absolute() {
        figment::Jail::expect_with(|jail| {
            let c = Config::load(None).map_err(|e| e.to_string())?;
            let cwd = std::env::current_dir().unwrap();
            assert_eq!(cwd, jail.directory());
            assert_eq!(c.data_dir, cwd.join("data"));
            assert_eq!(c.git_root(), cwd.join("data/repos"));
            assert_eq!(
                c.database_url,
                format!("sqlite:{}", cwd.join("rdev.db").display())
            );
            Ok(())
        });
    }

    /// The rows of the one Markdown table in `doc`, header first, cells trimmed; an error
    /// when the table is split, has no separator row, or rows differ in width.
    fn markdown_table(doc: &str) -> Result<Vec<Vec<String>>, String> {
        let lines: Vec<(usize, &str)> = doc
            .lines()
            .enumerate()
            .filter(|(_, l)| l.trim_start().starts_with('|'))
            .collect();
        let Some(&(first, _)) = lines.first() else {
            return Err("no table".into());
        };
        if let Some((i, (n, _))) = lines.iter().enumerate().find(|(i, (n, _))| *n != first + i) {
            return Err(format!(
                "the table is split: line {} is not a row (the next row is line {})",
                first + i + 1,
                n + 1
            ));
        }
        let rows: Vec<Vec<String>> = lines
            .iter()
            .map(|(_, l)| {
                let inner = l.trim().trim_start_matches('|');
                let inner = inner.strip_suffix('|').unwrap_or(inner);
                inner
                    .replace("\\|", "\u{1}")
                    .split('|')
                    .map(|c| c.trim().replace('\u{1}', "|"))
                    .collect()
            })
            .collect();
        let width = rows[0].len();
        if rows.len() < 2
            || rows[1].len() != width
            || !rows[1]
                .iter()
                .all(|c| !c.is_empty() && c.chars().all(|ch| matches!(ch, '-' | ':')))
        {
            return Err("the second row is not a separator row".into());
        }
        if let Some((i, row)) = rows.iter().enumerate().find(|(_, r)| r.len() != width) {
            return Err(format!(
                "line {} has {} cells, the header {width}",
                first + i + 1,
                row.len()
            ));
        }
        Ok(rows)
    }

    /// The backticked names in the table's first column (`agents.claude_code.*`, ...).
    fn documented_keys(rows: &[Vec<String>]) -> Vec<String> {
        rows.iter()
            .skip(2)
            .flat_map(|r| {
                r[0].split('`')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn config_doc_table_checker_finds_splits_and_ragged_rows() {
        let ok = "| k | v |\n| --- | --- |\n| `a` | 1 |\n";
        assert_eq!(documented_keys(&markdown_table(ok).unwrap()), ["a"]);
        let split = "| k | v |\n| --- | --- |\n| `a` | 1 |\n\n| `b` | 2 |\n";
        assert!(markdown_table(split).unwrap_err().contains("split"));
        let ragged = "| k | v |\n| --- | --- |\n| `a` | 1 | 3 |\n";
        assert!(markdown_table(ragged).unwrap_err().contains("cells"));
    }

    /// Every key of `Config`, and every key of its `[agents]` and `[woodpecker]` tables,
    /// has a row in docs/configuration.md, which is one valid table. The key lists come
    /// from the types, so a key added later fails here until it is documented.
    #[test]
    fn config_every_key_is_documented_in_one_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
        let doc = std::fs::read_to_string(path).expect("docs/configuration.md is readable");
        let rows = markdown_table(&doc).unwrap_or_else(|e| panic!("docs/configuration.md: {e}"));
        let documented = documented_keys(&rows);
        let tables = [
            ("agents", struct_fields::<AgentsConfig>()),
            ("woodpecker", struct_fields::<Option<WoodpeckerConfig>>()),
            ("gateway", struct_fields::<super::super::GatewayConfig>()),
        ];
        let mut wanted: Vec<String> = struct_fields::<Config>()
            .iter()
            .filter(|k| !tables.iter().any(|(t, _)| t == *k))
            .map(|k| (*k).to_owned())
            .collect();
        for (table, fields) in tables {
            assert!(!fields.is_empty(), "[{table}] has keys");
            wanted.extend(fields.iter().map(|f| format!("{table}.{f}")));
        }
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|k| {
                !documented
                    .iter()
                    .any(|d| d == *k || d.starts_with(&format!("{k}.")))
            })
            .collect();
        assert!(
            missing.is_empty(),
            "keys missing from docs/configuration.md: {missing:?}"
        );
    }
}
