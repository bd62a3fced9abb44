//! The master key: 32 random bytes, from `RDEV_MASTER_KEY` (base64) or from a key file
//! (`RDEV_MASTER_KEY_FILE`, default `<data_dir>/master.key`) that is created with mode 0600
//! on first use and refused when group or others have any permission on it. It also stages
//! a rotated key next to the file (`<file>.next`) so a crash during rotation never loses
//! the key the database was re-encrypted with. It must not touch the database or log a key.

use std::{
    fmt,
    fs::{self, OpenOptions},
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use base64::{engine::general_purpose::STANDARD, Engine};
use chacha20poly1305::{aead::Generate, Key};
use rdev_core::SecretString;
use zeroize::{Zeroize, Zeroizing};

use super::SecretError;

/// Environment variable holding the base64 master key.
pub const MASTER_KEY_ENV: &str = "RDEV_MASTER_KEY";
/// Environment variable naming the key file.
pub const MASTER_KEY_FILE_ENV: &str = "RDEV_MASTER_KEY_FILE";
/// The key file's name inside the data directory when no file is configured.
pub const DEFAULT_KEY_FILE: &str = "master.key";
/// Key length in bytes (XChaCha20-Poly1305).
pub const KEY_LEN: usize = 32;

/// The key that seals every secret. Zeroed on drop; `Debug` never shows it.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; KEY_LEN]>);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl PartialEq for MasterKey {
    fn eq(&self, other: &Self) -> bool {
        // No early exit: the comparison takes the same time wherever the keys differ.
        use subtle::ConstantTimeEq;
        self.0[..].ct_eq(&other.0[..]).into()
    }
}

/// Where the master key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `RDEV_MASTER_KEY`.
    Env,
    /// A key file at this path.
    File(PathBuf),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env => f.write_str(MASTER_KEY_ENV),
            Self::File(p) => write!(f, "key file {}", p.display()),
        }
    }
}

impl MasterKey {
    /// A fresh random key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let key = Key::generate();
        let mut bytes = [0u8; KEY_LEN];
        bytes.copy_from_slice(&key);
        Self(Zeroizing::new(bytes))
    }

    /// Parses base64 (standard alphabet, padding optional) of exactly 32 bytes.
    pub fn from_base64(text: &str, origin: &str) -> Result<Self, SecretError> {
        let invalid = |reason: String| SecretError::MasterKeyInvalid {
            origin: origin.to_owned(),
            reason,
        };
        let trimmed = text.trim();
        let mut raw = Zeroizing::new(
            STANDARD
                .decode(trimmed)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
                .map_err(|_| invalid("it is not valid base64".to_owned()))?,
        );
        if raw.len() != KEY_LEN {
            let n = raw.len();
            raw.zeroize();
            return Err(invalid(format!(
                "it decodes to {n} bytes; a master key is {KEY_LEN} bytes"
            )));
        }
        let mut bytes = [0u8; KEY_LEN];
        bytes.copy_from_slice(&raw);
        Ok(Self(Zeroizing::new(bytes)))
    }

    /// The key as standard base64, for writing to a key file.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(*self.0))
    }

    /// The raw bytes, for the cipher only.
    pub(super) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Loads the key the way `rdev serve` does: `master_key` (`RDEV_MASTER_KEY`), else the
    /// key file `master_key_file` (`RDEV_MASTER_KEY_FILE`), else `<data_dir>/master.key`
    /// (created if missing). The settings come from [`crate::config::Config::load`].
    pub fn load(config: &crate::config::Config) -> Result<(Self, KeySource), SecretError> {
        Self::resolve(
            config.master_key.as_ref().map(SecretString::expose),
            config.master_key_file.clone(),
            &config.data_dir,
        )
    }

    /// [`MasterKey::load`] with the settings passed in (tests, embedding).
    pub fn resolve(
        env_key: Option<&str>,
        key_file: Option<PathBuf>,
        data_dir: &Path,
    ) -> Result<(Self, KeySource), SecretError> {
        if let Some(text) = env_key.filter(|t| !t.trim().is_empty()) {
            return Ok((Self::from_base64(text, MASTER_KEY_ENV)?, KeySource::Env));
        }
        let path = key_file
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| data_dir.join(DEFAULT_KEY_FILE));
        let key = Self::read_or_create_file(&path)?;
        Ok((key, KeySource::File(path)))
    }

    /// Reads the key file, creating it (mode 0600, parent 0700) with a new key if missing.
    pub fn read_or_create_file(path: &Path) -> Result<Self, SecretError> {
        match Self::read_file(path) {
            Err(SecretError::MasterKeyFile { missing: true, .. }) => {
                let key = Self::generate();
                match key.write_new_file(path) {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "created a new master key file");
                        Ok(key)
                    }
                    // Another process created it first: use theirs.
                    Err(SecretError::MasterKeyFile { exists: true, .. }) => Self::read_file(path),
                    Err(e) => Err(e),
                }
            }
            other => other,
        }
    }

    /// Reads an existing key file, refusing it when group or others have any permission.
    pub fn read_file(path: &Path) -> Result<Self, SecretError> {
        let meta = fs::metadata(path).map_err(|e| file_err(path, &e))?;
        if !meta.is_file() {
            return Err(SecretError::MasterKeyFile {
                path: path.to_owned(),
                reason: "it is not a regular file".to_owned(),
                missing: false,
                exists: true,
            });
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretError::MasterKeyFileInsecure {
                path: path.to_owned(),
                mode,
            });
        }
        let text = Zeroizing::new(fs::read_to_string(path).map_err(|e| file_err(path, &e))?);
        Self::from_base64(&text, &format!("key file {}", path.display()))
    }

    /// Writes the key to a new file with mode 0600; fails if the file exists.
    pub fn write_new_file(&self, path: &Path) -> Result<(), SecretError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| file_err(dir, &e))?;
            }
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| file_err(path, &e))?;
        let text = self.to_base64();
        file.write_all(text.as_bytes())
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.sync_all())
            .map_err(|e| file_err(path, &e))
    }

    /// Where a rotation stages the new key before the database switches to it.
    pub fn staged_path(path: &Path) -> PathBuf {
        let mut name = path.file_name().unwrap_or_default().to_owned();
        name.push(".next");
        path.with_file_name(name)
    }

    /// Writes the key to `<path>.next` (mode 0600), replacing a stale staged key.
    pub fn stage_file(&self, path: &Path) -> Result<PathBuf, SecretError> {
        let staged = Self::staged_path(path);
        match fs::remove_file(&staged) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(file_err(&staged, &e)),
        }
        self.write_new_file(&staged)?;
        Ok(staged)
    }

    /// Moves the staged key over the key file (atomic rename).
    pub fn promote_staged(path: &Path) -> Result<(), SecretError> {
        let staged = Self::staged_path(path);
        fs::rename(&staged, path).map_err(|e| file_err(path, &e))
    }
}

