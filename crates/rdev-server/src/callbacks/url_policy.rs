//! Which callback URLs rdev will POST to. Only `http`/`https` URLs without credentials; and,
//! unless configuration allows private targets, never loopback, private, link-local or
//! otherwise internal addresses (an SSRF guard). [`check_url`] runs when a build is accepted
//! (literal IPs and `localhost` names); [`is_public_ip`] is applied again to the resolved
//! addresses at delivery time, so a DNS name pointing inside is refused as well.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rdev_core::ErrorCode;
use url::{Host, Url};

/// A callback URL rdev will not call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackUrlError {
    #[error("callback_url is not a valid URL: {0}")]
    Invalid(String),
    #[error("callback_url must use http or https, not {0:?}")]
    Scheme(String),
    #[error("callback_url must not contain credentials")]
    Credentials,
    #[error("callback_url points to a private or loopback address ({0}); set allow_private_callbacks to allow it")]
    Private(String),
}

impl ErrorCode for CallbackUrlError {
    fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid_callback_url",
            Self::Scheme(_) => "invalid_callback_url_scheme",
            Self::Credentials => "callback_url_has_credentials",
            Self::Private(_) => "private_callback_url",
        }
    }
}

/// Parses and checks a callback URL.
pub fn check_url(raw: &str, allow_private: bool) -> Result<Url, CallbackUrlError> {
    let url = Url::parse(raw).map_err(|e| CallbackUrlError::Invalid(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(CallbackUrlError::Scheme(url.scheme().to_owned()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(CallbackUrlError::Credentials);
    }
    let host = url
        .host()
        .ok_or_else(|| CallbackUrlError::Invalid("no host".into()))?;
    if !allow_private {
        let private = match &host {
            Host::Ipv4(ip) => !is_public_ip(IpAddr::V4(*ip)),
            Host::Ipv6(ip) => !is_public_ip(IpAddr::V6(*ip)),
            Host::Domain(d) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                d == "localhost" || d.ends_with(".localhost") || d.ends_with(".internal")
            }
        };
        if private {
            return Err(CallbackUrlError::Private(host.to_string()));
        }
    }
    Ok(url)
}

/// Whether `ip` is a globally routable unicast address.
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            is_public_v6(v6)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (64..128).contains(&o[1])) // 100.64/10 shared (CGNAT)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0/24 protocol assignments
        || (o[0] == 198 && (18..20).contains(&o[1])) // 198.18/15 benchmarking
        || o[0] >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x64 && s[1] == 0xff9b)) // NAT64 may reach private v4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_https_urls_pass() {
        for u in [
            "https://bot.example.com/cb",
            "http://93.184.216.34:8080/x",
            "https://[2606:4700::1111]/",
        ] {
            assert!(check_url(u, false).is_ok(), "{u}");
        }
    }

    #[test]
    fn private_and_loopback_targets_are_refused_unless_allowed() {
        for u in [
            "http://127.0.0.1/cb",
            "http://localhost:9000/cb",
            "http://api.localhost/cb",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "http://[::1]/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://[::ffff:127.0.0.1]/",
        ] {
            let err = check_url(u, false).unwrap_err();
            assert_eq!(err.code(), "private_callback_url", "{u}: {err}");
            assert!(check_url(u, true).is_ok(), "{u} allowed when configured");
        }
    }

    #[test]
    fn bad_schemes_credentials_and_garbage_are_refused() {
        assert_eq!(
            check_url("ftp://example.com/", false).unwrap_err().code(),
            "invalid_callback_url_scheme"
        );
        assert_eq!(
            check_url("file:///etc/passwd", true).unwrap_err().code(),
            "invalid_callback_url_scheme"
        );
        assert_eq!(
            check_url("https://u:p@example.com/", false)
                .unwrap_err()
                .code(),
            "callback_url_has_credentials"
        );
        assert_eq!(
            check_url("not a url", false).unwrap_err().code(),
            "invalid_callback_url"
        );
    }
}
