//! The fields of a Messages request the gateway reads (`model`, `max_tokens`, `stream`),
//! parsed from the whole body by `serde_json`. An invalid body has none of the fields: it
//! is forwarded as it is, and the upstream answers it.

use serde::Deserialize;

/// The fields of a Messages request the gateway needs; everything else is passed on.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
pub struct RequestFields {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub stream: Option<bool>,
}

impl RequestFields {
    /// The fields of a whole body (none when it is not a valid request).
    pub fn parse(body: &[u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_default()
    }
}
