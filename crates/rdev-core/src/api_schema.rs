//! The JSON Schemas of the validated strings that cross the API (`utoipa::ToSchema` for
//! [`ProjectName`], [`SecretName`], [`SecretScope`], [`AgentProvider`], [`TaskId`],
//! [`BranchName`], [`RepoUrl`]) and the field schemas of rules that live in a `parse` or
//! `validate` function (prompt, model, session id, push protection patterns, network
//! allow-list, secret plan). Each pattern states exactly what its function checks, and the
//! tests hold every pattern to its function on generated input, so the OpenAPI document
//! cannot promise more or less than the server enforces.
//!
//! Patterns are ECMA-262 regular expressions that Python's `re` and Rust's `fancy-regex`
//! read the same way (anchored with `^…$`, lookahead only). Lengths counted in bytes by
//! the server are stated as `maxLength` in characters: equal for ASCII. Schemas only:
//! no document, no routes, no I/O.

use utoipa::{
    openapi::{
        schema::{
            ArrayBuilder, ArrayItems, KnownFormat, Object, ObjectBuilder, SchemaFormat, Type,
        },
        RefOr, Schema,
    },
    PartialSchema, ToSchema,
};

use crate::{
    agent_args, credentials::env_fence::FENCED_ENV, push_protection, AgentProvider, AgentSummary,
    BranchName, InjectionPlan, PipelineSummary, ProjectName, RepoUrl, SecretName, SecretScope,
    TaskId, TaskStatus, Usage,
};

/// The characters Rust's `char::is_whitespace` (Unicode `White_Space`) accepts, as the
/// body of a character class: what `str::trim` strips. ECMA-262's `\s` differs (it has
/// U+FEFF and lacks U+0085), so it is spelled out.
pub const WHITE_SPACE: &str =
    r"\t-\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";

/// [`ProjectName::parse`]: 1 to 63 of `a-z 0-9 -`, not starting or ending with `-`.
pub const PROJECT_NAME_PATTERN: &str = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";
/// [`SecretName::parse`]: an environment variable name of at most 128 characters.
pub const SECRET_NAME_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_]{0,127}$";
/// [`SecretScope::parse`]: `global`, `gateway` or `project:<project name>`.
pub const SECRET_SCOPE_PATTERN: &str =
    "^(global|gateway|project:[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)$";
/// [`AgentProvider::parse`]: 1 to 32 of `a-z 0-9 -`.
pub const PROVIDER_PATTERN: &str = "^[a-z0-9-]{1,32}$";
/// [`BranchName::parse`]: 1 to 200 of `A-Z a-z 0-9 . _ / -`, not starting with `-` or
/// `/`, not ending with `/` or `.lock`, without `..` or `//`.
pub const BRANCH_PATTERN: &str =
    r"^(?![-/])(?!.*\.\.)(?!.*//)(?!.*/$)(?!.*\.lock$)[A-Za-z0-9._/-]{1,200}$";
/// [`agent_args::validate_model`]: 1 to 128 of `A-Z a-z 0-9 - _ . : / @`, led by a letter
/// or digit.
pub const MODEL_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$";
/// [`agent_args::validate_session_id`]: 1 to 128 of `A-Z a-z 0-9 - _`, led by a letter or
/// digit.
pub const SESSION_ID_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$";
/// [`crate::project_model::parse_network_allow`]: `host:port`, the host a DNS name of
/// labels (not only digits and dots: never an IP address), the port 1 to 65535.
pub const NETWORK_ALLOW_PATTERN: &str = concat!(
    r"^(?=[^:]{1,253}:)(?![0-9.]*:)",
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*",
    r":0*([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$"
);
/// [`crate::AllowPattern::parse`]: `/`-separated segments, none empty, `.` or `..`, no
/// leading `/`, at most one trailing `/`, no control character nor `[ ] { } \ !`.
pub const ALLOW_PATTERN_PATTERN: &str = concat!(
    r"^(?!\.\.?(/|$))[^/\u0000-\u001F\u007F-\u009F\[\]{}\\!]+",
    r"(/(?!\.\.?(/|$))[^/\u0000-\u001F\u007F-\u009F\[\]{}\\!]+)*/?$"
);

