//! The credential formats push protection recognises: `rules.toml` beside this file (one
//! rule per format, each with its source), compiled once with the `regex` crate into one
//! [`regex::bytes::RegexSet`] that tells in a single pass which rules match a piece of a
//! commit, and one regex per rule to say where. Over bytes with Unicode off, so binary
//! contents and invalid UTF-8 are scanned like text and `\b`/`\w` stay ASCII (which also
//! keeps the set on its fast DFA path). It finds; deciding what a finding does is
//! [`super`]'s.

use std::{ops::Range, sync::LazyLock};

use regex::bytes::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use serde::Deserialize;

/// The rule file, compiled into the binary.
const RULES_TOML: &str = include_str!("rules.toml");

/// Compiled size limit per regex: the private-key rule's counted repetitions need more than
/// the default 10 MB of NFA.
const SIZE_LIMIT: usize = 64 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    rule: Vec<RuleSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    id: String,
    description: String,
    source: String,
    regex: String,
    #[serde(default)]
    allow: Vec<String>,
}

/// One credential format.
#[derive(Debug)]
pub struct Rule {
    /// The finding's `rule`, e.g. `github-pat`.
    pub id: String,
    pub description: String,
    /// Where the pattern comes from.
    pub source: String,
    regex: Regex,
    /// Matches (of the credential itself) that do not count, e.g. documentation examples.
    allow: Option<RegexSet>,
}

impl Rule {
    /// Where in `haystack` this rule finds a credential (group 1 when the regex has one).
    fn find_iter<'h>(&'h self, haystack: &'h [u8]) -> impl Iterator<Item = Range<usize>> + 'h {
        self.regex.captures_iter(haystack).filter_map(move |c| {
            let m = c.get(1).or_else(|| c.get(0))?;
            let allowed = self
                .allow
                .as_ref()
                .is_some_and(|a| a.is_match(m.as_bytes()));
            (!allowed).then(|| m.range())
        })
    }
}

/// Every rule, and the set that runs them all at once.
#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<Rule>,
    set: RegexSet,
}

/// The built-in rules, compiled on first use.
static BUILTIN: LazyLock<RuleSet> = LazyLock::new(|| {
    RuleSet::parse(RULES_TOML).unwrap_or_else(|e| panic!("scan/rules.toml is invalid: {e}"))
});

