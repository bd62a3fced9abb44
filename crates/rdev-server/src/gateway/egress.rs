//! The egress proxy: an HTTP `CONNECT` tunnel (the sandbox's `HTTPS_PROXY`) to the hosts
//! a project allows (`network_allow`, `host:port`). The caller authenticates with its
//! attempt's token as the proxy password. The target must be a host *name* on the attempt's
//! allow-list; it is resolved here, outside the sandbox, and refused when any address it
//! resolves to is loopback, private, link-local (cloud metadata included), shared, multicast
//! or unspecified, unless the operator allowed that address (`gateway.egress_allow_addresses`).
//! Every CONNECT, allowed or not, is a task event. Only tunnels: plain-HTTP proxying is not
//! offered. It never reads what flows through a tunnel.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use axum::{
    body::Body,
    extract::Request,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};
use base64::Engine;
use hyper_util::rt::TokioIo;

use super::Gateway;

/// The proxy password (or, with an empty password, the user name) of a
/// `Proxy-Authorization: Basic` header.
fn proxy_token(request: &Request) -> Option<String> {
    let value = request
        .headers()
        .get(header::PROXY_AUTHORIZATION)?
        .to_str()
        .ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':').unwrap_or((&text, ""));
    Some(if password.is_empty() { user } else { password }.to_owned())
}

/// Whether `ip` lies in a range an agent must never reach through the proxy.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || (first == 0x64 && v6.segments()[1] == 0xff9b) // NAT64 to anything
                || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) // AWS metadata
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16, cloud metadata
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || a >= 240
}

/// Where a CONNECT to `host:port` may go for `allow`, or why not.
pub async fn decide(
    gw: &Gateway,
    allow: &[(String, u16)],
    host: &str,
    port: u16,
) -> Result<SocketAddr, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<IpAddr>().is_ok() {
        return Err("an IP address: only allow-listed host names are reached".into());
    }
    let host = host.to_ascii_lowercase();
    if !allow.iter().any(|(h, p)| *h == host && *p == port) {
        return Err(format!(
            "{host}:{port} is not in the project's network_allow"
        ));
    }
    let settings = &gw.inner.settings;
    let addresses: Vec<SocketAddr> = match settings.egress_hosts.get(&host) {
        Some(ip) => vec![SocketAddr::new(*ip, port)],
        None => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .collect(),
    };
    let allowed_anyway = |ip: IpAddr| settings.egress_allow_addresses.contains(&ip);
    // One forbidden answer refuses the name: a name that resolves to public and private
    // addresses at once is how DNS rebinding looks.
    if let Some(bad) = addresses
        .iter()
        .find(|a| is_forbidden(a.ip()) && !allowed_anyway(a.ip()))
    {
        return Err(format!(
            "{host} resolves to {}, a loopback, private, link-local or reserved address",
            bad.ip()
        ));
    }
    addresses
        .first()
        .copied()
        .ok_or_else(|| format!("{host} resolves to no address"))
}

fn refuse(status: StatusCode, reason: &str) -> Response {
    (status, format!("rdev egress proxy: {reason}\n")).into_response()
}

/// Handles one `CONNECT`.
pub async fn connect(gw: Gateway, mut request: Request) -> Response {
    let grant = match gw
        .inner
        .grants
        .authenticate(proxy_token(&request).as_deref(), None)
    {
        Ok(g) => g,
        Err(_) => {
            let mut r = refuse(
                StatusCode::PROXY_AUTHENTICATION_REQUIRED,
                "the run's token is the proxy password",
            );
            r.headers_mut().insert(
                header::PROXY_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"rdev\""),
            );
            return r;
        }
    };
    let Some(authority) = request.uri().authority().cloned() else {
        return refuse(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    let (host, port) = (
        authority.host().to_owned(),
        authority.port_u16().unwrap_or(443),
    );
    let decision = decide(&gw, &grant.spec.network_allow, &host, port).await;
    let connected = match decision {
        Ok(addr) => {
            let timeout = gw.inner.settings.connect_timeout;
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    Ok((addr, stream))
                }
                Ok(Err(e)) => Err(format!("cannot connect to {addr}: {e}")),
                Err(_) => Err(format!("cannot connect to {addr}: timed out")),
            }
        }
        Err(reason) => Err(reason),
    };
    let (outcome, reason) = match &connected {
        Ok((addr, _)) => ("allowed", addr.to_string()),
        Err(reason) => ("refused", reason.clone()),
    };
    tracing::info!(%host, port, outcome, %reason, "egress CONNECT");
    gw.inner.metrics.egress(outcome);
    gw.event(
        &grant,
        "egress",
        serde_json::json!({"host": host, "port": port, "outcome": outcome, "detail": reason}),
    );
    let (_, mut upstream) = match connected {
        Ok(c) => c,
        Err(reason) => return refuse(StatusCode::FORBIDDEN, &reason),
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
            Err(e) => tracing::debug!(error = %e, "egress tunnel was not upgraded"),
        }
    });
    Response::new(Body::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_link_local_and_metadata_addresses_are_forbidden() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "fc00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(is_forbidden(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "2606:2800:220:1:248:1893:25c8:1946",
            "8.8.8.8",
        ] {
            assert!(!is_forbidden(ip.parse().unwrap()), "{ip}");
        }
    }
}
