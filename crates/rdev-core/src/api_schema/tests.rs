//! Each schema of `api_schema` against the function that checks the same rule, on
//! generated input: the JSON Schema validator and the parser must agree.

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::{
    agent::validate_prompt, credentials::env_fence::check_env_name,
    project_model::parse_network_allow, AllowPattern, RequestLimits,
};

/// Whether `value` is valid by `schema`, as a JSON Schema validator decides.
fn valid(schema: impl serde::Serialize, value: &str) -> bool {
    let schema = serde_json::to_value(schema).unwrap();
    jsonschema::draft202012::is_valid(&schema, &json!(value))
}

fn of<T: ToSchema>() -> RefOr<Schema> {
    T::schema()
}

proptest! {
    #[test]
    fn project_names(s in "[a-zA-Z0-9./ _-]{0,66}") {
        prop_assert_eq!(valid(of::<ProjectName>(), &s), ProjectName::parse(&s).is_ok());
    }

    #[test]
    fn secret_names_and_scopes(s in "[A-Za-z0-9_ .=:-]{0,6}|[A-Z_]{125,130}", p in "(global|gateway|project:|team:)?[a-z-]{0,4}") {
        prop_assert_eq!(valid(of::<SecretName>(), &s), SecretName::parse(&s).is_ok());
        prop_assert_eq!(valid(of::<SecretScope>(), &p), SecretScope::parse(&p).is_ok());
    }

    #[test]
    fn providers_models_and_sessions(s in "[a-zA-Z0-9 ._:/@-]{0,6}|[a-z]{30,34}|[a-z0-9]{126,130}") {
        prop_assert_eq!(valid(of::<AgentProvider>(), &s), AgentProvider::parse(&s).is_ok());
        prop_assert_eq!(valid(model(), &s), agent_args::validate_model(&s).is_ok());
        prop_assert_eq!(valid(session_id(), &s), agent_args::validate_session_id(&s).is_ok());
    }

    #[test]
    fn branches(s in "[a-z./ ~-]{0,8}(\\.lock)?|[a-z]{198,202}") {
        prop_assert_eq!(valid(of::<BranchName>(), &s), BranchName::parse(&s).is_ok());
    }

    /// Credentials are left to the server (`@` is not generated here).
    #[test]
    fn repo_urls(s in "[ \t\u{85}\u{a0}a/:-]{0,8}") {
        prop_assert_eq!(valid(of::<RepoUrl>(), &s), RepoUrl::parse(&s).is_ok());
    }

    #[test]
    fn prompts(s in "[ \t\n\u{85}\u{a0}\u{2028}\u{feff}a]{0,4}") {
        let limits = RequestLimits::default();
        prop_assert_eq!(valid(default_prompt(), &s), validate_prompt(&s, &limits).is_ok());
    }

    #[test]
    fn network_allow_entries(s in "[a-z0-9.-]{0,6}:[0-9+]{0,6}|[0-9.]{1,8}:443|[a-z.-]{0,6}") {
        let items = network_allow();
        let RefOr::T(Schema::Array(array)) = items else { unreachable!() };
        let item = serde_json::to_value(&array.items).unwrap();
        prop_assert_eq!(valid(item, &s), parse_network_allow(&s).is_ok(), "{}", s);
    }

    #[test]
    fn allow_patterns(s in "[a*?/.!\\[\u{1}\u{85}]{0,8}") {
        let RefOr::T(Schema::Array(array)) = push_protection_allow() else { unreachable!() };
        let item = serde_json::to_value(&array.items).unwrap();
        prop_assert_eq!(valid(item, &s), AllowPattern::parse(&s).is_ok(), "{:?}", s);
    }

    #[test]
    fn environment_names(s in "(ANTHROPIC_|claude_|Path|HOME|X_|git_)?[A-Za-z_]{0,4}(_PROXY|_proxy)?") {
        let pattern = fenced_env_pattern();
        let fenced = jsonschema::draft202012::is_valid(&json!({"pattern": pattern}), &json!(s));
        let ok = valid(of::<SecretName>(), &s) && !fenced;
        prop_assert_eq!(ok, check_env_name(&s).is_ok(), "{}", s);
    }
}

#[test]
fn long_values_at_the_limits() {
    let name = "a".repeat(63);
    assert!(valid(of::<ProjectName>(), &name));
    assert!(!valid(of::<ProjectName>(), &format!("{name}a")));
    let RefOr::T(Schema::Array(array)) = network_allow() else {
        unreachable!()
    };
    let item = serde_json::to_value(&array.items).unwrap();
    assert!(valid(&item, "Packages.Example.com:443"));
    assert!(!valid(&item, "10.0.0.1:80"));
    assert!(valid(of::<BranchName>(), "release/1.2"));
    assert!(!valid(of::<BranchName>(), "x.lock"));
    assert!(valid(default_prompt(), " a "));
    assert!(!valid(default_prompt(), "\u{85} "));
    let host = format!("{}.example.com", vec!["a".repeat(63); 3].join("."));
    for port in ["1", "65535", "65536", "0", "00443"] {
        let entry = format!("{host}:{port}");
        let RefOr::T(Schema::Array(array)) = network_allow() else {
            unreachable!()
        };
        let item = serde_json::to_value(&array.items).unwrap();
        assert_eq!(
            valid(item, &entry),
            parse_network_allow(&entry).is_ok(),
            "{entry}"
        );
    }
}