impl RuleSet {
    /// The rules of `rules.toml` (a test checks that it compiles).
    pub fn builtin() -> &'static RuleSet {
        &BUILTIN
    }

    /// Parses and compiles a rule file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: RuleFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut rules = Vec::with_capacity(file.rule.len());
        for spec in file.rule {
            let compile = |pattern: &str| {
                RegexBuilder::new(pattern)
                    .unicode(false)
                    .size_limit(SIZE_LIMIT)
                    .build()
                    .map_err(|e| format!("rule {}: {e}", spec.id))
            };
            let regex = compile(&spec.regex)?;
            let allow = if spec.allow.is_empty() {
                None
            } else {
                Some(
                    RegexSetBuilder::new(&spec.allow)
                        .unicode(false)
                        .build()
                        .map_err(|e| format!("rule {} allow: {e}", spec.id))?,
                )
            };
            if rules.iter().any(|r: &Rule| r.id == spec.id) {
                return Err(format!("rule {} is defined twice", spec.id));
            }
            rules.push(Rule {
                id: spec.id,
                description: spec.description,
                source: spec.source,
                regex,
                allow,
            });
        }
        let set = RegexSetBuilder::new(rules.iter().map(|r| r.regex.as_str()))
            .unicode(false)
            .size_limit(SIZE_LIMIT)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { rules, set })
    }

    /// Every rule.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Every credential in `haystack`: the rule and where. One pass of the set decides
    /// which rules run at all; most text matches none.
    pub fn find_all<'h>(&'h self, haystack: &'h [u8]) -> Vec<(&'h Rule, Range<usize>)> {
        let mut out = Vec::new();
        for index in self.set.matches(haystack).iter() {
            let rule = &self.rules[index];
            out.extend(rule.find_iter(haystack).map(|range| (rule, range)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` characters cycling through `alphabet`, so examples are built at run time and no
    /// credential-shaped string sits in rdev's own source.
    fn chars(alphabet: &str, n: usize) -> String {
        alphabet.chars().cycle().take(n).collect()
    }

    const ALNUM: &str = "aB3dE5gH7jK9mN1pQ2";

    /// One positive and one near-miss per rule.
    fn examples() -> Vec<(&'static str, String, String)> {
        let key_body = chars("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", 96);
        vec![
            (
                "private-key",
                format!(
                    "-----BEGIN RSA PRIVATE KEY-----\n{key_body}\n-----END RSA PRIVATE KEY-----\n"
                ),
                // A header alone (documentation) is not a key block.
                "-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----\n".to_owned(),
            ),
            (
                "aws-access-token",
                format!("id = AKIA{}\n", chars("QRSTUVWXYZ234567", 16)),
                format!("id = AKIA{}EXAMPLE\n", chars("QRSTUV", 9)),
            ),
            (
                "github-pat",
                format!("ghp_{}", chars(ALNUM, 36)),
                format!("ghp_{}", chars(ALNUM, 20)),
            ),
            (
                "github-fine-grained-pat",
                format!("github_pat_{}", chars("11ABCDE_fgh", 82)),
                format!("github_pat_{}", chars("11ABCDE_fgh", 40)),
            ),
            (
                "github-oauth",
                format!("gho_{}", chars(ALNUM, 36)),
                format!("gho-{}", chars(ALNUM, 36)),
            ),
            (
                "github-app-token",
                format!("ghs_{}", chars(ALNUM, 36)),
                format!("ghx_{}", chars(ALNUM, 36)),
            ),
            (
                "github-refresh-token",
                format!("ghr_{}", chars(ALNUM, 36)),
                format!("ghr_{}", chars(ALNUM, 12)),
            ),
            (
                "anthropic-api-key",
                format!("key: sk-ant-api03-{}AA\n", chars("Ab_-9", 93)),
                format!("key: sk-ant-api03-{}\n", chars("Ab_-9", 20)),
            ),
            (
                "anthropic-admin-api-key",
                format!("\"sk-ant-admin01-{}AA\"", chars("Ab_-9", 93)),
                format!("\"sk-ant-admin01-{}AB\"", chars("Ab_-9", 93)),
            ),
            (
                "openai-api-key",
                // The key must end on a word character (`\b`).
                format!(
                    "sk-proj-{}T3BlbkFJ{} ",
                    chars("aZ_-4", 74),
                    chars("aZ_4-", 74)
                ),
                format!("sk-proj-{} ", chars("aZ_-4", 74)),
            ),
            (
                "slack-bot-token",
                format!(
                    "xoxb-{}-{}-{}",
                    chars("1234567", 11),
                    chars("89", 12),
                    chars(ALNUM, 24)
                ),
                format!("xoxb-{}-{}", chars("12", 5), chars(ALNUM, 24)),
            ),
            (
                "slack-user-token",
                format!(
                    "xoxp-{}-{}-{}-{}",
                    chars("123", 11),
                    chars("456", 11),
                    chars("789", 12),
                    chars(ALNUM, 32)
                ),
                format!("xoxp-{}-{}", chars("123", 11), chars(ALNUM, 32)),
            ),
            (
                "slack-app-token",
                format!(
                    "xapp-1-A{}-{}-{}",
                    chars("BCD12", 10),
                    chars("345", 13),
                    chars("abc123", 64)
                ),
                "xapp-one-two".to_owned(),
            ),
            (
                "slack-webhook-url",
                format!(
                    "https://hooks.slack.com/services/{}",
                    chars("T0B1C2/xyz", 44)
                ),
                "https://hooks.slack.com/services/".to_owned(),
            ),
            (
                "stripe-access-token",
                format!("STRIPE=sk_live_{}\n", chars(ALNUM, 24)),
                format!("STRIPE=pk_live_{}\n", chars(ALNUM, 24)),
            ),
            (
                "gcp-api-key",
                format!("apiKey: \"AIza{}\"", chars("Sy_-x9Q", 35)),
                format!("apiKey: \"AIza{}\"", chars("Sy_-x9Q", 20)),
            ),
            (
                "gitlab-pat",
                format!("glpat-{}", chars("xY_-z1", 20)),
                format!("glpat-{}", chars("xY", 10)),
            ),
            (
                "npm-access-token",
                format!(
                    "//registry.npmjs.org/:_authToken=npm_{}\n",
                    chars("a1b2c3", 36)
                ),
                format!("npm_{}\n", chars("a1b2c3", 20)),
            ),
            (
                "rdev-api-token",
                format!("Bearer rdev_{}", chars(ALNUM, 40)),
                format!("Bearer rdev_{}", chars(ALNUM, 41)),
            ),
            (
                "webhook-signing-secret",
                format!(
                    "WEBHOOK_SECRET=whsec_{}=",
                    chars("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", 43)
                ),
                "whsec_short".to_owned(),
            ),
        ]
    }

    #[test]
    fn every_rule_finds_its_format_and_misses_its_near_miss() {
        let rules = RuleSet::builtin();
        let examples = examples();
        let ids: Vec<&str> = rules.rules().iter().map(|r| r.id.as_str()).collect();
        let tested: Vec<&str> = examples.iter().map(|(id, _, _)| *id).collect();
        assert_eq!(ids, tested, "one example per rule, in file order");
        for (id, yes, no) in &examples {
            let found: Vec<&str> = rules
                .find_all(yes.as_bytes())
                .iter()
                .map(|(r, _)| r.id.as_str())
                .collect();
            assert!(found.contains(id), "{id} misses {yes:?}: {found:?}");
            let found: Vec<&str> = rules
                .find_all(no.as_bytes())
                .iter()
                .map(|(r, _)| r.id.as_str())
                .collect();
            assert!(!found.contains(id), "{id} matches the near miss {no:?}");
        }
    }

    #[test]
    fn every_rule_names_its_source_and_a_capture_reports_the_credential_only() {
        for rule in RuleSet::builtin().rules() {
            assert!(
                !rule.source.is_empty() && !rule.description.is_empty(),
                "{}",
                rule.id
            );
        }
        let token = format!("sk_test_{}", chars(ALNUM, 24));
        let text = format!("key = '{token}';");
        let found = RuleSet::builtin().find_all(text.as_bytes());
        assert_eq!(found.len(), 1);
        assert_eq!(&text.as_bytes()[found[0].1.clone()], token.as_bytes());
    }

    #[test]
    fn binary_and_invalid_utf8_around_a_credential_do_not_hide_it() {
        let mut bytes = vec![0u8, 0xff, 0xfe, b' '];
        bytes.extend_from_slice(format!("ghp_{}", chars(ALNUM, 36)).as_bytes());
        bytes.extend_from_slice(&[0, 0x80]);
        let found = RuleSet::builtin().find_all(&bytes);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0.id, "github-pat");
    }

    #[test]
    fn bad_rule_files_are_refused() {
        assert!(RuleSet::parse("[[rule]]\nid = \"x\"\n").is_err());
        let bad_regex = "[[rule]]\nid='x'\ndescription='d'\nsource='s'\nregex='(unclosed'\n";
        assert!(RuleSet::parse(bad_regex).unwrap_err().contains("rule x"));
        let twice = "[[rule]]\nid='x'\ndescription='d'\nsource='s'\nregex='a'\n".repeat(2);
        assert!(RuleSet::parse(&twice).unwrap_err().contains("twice"));
    }
}
