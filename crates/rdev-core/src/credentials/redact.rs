//! [`Redactor`]: replaces every injected secret value with [`REDACTED`] in text and JSON.
//! Besides the value itself it knows the forms a value takes on its way into logs: standard
//! and URL-safe base64 (padded and unpadded, and the part that stays the same wherever the
//! value sits inside a longer base64 blob), percent-encoding (every non-alphanumeric byte,
//! RFC 3986 unreserved kept, `application/x-www-form-urlencoded`; upper and lower hex) and
//! JSON string escaping. It is pure: no I/O, no logging, and its `Debug` never shows a value.
//! The same automaton finds values too ([`Redactor::find_iter`]): push protection scans a
//! commit's bytes with it and reports which value (by its label, never the value) appeared
//! in which [`Encoding`].

use std::{borrow::Cow, collections::BTreeMap, fmt, ops::Range, sync::Arc};

use aho_corasick::{AhoCorasick, MatchKind};
use base64::{
    engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD},
    Engine,
};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// What every redacted occurrence becomes.
pub const REDACTED: &str = "[redacted]";

/// RFC 3986 unreserved characters stay as they are (`encodeURIComponent`-like).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `application/x-www-form-urlencoded` keeps `*-._` (and turns space into `+`).
const FORM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'*')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.');

/// Fragments shorter than this (mid-blob base64) are not redacted on their own: they are
/// too likely to occur by chance. Whole encoded forms are always redacted.
const MIN_FRAGMENT: usize = 8;

/// How a known value was written where it was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// The value as it is.
    Plain,
    /// Standard or URL-safe base64, padded or not.
    Base64,
    /// The part of its base64 that stays the same inside a longer base64 blob.
    Base64Fragment,
    /// Percent-encoded (any of the URL and form encodings).
    PercentEncoded,
    /// Escaped as inside a JSON string.
    JsonEscaped,
}

impl Encoding {
    /// A stable name (`plain`, `base64`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Base64 => "base64",
            Self::Base64Fragment => "base64_fragment",
            Self::PercentEncoded => "percent_encoded",
            Self::JsonEscaped => "json_escaped",
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One occurrence of a known value, found by [`Redactor::find_iter`]: where it is, the
/// label it was given (a variable or setting name, never the value) and its encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownMatch<'a> {
    pub range: Range<usize>,
    pub label: Option<&'a str>,
    pub encoding: Encoding,
}

/// Which value (index into the labels) and which encoding one pattern stands for.
type Origin = (usize, Encoding);

/// Replaces known secret values (and their encodings) with [`REDACTED`].
#[derive(Clone, Default)]
pub struct Redactor {
    matcher: Option<AhoCorasick>,
    patterns: usize,
    /// Per pattern id of `matcher`.
    origins: Arc<[Origin]>,
    /// Per value; `None` for values given without a label ([`Redactor::new`]).
    labels: Arc<[Option<String>]>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("patterns", &self.patterns)
            .finish()
    }
}

impl Redactor {
    /// A redactor for `values`; empty values are ignored.
    pub fn new<I, S>(values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::build(values.into_iter().map(|v| (None, v)))
    }

    /// A redactor for `(label, value)` pairs; [`Redactor::find_iter`] names the label of
    /// each value it finds. Empty values are ignored. Where two values share a form, the
    /// first one's label is reported.
    pub fn labelled<I, L, S>(values: I) -> Self
    where
        I: IntoIterator<Item = (L, S)>,
        L: Into<String>,
        S: AsRef<str>,
    {
        Self::build(values.into_iter().map(|(l, v)| (Some(l.into()), v)))
    }

    fn build<S: AsRef<str>>(values: impl Iterator<Item = (Option<String>, S)>) -> Self {
        let mut patterns: BTreeMap<String, Origin> = BTreeMap::new();
        let mut labels = Vec::new();
        for (label, v) in values {
            let v = v.as_ref();
            if v.is_empty() {
                continue;
            }
            let index = labels.len();
            labels.push(label);
            for (form, encoding) in forms(v) {
                if !form.is_empty() {
                    patterns.entry(form).or_insert((index, encoding));
                }
            }
        }
        if patterns.is_empty() {
            return Self::default();
        }
        // Leftmost-longest: where a value and its longer encoding both match, the whole
        // encoding goes, so no tail of it is left behind.
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(patterns.keys())
            .expect("literal patterns of bounded size always build");
        Self {
            patterns: patterns.len(),
            matcher: Some(matcher),
            origins: patterns.into_values().collect(),
            labels: labels.into(),
        }
    }

