//! Who is on the other end: the client's address (from the socket, or from
//! `X-Forwarded-For` only when the socket peer is a trusted proxy) and user agent.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{HeaderMap, header, request::Parts},
};
use ipnet::IpNet;

use super::AppState;
use crate::{audit::Source, config::Config};

/// The request's [`Source`], for audit rows.
pub struct ClientSource(pub Source);

impl FromRequestParts<AppState> for ClientSource {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(ClientSource(source_of(parts, &state.config)))
    }
}

pub fn source_of(parts: &Parts, config: &Config) -> Source {
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ci| ci.0.ip());
    let ip = peer.map(|p| client_ip(p, &parts.headers, &config.trusted_proxies));
    let ua = parts.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok());
    Source::new(ip, ua)
}

/// The client address. Behind trusted proxies, `X-Forwarded-For` is read from the
/// right, skipping trusted hops; the first untrusted address is the client. A
/// malformed entry stops the walk at the last address we could trust.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| is_trusted_proxy(*ip, trusted);
    if !is_trusted(&peer) {
        return canonical(peer);
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else { break };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    canonical(client)
}

/// Whether `ip` is one of `FORTIFILE_TRUSTED_PROXIES`.
pub fn is_trusted_proxy(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&canonical(ip)))
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) as plain IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    #[test]
    fn an_untrusted_peer_cannot_claim_another_address() {
        let ip = client_ip("203.0.113.9".parse().unwrap(), &xff("1.2.3.4"), &[]);
        assert_eq!(ip.to_string(), "203.0.113.9");
    }

    #[test]
    fn behind_a_trusted_proxy_the_first_untrusted_hop_from_the_right_is_the_client() {
        let trusted = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = client_ip("10.0.0.2".parse().unwrap(), &xff("6.6.6.6, 198.51.100.7, 10.0.0.5"), &trusted);
        assert_eq!(ip.to_string(), "198.51.100.7", "the spoofed leftmost entry is ignored");
    }

    #[test]
    fn a_malformed_hop_stops_the_walk() {
        let trusted = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = client_ip("10.0.0.2".parse().unwrap(), &xff("1.1.1.1, garbage"), &trusted);
        assert_eq!(ip.to_string(), "10.0.0.2");
    }
}