/// A project's `deploy_url_pattern` (checked by the server's `validate_deploy_url_pattern`,
/// which applies this pattern and then parses the URL with sample values): `http://` or
/// `https://`, a host of labels of `A-Z a-z 0-9 -` and placeholders, the last label led
/// by a letter or `{project}` (so the host is a name, never an IPv4 number), an optional
/// port up to 65535, then anything printable but braces and white space after `/`, `?`
/// or `#`. Placeholders: `{project}`, `{number}`, `{commit}`, `{short_commit}`. An `xn--`
/// label must also be valid punycode, which only the URL parser checks.
pub const DEPLOY_URL_PATTERN_PATTERN: &str = concat!(
    r"^https?://",
    r"(?:(?:[A-Za-z0-9-]|\{(?:project|number|commit|short_commit)\})+\.)*",
    r"(?:[A-Za-z]|\{project\})(?:[A-Za-z0-9-]|\{(?:project|number|commit|short_commit)\})*",
    r"(?::(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?",
    r"(?:[/?#](?:[!-z|~]|\{(?:project|number|commit|short_commit)\})*)?$"
);
/// The longest `deploy_url_pattern` accepted.
pub const MAX_DEPLOY_URL_PATTERN: usize = 2048;

/// A string schema with a pattern, length bounds and a description.
pub fn string(pattern: &str, min: usize, max: usize, description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .min_length(Some(min))
        .max_length(Some(max))
        .description(Some(description))
        .build()
}

/// Adds JSON Schema keywords utoipa's model has no field for (`not`, `const`,
/// `dependentRequired`, `prefixItems` on objects...). They go in the schema's extension
/// map, which serialises flat into the schema object.
pub fn with_keywords(
    mut schema: Object,
    keywords: impl IntoIterator<Item = (&'static str, serde_json::Value)>,
) -> Object {
    let ext = schema.extensions.get_or_insert_with(Default::default);
    for (k, v) in keywords {
        ext.insert(k.to_owned(), v);
    }
    schema
}

/// Makes a field schema accept `null` too (`Option` fields the server reads as absent).
pub fn nullable(schema: impl Into<RefOr<Schema>>) -> RefOr<Schema> {
    utoipa::openapi::schema::OneOfBuilder::new()
        .item(schema)
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .into()
}

macro_rules! string_schema {
    ($ty:ty, $pattern:expr, $min:expr, $max:expr, $doc:expr) => {
        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                string($pattern, $min, $max, $doc).into()
            }
        }
        impl ToSchema for $ty {}
    };
}

string_schema!(
    ProjectName,
    PROJECT_NAME_PATTERN,
    1,
    ProjectName::MAX_LEN,
    "A project name: lowercase letters, digits and '-', not starting or ending with '-'."
);
string_schema!(
    SecretName,
    SECRET_NAME_PATTERN,
    1,
    SecretName::MAX_LEN,
    "A secret name, usable as an environment variable name."
);
string_schema!(
    SecretScope,
    SECRET_SCOPE_PATTERN,
    6,
    8 + ProjectName::MAX_LEN,
    "Where a secret lives: `global` (every project's builds), `project:<name>` (that \
     project's builds) or `gateway` (the model gateway's upstream keys; no build reads it)."
);
string_schema!(
    AgentProvider,
    PROVIDER_PATTERN,
    1,
    32,
    "A code-agent provider id (`claude-code`, `opencode`)."
);
string_schema!(
    BranchName,
    BRANCH_PATTERN,
    1,
    BranchName::MAX_LEN,
    "The branch builds push to (a safe git ref name)."
);