    /// Every non-overlapping occurrence of a known value (in any form) in `haystack`,
    /// leftmost-longest, as [`Redactor::redact`] would replace them.
    pub fn find_iter<'a>(&'a self, haystack: &'a [u8]) -> impl Iterator<Item = KnownMatch<'a>> {
        self.matcher
            .iter()
            .flat_map(move |m| m.find_iter(haystack))
            .map(move |hit| {
                let (value, encoding) = self.origins[hit.pattern().as_usize()];
                KnownMatch {
                    range: hit.range(),
                    label: self.labels[value].as_deref(),
                    encoding,
                }
            })
    }

    /// Whether this redactor knows no value (and so changes nothing).
    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// `text` with every known form of every value replaced by [`REDACTED`].
    pub fn redact(&self, text: &str) -> String {
        self.redact_cow(text).into_owned()
    }

    /// Like [`Self::redact`], but borrows `text` when it holds no secret, so large
    /// outputs without one (the common case) are scanned and never copied.
    pub fn redact_cow<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let Some(m) = &self.matcher else {
            return Cow::Borrowed(text);
        };
        let mut found = m.find_iter(text).peekable();
        if found.peek().is_none() {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for hit in found {
            out.push_str(&text[last..hit.start()]);
            out.push_str(REDACTED);
            last = hit.end();
        }
        out.push_str(&text[last..]);
        Cow::Owned(out)
    }

