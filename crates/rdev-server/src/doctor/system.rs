//! rdev's own state: the database (reachable, schema current), the data directory
//! (writable, free space), the master key file (mode 0600), the gateway's upstream keys in
//! the credential store (present; never read) and who may call the API. Nothing is created
//! or changed: a missing SQLite file, data directory or key file is reported as
//! what `rdev serve` will create.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rdev_core::{SecretRepository, SecretScope, SecretString};
use rdev_store::{db::redact_url, Db, SqlSecretRepository, SqlTokenStore};

use super::Check;
use crate::{
    config::Config,
    secrets::{key, SecretError},
    tokens::{check_exposure, is_loopback, TokenService},
};

/// How long opening the database may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Below this much free space in the data directory, a warning.
const LOW_SPACE: u64 = 1 << 30;
/// Below this much, an error: a checkout and its `node_modules` will not fit.
const TOO_LITTLE_SPACE: u64 = 100 << 20;

/// The SQLite file of a `sqlite:` URL (query removed), if it is one.
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

/// The database answers and has every migration of this build; the open pool is returned
/// for the checks that read from it.
pub(super) async fn database(config: &Config) -> (Check, Option<Db>) {
    const NAME: &str = "database";
    let url = &config.database_url;
    let shown = redact_url(url);
    let fix = "start the database, or fix database_url (RDEV_DATABASE_URL, --database-url)";
    if let Some(path) = sqlite_path(url) {
        if !path.exists() {
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
            return match parent {
                Some(dir) if !dir.is_dir() => (
                    Check::error(
                        NAME,
                        format!("{shown}: the directory {} does not exist", dir.display()),
                        fix,
                    ),
                    None,
                ),
                _ => (
                    Check::ok(
                        NAME,
                        format!("{shown} does not exist yet; rdev serve creates it"),
                    ),
                    None,
                ),
            };
        }
    }
    let db = match tokio::time::timeout(CONNECT_TIMEOUT, Db::connect(url)).await {
        Ok(Ok(db)) => db,
        Ok(Err(e)) => {
            return (
                Check::error(NAME, format!("cannot open {shown}: {e}"), fix),
                None,
            )
        }
        Err(_) => {
            return (
                Check::error(
                    NAME,
                    format!("{shown} did not answer within {CONNECT_TIMEOUT:?}"),
                    fix,
                ),
                None,
            )
        }
    };
    let check = match db.migration_status().await {
        Ok(s) if !s.unknown.is_empty() => Check::error(
            NAME,
            format!(
                "{shown} has migrations this rdev does not know ({:?}): a newer rdev migrated it",
                s.unknown
            ),
            "run the rdev version that migrated it (or newer)",
        ),
        Ok(s) if !s.pending.is_empty() => Check::warning(
            NAME,
            format!(
                "{shown} answers; {} of {} migrations are not applied yet",
                s.pending.len(),
                s.known
            ),
            "none needed: rdev serve applies them at start (or run `rdev migrate`)",
        ),
        Ok(s) => Check::ok(
            NAME,
            format!("{shown} answers; schema current ({} migrations)", s.known),
        ),
        Err(e) => Check::error(NAME, format!("{shown}: {e}"), fix),
    };
    (check, Some(db))
}

/// Free bytes for unprivileged users on the file system holding `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    Some((stat.blocks_available() as u64).saturating_mul(stat.fragment_size() as u64))
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// `dir` takes a new file.
fn writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".rdev-doctor-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

/// The data directory is a writable directory (or can be created) with room to work.
pub(super) fn data_dir(config: &Config) -> Check {
    const NAME: &str = "data directory";
    let dir = &config.data_dir;
    let fix = "make it a directory the user rdev runs as can write (chown/chmod), or set \
               data_dir (RDEV_DATA_DIR)";
    let (existing, note) = if dir.is_dir() {
        (dir.as_path(), "")
    } else if dir.exists() {
        return Check::error(NAME, format!("{} is not a directory", dir.display()), fix);
    } else {
        match dir.ancestors().skip(1).find(|a| a.is_dir()) {
            Some(a) => (a, " (does not exist yet; rdev serve creates it)"),
            None => {
                return Check::error(NAME, format!("no parent of {} exists", dir.display()), fix)
            }
        }
    };
    if let Err(e) = writable(existing) {
        return Check::error(
            NAME,
            format!("cannot write to {}: {e}", existing.display()),
            fix,
        );
    }
    let place = format!("{}{note}", dir.display());
    match free_bytes(existing) {
        Some(free) if free < TOO_LITTLE_SPACE => Check::error(
            NAME,
            format!("{place}: only {} free", gib(free)),
            "free disk space (checkouts with node_modules take hundreds of MiB), or move data_dir",
        ),
        Some(free) if free < LOW_SPACE => Check::warning(
            NAME,
            format!("{place}: only {} free", gib(free)),
            "free disk space, or move data_dir to a larger file system",
        ),
        Some(free) => Check::ok(NAME, format!("{place} is writable, {} free", gib(free))),
        None => Check::ok(NAME, format!("{place} is writable")),
    }
}

