//! Which Woodpecker repository a project's builds follow: [`WoodpeckerRepo`], a repository's
//! full name (`owner/name`) parsed once at the edge, [`CiRepo`], the numeric id or the name
//! a project gives, and [`validate_ci_repo`], the rule for the two fields together. Rules
//! only: resolving a name to an id is the Woodpecker client's job, in the server.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// A Woodpecker repository's full name: `owner/name` (or `group/subgroup/name` on GitLab),
/// segments of `[A-Za-z0-9._-]`, none of them empty, `.` or `..`, at most
/// [`WoodpeckerRepo::MAX_LEN`] bytes in all. Safe as the path of Woodpecker's lookup route
/// without escaping. Serialised as the plain string; deserialising does not check it (see
/// [`crate::Project`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WoodpeckerRepo(String);

impl WoodpeckerRepo {
    /// The longest full name accepted, in bytes.
    pub const MAX_LEN: usize = 255;

    /// Parses and validates a full name.
    pub fn parse(name: &str) -> Result<Self, ValidationError> {
        let segments: Vec<&str> = name.split('/').collect();
        let segment_ok = |s: &&str| {
            !s.is_empty()
                && *s != "."
                && *s != ".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        };
        if name.len() > Self::MAX_LEN || segments.len() < 2 || !segments.iter().all(segment_ok) {
            return Err(ValidationError::InvalidField {
                field: "woodpecker_repo",
                reason: format!(
                    "{:?} is not a repository full name of the form owner/name",
                    name.chars().take(80).collect::<String>()
                ),
            });
        }
        Ok(Self(name.to_owned()))
    }

    /// A value read back from storage, which was parsed when it was written.
    pub fn from_stored(name: String) -> Self {
        Self(name)
    }

    /// The full name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WoodpeckerRepo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The Woodpecker repository a project's builds follow, as the project names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CiRepo<'a> {
    /// Woodpecker's numeric repository id (`woodpecker_repo_id`).
    Id(i64),
    /// The repository's full name (`woodpecker_repo`), looked up when a build follows CI.
    Name(&'a WoodpeckerRepo),
}

/// Checks a project's Woodpecker fields together: a positive id, a valid full name, and
/// not both. Returns the name parsed (when given).
pub fn validate_ci_repo(
    id: Option<i64>,
    name: Option<&str>,
) -> Result<Option<WoodpeckerRepo>, ValidationError> {
    if id.is_some_and(|id| id <= 0) {
        return Err(ValidationError::InvalidField {
            field: "woodpecker_repo_id",
            reason: "must be a positive id".to_owned(),
        });
    }
    let name = name.map(WoodpeckerRepo::parse).transpose()?;
    if id.is_some() && name.is_some() {
        return Err(ValidationError::InvalidField {
            field: "woodpecker_repo",
            reason: "give either woodpecker_repo or woodpecker_repo_id, not both (set the other \
                     to null)"
                .to_owned(),
        });
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Project;

    #[test]
    fn full_names_of_the_form_owner_name_parse() {
        for n in ["acme/site", "Acme-Inc/my_site.v2", "group/sub/project"] {
            assert_eq!(WoodpeckerRepo::parse(n).unwrap().as_str(), n);
        }
        for n in [
            "",
            "site",
            "/site",
            "acme/",
            "acme//site",
            "acme/../site",
            "acme/./site",
            "acme/si te",
            "acme/site?x=1",
            "acme/%2e%2e",
            &format!("acme/{}", "a".repeat(WoodpeckerRepo::MAX_LEN)),
        ] {
            let err = WoodpeckerRepo::parse(n).unwrap_err();
            assert!(err.to_string().contains("owner/name"), "{n:?}: {err}");
        }
    }

    #[test]
    fn an_id_or_a_name_but_not_both() {
        assert_eq!(validate_ci_repo(None, None).unwrap(), None);
        assert_eq!(validate_ci_repo(Some(7), None).unwrap(), None);
        assert_eq!(
            validate_ci_repo(None, Some("acme/site")).unwrap(),
            Some(WoodpeckerRepo::parse("acme/site").unwrap())
        );
        let both = validate_ci_repo(Some(7), Some("acme/site")).unwrap_err();
        assert!(both.to_string().contains("not both"), "{both}");
        let zero = validate_ci_repo(Some(0), None).unwrap_err();
        assert_eq!(
            zero.to_string(),
            "invalid woodpecker_repo_id: must be a positive id"
        );
    }

    #[test]
    fn the_id_wins_when_a_stored_project_has_both() {
        let mut p: Project =
            serde_json::from_str(r#"{"name":"site","repo_url":"/x.git"}"#).unwrap();
        assert_eq!(p.ci_repo(), None);
        p.woodpecker_repo = Some(WoodpeckerRepo::from_stored("acme/site".into()));
        assert_eq!(
            p.ci_repo(),
            Some(CiRepo::Name(&WoodpeckerRepo::from_stored(
                "acme/site".into()
            )))
        );
        p.woodpecker_repo_id = Some(3);
        assert_eq!(p.ci_repo(), Some(CiRepo::Id(3)));
    }
}
