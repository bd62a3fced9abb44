//! The request fields an adapter hands to its agent as they are: the model name (`claude
//! --model=<name>`, OpenCode's prompt body) and the session id to resume (`claude
//! --resume=<id>`, OpenCode's `/session/{id}/...` URL). Both come from whoever sends a build,
//! so both are held to a strict pattern here, at every edge (`BuildSpec`, `AgentRequest`):
//! they can never start like an option, never hold a space, quote or control character, and
//! a session id can never change a URL path. Nothing here builds an argv; adapters still pass
//! each value glued to its flag (`--flag=value`) so that even a value that slipped past this
//! module could not become an option of its own.

use crate::ValidationError;

/// The longest model name or session id accepted.
pub const MAX_LEN: usize = 128;

/// Checks a model name: 1 to 128 characters from `A-Z a-z 0-9 - _ . : / @`, starting with a
/// letter or digit. That covers aliases (`sonnet`), full names (`claude-sonnet-4-5`),
/// OpenCode's `provider/model`, Vertex's `claude-sonnet-4-5@20250929` and Bedrock ids and
/// ARNs (`us.anthropic.claude-sonnet-4-5-20250929-v1:0`).
pub fn validate_model(model: &str) -> Result<(), ValidationError> {
    check(model, |b| b"-_.:/@".contains(&b)).map_err(|reason| ValidationError::InvalidModel {
        value: shown(model),
        reason,
    })
}

/// Checks a session id: 1 to 128 characters from `A-Z a-z 0-9 - _`, starting with a letter
/// or digit. Claude Code's ids are UUIDs and OpenCode's `ses_<base62>`; `/`, `.` and `:`
/// are left out because OpenCode puts the id in a URL path.
pub fn validate_session_id(id: &str) -> Result<(), ValidationError> {
    check(id, |b| b"-_".contains(&b)).map_err(|reason| ValidationError::InvalidSessionId {
        value: shown(id),
        reason,
    })
}

/// The shared rule: bounded, ASCII letters and digits plus `extra`, led by a letter or digit.
fn check(value: &str, extra: impl Fn(u8) -> bool) -> Result<(), &'static str> {
    let first = value.bytes().next().ok_or("must not be empty")?;
    if value.len() > MAX_LEN {
        return Err("must be at most 128 characters");
    }
    if !first.is_ascii_alphanumeric() {
        return Err("must start with a letter or digit");
    }
    if !value.bytes().all(|b| b.is_ascii_alphanumeric() || extra(b)) {
        return Err("contains a character that is not allowed");
    }
    Ok(())
}

/// The value as an error message shows it: at most 80 characters.
fn shown(value: &str) -> String {
    value.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ErrorCode;

    /// Values that would be options, or smuggle one, if they reached an argv unchecked.
    const OPTION_LIKE: &[&str] = &[
        "--add-dir=/",
        "-p",
        "--permission-mode=default",
        "--permission-mode",
        "-",
        "--",
        " --add-dir=/",
        "x --add-dir=/",
        "x\n--add-dir=/",
        "x\0y",
        "",
    ];

    #[test]
    fn real_model_names_are_accepted() {
        for m in [
            "sonnet",
            "claude-sonnet-4-5",
            "anthropic/claude-sonnet-4-5",
            "claude-sonnet-4-5@20250929",
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-x",
            "openrouter/meta-llama/llama-3.1-8b-instruct",
            "4o",
            &"m".repeat(MAX_LEN),
        ] {
            assert_eq!(validate_model(m), Ok(()), "{m:?}");
        }
    }

    #[test]
    fn real_session_ids_are_accepted() {
        for s in [
            "0197a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
            "ses_5ZbQ1xYz9AbC",
            "prev-session",
            &"s".repeat(MAX_LEN),
        ] {
            assert_eq!(validate_session_id(s), Ok(()), "{s:?}");
        }
    }

    #[test]
    fn option_like_values_are_refused_with_their_code() {
        for v in OPTION_LIKE {
            let m = validate_model(v).unwrap_err();
            assert_eq!(m.code(), "invalid_model", "{v:?}");
            let s = validate_session_id(v).unwrap_err();
            assert_eq!(s.code(), "invalid_session_id", "{v:?}");
        }
    }

    #[test]
    fn session_ids_cannot_change_a_url_path() {
        for v in [
            "a/b",
            "a/../../config",
            "a.b",
            "a:b",
            "a?x=1",
            "a#b",
            "a%2Fb",
        ] {
            assert!(validate_session_id(v).is_err(), "{v:?}");
        }
    }

    #[test]
    fn overlong_and_non_ascii_values_are_refused_and_shown_shortened() {
        let long = "m".repeat(MAX_LEN + 1);
        let err = validate_model(&long).unwrap_err();
        assert!(err.to_string().contains("at most 128"), "{err}");
        assert!(err.to_string().len() < 200, "{err}");
        for v in [
            "clàude", "a b", "a\tb", "a'b", "a\"b", "a;b", "a$b", "a[1m]",
        ] {
            assert!(validate_model(v).is_err(), "{v:?}");
            assert!(validate_session_id(v).is_err(), "{v:?}");
        }
    }

    proptest! {
        #[test]
        fn accepted_values_never_start_with_a_dash_nor_leave_the_charset(
            v in "[-a-zA-Z0-9_.:/@ =\\n]{0,140}",
        ) {
            if validate_model(&v).is_ok() {
                prop_assert!(!v.starts_with('-') && !v.is_empty() && v.len() <= MAX_LEN);
                prop_assert!(v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:/@".contains(&b)));
            }
            if validate_session_id(&v).is_ok() {
                prop_assert!(!v.starts_with('-') && !v.is_empty() && v.len() <= MAX_LEN);
                prop_assert!(v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)));
            }
        }
    }
}