/// The master key is valid and its file (when it comes from one) is mode 0600.
pub(super) fn master_key(config: &Config) -> Check {
    const NAME: &str = "master key";
    if let Some(text) = config
        .master_key
        .as_ref()
        .map(SecretString::expose)
        .filter(|t| !t.trim().is_empty())
    {
        return match key::MasterKey::from_base64(text, key::MASTER_KEY_ENV) {
            Ok(_) => Check::ok(NAME, format!("from {}", key::MASTER_KEY_ENV)),
            Err(e) => Check::error(
                NAME,
                e.to_string(),
                format!(
                    "set {} to the base64 of 32 bytes (`openssl rand -base64 32`)",
                    key::MASTER_KEY_ENV
                ),
            ),
        };
    }
    let path = config
        .master_key_file
        .clone()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| config.data_dir.join(key::DEFAULT_KEY_FILE));
    if !path.exists() {
        return Check::ok(
            NAME,
            format!(
                "{} does not exist yet; rdev serve creates it (mode 0600)",
                path.display()
            ),
        );
    }
    match key::MasterKey::read_file(&path) {
        Ok(_) => Check::ok(NAME, format!("{} (mode 0600)", path.display())),
        Err(SecretError::MasterKeyFileInsecure { mode, .. }) => Check::error(
            NAME,
            format!(
                "{} has mode {mode:04o}: others may read it, so rdev refuses to start",
                path.display()
            ),
            format!("chmod 600 {}", path.display()),
        ),
        Err(e) => Check::error(
            NAME,
            e.to_string(),
            "restore the key file from a backup; a new key cannot open the stored secrets",
        ),
    }
}

/// Who may call the API: a configured admin token, named tokens, or nobody needed.
pub(super) async fn api_tokens(config: &Config, db: Option<&Db>) -> Check {
    const NAME: &str = "api tokens";
    let stored = match db {
        Some(db) => TokenService::new(Arc::new(SqlTokenStore::new(db.clone())))
            .list()
            .await
            .ok()
            .map(|t| t.len()),
        // A database rdev serve has yet to create holds no token.
        None => sqlite_path(&config.database_url)
            .filter(|p| !p.exists())
            .map(|_| 0),
    };
    let named = match stored {
        Some(n) => format!("{n} named token{}", if n == 1 { "" } else { "s" }),
        None => "named tokens not checked (the database did not open)".to_owned(),
    };
    if config.api_token.is_some() {
        return Check::ok(NAME, format!("RDEV_API_TOKEN is set (admin); {named}"));
    }
    if stored.is_some_and(|n| n > 0) {
        return Check::ok(NAME, format!("{named}: every request needs a token"));
    }
    let none = match stored {
        Some(_) => "no RDEV_API_TOKEN and no named token".to_owned(),
        None => format!("no RDEV_API_TOKEN, {named}"),
    };
    let listen = config.listen;
    let create = "create a token (`rdev token create NAME --scope admin`) or set RDEV_API_TOKEN";
    if let Err(e) = check_exposure(config, false) {
        return Check::error(
            NAME,
            format!("{none}: rdev serve will not start: {e}"),
            create,
        );
    }
    if is_loopback(&listen) {
        Check::warning(
            NAME,
            format!("{none}: the API on {listen} is open to anyone on this machine"),
            format!("fine for local development; otherwise {create}"),
        )
    } else {
        Check::warning(
            NAME,
            format!(
                "{none}: the API on {listen} is open to the network (allow_unauthenticated = true)"
            ),
            create,
        )
    }
}

/// The credential-store secrets `[[gateway.upstreams]]` take their keys from
/// (`api_key_secret`) exist: looked up by name in the `gateway` scope, never read. `None`
/// when no upstream keeps its key there.
pub(super) async fn gateway_keys(config: &Config, db: Option<&Db>) -> Option<Check> {
    const NAME: &str = "gateway keys";
    let wanted: Vec<(&str, &str)> = config
        .gateway
        .upstreams
        .iter()
        .filter_map(|u| Some((u.name.as_str(), u.api_key_secret.as_deref()?)))
        .collect();
    if wanted.is_empty() {
        return None;
    }
    let Some(db) = db else {
        return Some(Check::warning(
            NAME,
            "not checked: the database did not open",
            "fix the database first, then run `rdev doctor` again",
        ));
    };
    let stored = match SqlSecretRepository::new(db.clone())
        .list(Some(&SecretScope::Gateway))
        .await
    {
        Ok(s) => s,
        Err(e) => {
            return Some(Check::warning(
                NAME,
                format!("not checked: the credential store could not be listed: {e}"),
                "run `rdev migrate`, then `rdev doctor` again",
            ))
        }
    };
    let version = |secret: &str| {
        stored
            .iter()
            .find(|m| m.name.as_str() == secret)
            .map(|m| m.version)
    };
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(_, secret)| version(secret).is_none())
        .map(|(_, secret)| *secret)
        .collect();
    let listed = |f: &dyn Fn(&str, &str) -> String| -> String {
        wanted
            .iter()
            .map(|(upstream, secret)| f(upstream, secret))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Some(match missing.first() {
        None => Check::ok(
            NAME,
            listed(&|u, s| format!("{u}: gateway/{s} v{}", version(s).unwrap_or_default())),
        ),
        Some(first) => Check::error(
            NAME,
            format!(
                "not in the credential store: {}; calls skip those upstreams",
                missing
                    .iter()
                    .map(|s| format!("gateway/{s}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            format!("store each key: `rdev secret set gateway {first} < key-file`"),
        ),
    })
}