impl PartialSchema for RepoUrl {
    fn schema() -> RefOr<Schema> {
        let ws = WHITE_SPACE;
        let pattern = format!("^[{ws}]*[^{ws}-][^{ws}]*[{ws}]*$");
        let s = string(
            &pattern,
            1,
            RepoUrl::MAX_LEN,
            "A git URL or a local path to a bare repository: no blanks inside (surrounding \
             ones are trimmed), not starting with '-', at most 2048 bytes, and no credential \
             (a token belongs in a project secret; answered 422 invalid_field).",
        );
        s.into()
    }
}
impl ToSchema for RepoUrl {}

impl PartialSchema for crate::ci_repo::WoodpeckerRepo {
    fn schema() -> RefOr<Schema> {
        // A segment is not "." or "..": it starts with a non-dot, or is "." then a non-dot,
        // or ".." then at least one more character (no lookaround, so generators stay fast).
        let seg =
            r"(?:[A-Za-z0-9_-][A-Za-z0-9._-]*|\.[A-Za-z0-9_-][A-Za-z0-9._-]*|\.\.[A-Za-z0-9._-]+)";
        let pattern = format!("^{seg}(?:/{seg})+$");
        string(
            &pattern,
            3,
            crate::ci_repo::WoodpeckerRepo::MAX_LEN,
            "A Woodpecker repository's full name, `owner/name` (422 invalid_field otherwise).",
        )
        .into()
    }
}
impl ToSchema for crate::ci_repo::WoodpeckerRepo {}

impl PartialSchema for TaskId {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
            .description(Some("A task id (a UUIDv7)."))
            .into()
    }
}
impl ToSchema for TaskId {}

/// A build's prompt: not blank, at most `max_bytes` (the server's `max_prompt_bytes`;
/// the OpenAPI document states the configured value). "Not blank" is stated as `not` a
/// pattern of white space only rather than as a pattern needing one other character: the
/// two say the same, but Schemathesis' coverage phase cannot build a string near a large
/// `maxLength` for a pattern it must match, and then tests the whole body with negative
/// data only. `maxLength` counts characters and the server counts UTF-8 bytes, so a
/// prompt of multibyte characters meets the limit sooner; the description says so.
pub fn prompt(max_bytes: usize) -> Object {
    let blank = format!("^[{WHITE_SPACE}]*$");
    let schema = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(max_bytes))
        .description(Some(
            "What the agent is asked to do: not blank (422 prompt_required), at most the \
             server's max_prompt_bytes bytes of UTF-8 (422 prompt_too_large; maxLength \
             counts characters, so a prompt of multibyte characters meets it sooner).",
        ))
        .build();
    with_keywords(schema, [("not", serde_json::json!({ "pattern": blank }))])
}

/// The `model` field of a build.
pub fn model() -> Object {
    string(
        MODEL_PATTERN,
        1,
        agent_args::MAX_LEN,
        "The model, passed to the agent as it is (422 invalid_model otherwise).",
    )
}

/// The `session_id` field of a build.
pub fn session_id() -> Object {
    string(
        SESSION_ID_PATTERN,
        1,
        agent_args::MAX_LEN,
        "An agent session to resume, from an earlier result's agent.session_id \
         (422 invalid_session_id otherwise).",
    )
}

/// `max_cost_usd`: a positive number of dollars.
pub fn max_cost_usd() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Number)
        .exclusive_minimum(Some(0))
        .description(Some(
            "Most dollars the task's model calls may cost (422 invalid_field unless positive).",
        ))
        .build()
}

/// `max_tokens`: at least 1 (a u64).
pub fn max_tokens() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1))
        .maximum(Some(u64::MAX))
        .description(Some(
            "Most tokens (input, output, cache reads and writes) the task's model calls may use.",
        ))
        .build()
}

/// A project's `push_protection_allow` list.
pub fn push_protection_allow() -> RefOr<Schema> {
    ArrayBuilder::new()
        .items(string(
            ALLOW_PATTERN_PATTERN,
            1,
            push_protection::MAX_ALLOW_PATTERN_LEN,
            "A path pattern: '*' and '?' within a segment, '**' as a whole segment, a \
             trailing '/' for a directory.",
        ))
        .max_items(Some(push_protection::MAX_ALLOW_PATTERNS))
        .description(Some(
            "Path patterns of known test fixtures where credential formats are not findings.",
        ))
        .into()
}