    /// Redacts, in place, every string and object key inside `value`.
    pub fn redact_json(&self, value: &mut serde_json::Value) {
        use serde_json::Value;
        if self.is_empty() {
            return;
        }
        match value {
            Value::String(s) => {
                if let Cow::Owned(r) = self.redact_cow(s) {
                    *s = r;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            Value::Object(map) => {
                let old = std::mem::take(map);
                for (k, mut v) in old {
                    self.redact_json(&mut v);
                    let k = match self.redact_cow(&k) {
                        Cow::Borrowed(_) => k,
                        Cow::Owned(r) => r,
                    };
                    map.insert(k, v);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    /// A redacted copy of `value`.
    pub fn redacted_json(&self, value: &serde_json::Value) -> serde_json::Value {
        let mut v = value.clone();
        self.redact_json(&mut v);
        v
    }
}

/// Every form of `v` that can show up in text, the value itself first (so a form that
/// equals the value, as percent-encoding does for plain letters, counts as plain).
fn forms(v: &str) -> Vec<(String, Encoding)> {
    let mut out = vec![(v.to_owned(), Encoding::Plain)];
    let bytes = v.as_bytes();
    for engine in [&STANDARD, &URL_SAFE] {
        out.push((engine.encode(bytes), Encoding::Base64));
    }
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        out.push((engine.encode(bytes), Encoding::Base64));
        // Inside a longer blob the value starts at byte offset 0, 1 or 2 of a 3-byte group;
        // the characters that encode only the value's bits are the same for each offset.
        for offset in 0..3 {
            let fragment = stable_fragment(engine, bytes, offset);
            if fragment.len() >= MIN_FRAGMENT {
                out.push((fragment, Encoding::Base64Fragment));
            }
        }
    }
    for set in [NON_ALPHANUMERIC, COMPONENT] {
        let encoded = utf8_percent_encode(v, set).to_string();
        out.push((lower_hex(&encoded), Encoding::PercentEncoded));
        out.push((encoded, Encoding::PercentEncoded));
    }
    let form = utf8_percent_encode(v, FORM).to_string().replace("%20", "+");
    out.push((lower_hex(&form), Encoding::PercentEncoded));
    out.push((form, Encoding::PercentEncoded));
    if let Ok(json) = serde_json::to_string(v) {
        out.push((json[1..json.len() - 1].to_owned(), Encoding::JsonEscaped));
    }
    out
}

/// The base64 characters that depend only on `v` when it follows `offset` other bytes.
fn stable_fragment(engine: &impl Engine, v: &[u8], offset: usize) -> String {
    let mut buf = vec![0u8; offset];
    buf.extend_from_slice(v);
    let encoded = engine.encode(&buf);
    let (start_bit, end_bit) = (8 * offset, 8 * (offset + v.len()));
    let first = start_bit.div_ceil(6);
    let last = end_bit / 6; // exclusive: chars whose 6 bits end at or before end_bit
    if last <= first {
        return String::new();
    }
    encoded[first..last].to_owned()
}

/// `%2F` -> `%2f`, leaving everything else alone.
fn lower_hex(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut hex_left = 0;
    for c in s.chars() {
        if c == '%' {
            hex_left = 2;
            out.push(c);
        } else if hex_left > 0 {
            hex_left -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    const TOKEN: &str = "ghp_S3cr3t/Tok+en=with spaces&more";

    #[test]
    fn every_form_is_redacted() {
        let r = Redactor::new([TOKEN]);
        let forms = [
            TOKEN.to_owned(),
            STANDARD.encode(TOKEN),
            STANDARD_NO_PAD.encode(TOKEN),
            URL_SAFE.encode(TOKEN),
            URL_SAFE_NO_PAD.encode(TOKEN),
            utf8_percent_encode(TOKEN, NON_ALPHANUMERIC).to_string(),
            lower_hex(&utf8_percent_encode(TOKEN, NON_ALPHANUMERIC).to_string()),
            utf8_percent_encode(TOKEN, COMPONENT).to_string(),
            "ghp_S3cr3t%2FTok%2Ben%3Dwith+spaces%26more".to_owned(),
        ];
        for form in forms {
            let out = r.redact(&format!("before {form} after"));
            assert_eq!(out, "before [redacted] after", "form {form:?}");
        }
    }

    #[test]
    fn value_inside_a_longer_base64_blob_is_redacted_at_every_offset() {
        let r = Redactor::new([TOKEN]);
        for prefix in ["", "a", "ab", "abc", "Authorization: Basic x-access-token:"] {
            let blob = STANDARD.encode(format!("{prefix}{TOKEN}!tail"));
            let out = r.redact(&blob);
            assert!(out.contains(REDACTED), "prefix {prefix:?}: {out}");
            assert!(STANDARD.decode(&out).is_err(), "still decodes: {out}");
        }
    }

    #[test]
    fn json_strings_and_keys_are_redacted_other_values_kept() {
        let r = Redactor::new(["hunter2hunter2"]);
        let v = json!({
            "output": "env: TOKEN=hunter2hunter2",
            "nested": [{"aHVudGVyMmh1bnRlcjI=": 1, "ok": true, "n": 3.5}],
            "url": "https://x/?t=hunter2hunter2",
        });
        let out = r.redacted_json(&v);
        let text = out.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("aHVudGVyMmh1bnRlcjI"), "{text}");
        assert_eq!(out["output"], "env: TOKEN=[redacted]");
        assert_eq!(out["nested"][0]["[redacted]"], 1);
        assert_eq!(out["nested"][0]["ok"], true);
        assert_eq!(out["nested"][0]["n"], 3.5);
    }

    #[test]
    fn json_escaped_value_is_redacted_in_serialised_text() {
        let secret = "a\"quote\\and\nnewline";
        let r = Redactor::new([secret]);
        let text = json!({"x": secret}).to_string();
        assert!(!r.redact(&text).contains("quote"), "{}", r.redact(&text));
    }

    #[test]
    fn empty_redactor_changes_nothing_and_debug_hides_values() {
        let r = Redactor::new(["", ""]);
        assert!(r.is_empty());
        assert_eq!(r.redact("hello"), "hello");
        let r = Redactor::new(["topsecretvalue"]);
        assert!(!format!("{r:?}").contains("topsecret"));
    }

    #[test]
    fn longest_form_wins_so_no_tail_is_left() {
        // Overlapping values: the longer one is replaced whole, not in pieces.
        let r = Redactor::new(["abcabcabc", "abc"]);
        assert_eq!(r.redact("xabcabcabcx"), "x[redacted]x");
    }

    #[test]
    fn text_without_a_secret_is_borrowed_not_copied() {
        let r = Redactor::new([TOKEN]);
        assert!(matches!(
            r.redact_cow("nothing secret here"),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            Redactor::default().redact_cow("x"),
            Cow::Borrowed(_)
        ));
        let text = format!("a {TOKEN} b {TOKEN}");
        let hit = r.redact_cow(&text);
        assert!(
            matches!(&hit, Cow::Owned(s) if s == "a [redacted] b [redacted]"),
            "{hit}"
        );
    }

    #[test]
    fn find_iter_names_the_label_and_the_encoding_of_every_form() {
        let r = Redactor::labelled([("DEPLOY_TOKEN", TOKEN), ("OTHER", "another-value-42")]);
        let percent = utf8_percent_encode(TOKEN, NON_ALPHANUMERIC).to_string();
        let json_escaped = "a\"quote\\and\nnewline";
        let r2 = Redactor::labelled([("JSONY", json_escaped)]);
        let cases = [
            (TOKEN.to_owned(), Encoding::Plain),
            (STANDARD.encode(TOKEN), Encoding::Base64),
            (URL_SAFE_NO_PAD.encode(TOKEN), Encoding::Base64),
            (lower_hex(&percent), Encoding::PercentEncoded),
            (percent, Encoding::PercentEncoded),
            (
                "ghp_S3cr3t%2FTok%2Ben%3Dwith+spaces%26more".to_owned(),
                Encoding::PercentEncoded,
            ),
        ];
        for (form, encoding) in cases {
            let text = format!("x = {form};");
            let found: Vec<_> = r.find_iter(text.as_bytes()).collect();
            assert_eq!(found.len(), 1, "{form:?}");
            assert_eq!(found[0].label, Some("DEPLOY_TOKEN"), "{form:?}");
            assert_eq!(found[0].encoding, encoding, "{form:?}");
            assert_eq!(&text[found[0].range.clone()], form, "{form:?}");
        }
        // Inside a longer base64 blob only the stable middle is there to find.
        let blob = STANDARD.encode(format!("ab{TOKEN}tail"));
        let found: Vec<_> = r.find_iter(blob.as_bytes()).collect();
        assert_eq!(found.len(), 1, "{blob}");
        assert_eq!(found[0].encoding, Encoding::Base64Fragment);
        // JSON escaping.
        let text = json!({"k": json_escaped}).to_string();
        let found: Vec<_> = r2.find_iter(text.as_bytes()).collect();
        assert_eq!(found.len(), 1, "{text}");
        assert_eq!(found[0].encoding, Encoding::JsonEscaped);
        assert_eq!(found[0].label, Some("JSONY"));
        // Several values, found in order; unlabelled values have no label; bytes that are
        // not UTF-8 around a value do not hide it.
        let mut bytes = b"\xff\x00 another-value-42 \xfe ".to_vec();
        bytes.extend_from_slice(TOKEN.as_bytes());
        let labels: Vec<_> = r.find_iter(&bytes).map(|m| m.label).collect();
        assert_eq!(labels, [Some("OTHER"), Some("DEPLOY_TOKEN")]);
        let plain = Redactor::new([TOKEN]);
        assert_eq!(
            plain.find_iter(TOKEN.as_bytes()).next().unwrap().label,
            None
        );
        assert_eq!(Redactor::default().find_iter(b"anything").count(), 0);
    }

    #[test]
    fn a_form_equal_to_the_value_counts_as_plain() {
        // Letters and digits percent-encode and JSON-escape to themselves.
        let r = Redactor::labelled([("T", "abcDEF123456")]);
        let m = r.find_iter(b"abcDEF123456").next().unwrap();
        assert_eq!(m.encoding, Encoding::Plain);
        assert_eq!(Encoding::Base64Fragment.to_string(), "base64_fragment");
    }

    proptest! {
        #[test]
        fn redact_cow_replaces_exactly_what_replace_all_does(
            values in proptest::collection::vec("[a-c]{1,4}", 1..4),
            text in "[a-d]{0,40}",
        ) {
            let r = Redactor::new(&values);
            let m = r.matcher.as_ref().expect("non-empty values");
            let expected = m.replace_all(&text, &vec![REDACTED; r.patterns]);
            prop_assert_eq!(r.redact_cow(&text).into_owned(), expected);
        }

        #[test]
        fn any_form_between_unrelated_text_becomes_exactly_one_marker(
            value in "[A-Za-z0-9_+/=%.~ -]{1,40}",
            prefix in "[#@!:;,]{0,10}",
            suffix in "[#@!:;,]{0,10}",
            which in 0usize..8,
        ) {
            let form = match which {
                0 => value.clone(),
                1 => STANDARD.encode(&value),
                2 => STANDARD_NO_PAD.encode(&value),
                3 => URL_SAFE.encode(&value),
                4 => URL_SAFE_NO_PAD.encode(&value),
                5 => utf8_percent_encode(&value, NON_ALPHANUMERIC).to_string(),
                6 => utf8_percent_encode(&value, COMPONENT).to_string(),
                _ => utf8_percent_encode(&value, FORM).to_string().replace("%20", "+"),
            };
            let r = Redactor::new([value.as_str()]);
            let out = r.redact(&format!("{prefix}{form}{suffix}"));
            prop_assert_eq!(out, format!("{prefix}{REDACTED}{suffix}"));
        }

        #[test]
        fn redacted_text_never_contains_the_value(
            value in "[ -~]{4,30}",
            text in "[ -~]{0,60}",
            at in 0usize..60,
        ) {
            let at = at.min(text.len());
            let input = format!("{}{}{}", &text[..at], value, &text[at..]);
            let r = Redactor::new([value.as_str()]);
            let out = r.redact(&input);
            // The marker itself may combine with neighbours into the value only if the
            // value overlaps "[redacted]"; otherwise no occurrence can survive.
            if !REDACTED.contains(value.as_str()) && !value.contains('[') && !value.contains(']') {
                prop_assert!(!out.contains(value.as_str()), "{:?} -> {:?}", input, out);
            }
        }
    }
}