fn file_err(path: &Path, e: &std::io::Error) -> SecretError {
    SecretError::MasterKeyFile {
        path: path.to_owned(),
        reason: e.to_string(),
        missing: e.kind() == std::io::ErrorKind::NotFound,
        exists: e.kind() == std::io::ErrorKind::AlreadyExists,
    }
}

#[cfg(test)]
mod tests {
    use rdev_core::ErrorCode;

    use super::*;

    #[test]
    fn first_use_creates_a_0600_file_and_reuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (k1, src) = MasterKey::resolve(None, None, &data).unwrap();
        let path = data.join(DEFAULT_KEY_FILE);
        assert_eq!(src, KeySource::File(path.clone()));
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(&data).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let (k2, _) = MasterKey::resolve(None, None, &data).unwrap();
        assert_eq!(k1, k2);
    }

    #[test]
    fn key_file_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        MasterKey::generate().write_new_file(&path).unwrap();
        for mode in [0o640, 0o604, 0o620, 0o601] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = MasterKey::resolve(None, Some(path.clone()), dir.path()).unwrap_err();
            assert_eq!(err.code(), "master_key_file_insecure", "mode {mode:o}");
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        MasterKey::resolve(None, Some(path), dir.path()).unwrap();
    }

    #[test]
    fn env_key_wins_and_bad_keys_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::generate();
        let (k, src) = MasterKey::resolve(Some(&key.to_base64()), None, dir.path()).unwrap();
        assert_eq!((k, src), (key, KeySource::Env));
        assert!(!dir.path().join(DEFAULT_KEY_FILE).exists());
        let short = STANDARD.encode([1u8; 16]);
        for bad in ["not base64!!", short.as_str()] {
            let err = MasterKey::resolve(Some(bad), None, dir.path()).unwrap_err();
            assert_eq!(err.code(), "master_key_invalid");
            assert!(err.to_string().contains(MASTER_KEY_ENV), "{err}");
            assert!(
                !err.to_string().contains(bad),
                "error echoes the key: {err}"
            );
        }
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = MasterKey::generate();
        let dbg = format!("{key:?}");
        assert!(!dbg.contains(key.to_base64().as_str()));
        assert_eq!(dbg, "MasterKey([redacted])");
    }

    #[test]
    fn staging_then_promoting_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let old = MasterKey::read_or_create_file(&path).unwrap();
        let new = MasterKey::generate();
        let staged = new.stage_file(&path).unwrap();
        assert_eq!(MasterKey::read_file(&staged).unwrap(), new);
        assert_eq!(MasterKey::read_file(&path).unwrap(), old);
        MasterKey::promote_staged(&path).unwrap();
        assert_eq!(MasterKey::read_file(&path).unwrap(), new);
        assert!(!staged.exists());
    }
}