/// A project's `network_allow` list.
pub fn network_allow() -> RefOr<Schema> {
    ArrayBuilder::new()
        .items(string(
            NETWORK_ALLOW_PATTERN,
            3,
            253 + 1 + 5,
            "`host:port`: a DNS name (never an IP address) and a port from 1 to 65535.",
        ))
        .max_items(Some(100))
        .description(Some(
            "Hosts the project's agents may reach through the egress proxy.",
        ))
        .into()
}

/// The pattern of the environment variable names the fence refuses, ASCII case ignored
/// (spelled as `[Aa]` classes: ECMA-262 has no inline flag), from [`FENCED_ENV`].
pub fn fenced_env_pattern() -> String {
    let word = |w: &str| -> String {
        w.chars()
            .map(|c| {
                if c.is_ascii_alphabetic() {
                    format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase())
                } else {
                    c.to_string()
                }
            })
            .collect()
    };
    let alternatives: Vec<String> = FENCED_ENV
        .iter()
        .map(
            |r| match (r.pattern.strip_suffix('*'), r.pattern.strip_prefix('*')) {
                (Some(prefix), _) => format!("^{}", word(prefix)),
                (_, Some(suffix)) => format!("{}$", word(suffix)),
                _ => format!("^{}$", word(r.pattern)),
            },
        )
        .collect();
    alternatives.join("|")
}

impl PartialSchema for InjectionPlan {
    fn schema() -> RefOr<Schema> {
        injection_plan()
    }
}
impl ToSchema for InjectionPlan {}

/// A `$ref` to the component schema of `T`, collected with its own references.
fn reference<T: ToSchema>(schemas: &mut Vec<(String, RefOr<Schema>)>) -> RefOr<Schema> {
    schemas.push((T::name().into_owned(), T::schema()));
    T::schemas(schemas);
    RefOr::Ref(utoipa::openapi::Ref::from_schema_name(T::name()))
}

/// The run's keys are flattened into the object, all of them or none (an attempt that
/// found its commit already pushed ran no agent), which serde's `flatten` of an `Option`
/// means and utoipa's derive cannot say.
impl PartialSchema for AgentSummary {
    fn schema() -> RefOr<Schema> {
        let mut refs = Vec::new();
        let usage = reference::<Usage>(&mut refs);
        let pipeline = reference::<PipelineSummary>(&mut refs);
        let integer = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0));
        let number = ObjectBuilder::new().schema_type(Type::Number);
        let text = || ObjectBuilder::new().schema_type(Type::String);
        let run_keys = ["provider", "session_id", "num_turns", "usage"];
        let schema = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("provider", text().description(Some("The provider id.")))
            .property(
                "session_id",
                nullable(text().description(Some(
                    "The provider's session id; pass it back as `session_id` to resume.",
                ))),
            )
            .property("num_turns", integer)
            .property(
                "usage",
                utoipa::openapi::schema::AllOfBuilder::new()
                    .item(usage)
                    .description(Some("Tokens as the agent reported them.")),
            )
            .property(
                "reported_cost_usd",
                nullable(number.description(Some(
                    "The agent's own cost estimate; present only when the gateway metered \
                     the run and its metered cost became the result's `cost_usd`.",
                ))),
            )
            .property("pipeline", pipeline)
            .description(Some(
                "The agent run (its keys all present, or none when the attempt ran no \
                 agent) and the CI pipeline of the pushed commit (absent when CI is not \
                 followed).",
            ))
            .build();
        let dependent: serde_json::Map<String, serde_json::Value> = run_keys
            .iter()
            .chain(&["reported_cost_usd"])
            .map(|k| {
                let others: Vec<&str> = run_keys.iter().copied().filter(|o| o != k).collect();
                ((*k).to_owned(), serde_json::json!(others))
            })
            .collect();
        with_keywords(schema, [("dependentRequired", dependent.into())]).into()
    }
}
impl ToSchema for AgentSummary {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        reference::<Usage>(schemas);
        reference::<PipelineSummary>(schemas);
    }
}

/// A project's `secrets` plan ([`InjectionPlan`]).
pub fn injection_plan() -> RefOr<Schema> {
    let not_reserved = || {
        with_keywords(
            string(
                SECRET_NAME_PATTERN,
                1,
                SecretName::MAX_LEN,
                "A secret name; not the callback signing secret (422 reserved_secret_name).",
            ),
            [(
                "not",
                serde_json::json!({"const": crate::credentials::WEBHOOK_SECRET_NAME}),
            )],
        )
    };
    let var = with_keywords(
        string(
            SECRET_NAME_PATTERN,
            1,
            SecretName::MAX_LEN,
            "An environment variable the project may set: not one that steers rdev, the \
             agent, its runtime, shell, TLS trust or proxies (422 reserved_env_name).",
        ),
        [("not", serde_json::json!({"pattern": fenced_env_pattern()}))],
    );
    let pair = ArrayBuilder::new()
        .prefix_items([var, not_reserved()])
        .items(ArrayItems::False)
        .min_items(Some(2))
        .max_items(Some(2))
        .description(Some("`[environment variable, secret name]`"))
        .build();
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "env",
            ArrayBuilder::new().items(RefOr::T(Schema::Array(pair))),
        )
        .property("git_token", nullable(not_reserved()))
        .description(Some(
            "Secrets builds receive: environment variables for the agent and the git token \
             of the remote; each name is looked up in the project's scope, then `global`.",
        ))
        .into()
}

/// A build's `timeout_secs`: 1 to `max_secs` (the server's maximum; the OpenAPI document
/// states the configured value), or `null` for the default.
pub fn timeout_secs(max_secs: u64) -> RefOr<Schema> {
    nullable(
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .maximum(Some(max_secs))
            .description(Some(
                "How long the agent may run, in seconds (default 1800; 422 invalid_timeout \
                 outside 1 to the server's maximum).",
            )),
    )
}

/// The statuses a finished task can have ([`TaskStatus::is_terminal`]): a callback's.
pub fn terminal_status() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(
            TaskStatus::ALL
                .into_iter()
                .filter(|s| s.is_terminal())
                .map(TaskStatus::as_str),
        ))
        .description(Some("How the task ended."))
        .build()
}

// The field schemas `#[schema(schema_with = ...)]` names (no arguments; the limits are the
// defaults, which the server replaces by its configured ones).

/// A project's `deploy_url_pattern` field (nullable).
pub fn deploy_url_pattern_field() -> RefOr<Schema> {
    nullable(string(
        DEPLOY_URL_PATTERN_PATTERN,
        1,
        MAX_DEPLOY_URL_PATTERN,
        "How to derive the deploy URL, e.g. `https://{project}.example.com`: an http(s) URL \
         whose host is a name, with the placeholders `{project}`, `{number}`, `{commit}` and \
         `{short_commit}` only (422 invalid_field; an `xn--` label must be valid punycode).",
    ))
}

/// [`prompt`] at the default limit.
pub fn default_prompt() -> Object {
    prompt(crate::RequestLimits::DEFAULT_MAX_PROMPT_BYTES)
}

/// [`timeout_secs`] at the default limit.
pub fn default_timeout_secs() -> RefOr<Schema> {
    timeout_secs(crate::RequestLimits::DEFAULT_MAX_TIMEOUT.as_secs())
}

/// An optional [`model`].
pub fn model_field() -> RefOr<Schema> {
    nullable(model())
}

/// An optional [`session_id`].
pub fn session_id_field() -> RefOr<Schema> {
    nullable(session_id())
}

/// An optional [`max_cost_usd`].
pub fn max_cost_usd_field() -> RefOr<Schema> {
    nullable(max_cost_usd())
}

/// An optional [`max_tokens`].
pub fn max_tokens_field() -> RefOr<Schema> {
    nullable(max_tokens())
}

#[cfg(test)]
mod tests;
