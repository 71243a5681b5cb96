//! Who may use the API, and from where: the token, browser sessions opened
//! by one-time login links, and the `Host` check against DNS rebinding.
//!
//! A web page open in an officer's browser can send requests to the node's
//! loopback address, and a rebinding host name can make the browser treat
//! the answers as the page's own. So every request must name the node
//! itself in `Host` (an IP address, `localhost`, or a name listed in
//! `api.hosts`), every data read needs the token or a session cookie, and
//! every write needs the token (sessions read only, so no cross-site form
//! can write). The static page and its assets hold no data and are served
//! to anyone who passes the host check.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::{HeaderMap, header};

use super::error::ApiError;

/// How long a login link can be used, once.
pub const LOGIN_LINK_MS: i64 = 5 * 60 * 1000;
/// How long a browser session lasts.
pub const SESSION_MS: i64 = 12 * 60 * 60 * 1000;
/// Login links waiting to be used at once (older ones are dropped).
pub const MAX_PENDING_LINKS: usize = 16;
/// Browser sessions open at once (the oldest is closed beyond).
pub const MAX_SESSIONS: usize = 64;
/// Pending login codes and open sessions, both bounded and expiring. Kept
/// in memory: a restart of the node closes every session.
#[derive(Debug)]
pub struct Logins {
    inner: Mutex<LoginsInner>,
    /// The session cookie's name: it names the API's port, since browsers
    /// share cookies between the ports of one host (the demo runs five
    /// nodes on 127.0.0.1).
    cookie: String,
}

#[derive(Debug, Default)]
struct LoginsInner {
    /// Code → expiry (ms).
    links: HashMap<String, i64>,
    /// Session id → expiry (ms).
    sessions: HashMap<String, i64>,
}

impl LoginsInner {
    fn expire(&mut self, now: i64) {
        self.links.retain(|_, until| *until > now);
        self.sessions.retain(|_, until| *until > now);
    }
}

fn evict_oldest(map: &mut HashMap<String, i64>, keep: usize) {
    while map.len() >= keep {
        let Some(oldest) = map.iter().min_by_key(|(_, until)| **until).map(|(k, _)| k.clone()) else { break };
        map.remove(&oldest);
    }
}

impl Logins {
    /// The logins of the API listening on `port`.
    pub fn new(port: u16) -> Self {
        Self { inner: Mutex::default(), cookie: format!("passerelle_session_{port}") }
    }

    /// The session cookie's name.
    pub fn cookie(&self) -> &str {
        &self.cookie
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LoginsInner> {
        // A panic while holding the lock leaves plain maps behind: still usable.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new one-time login code, valid [`LOGIN_LINK_MS`].
    pub fn new_link(&self, now: i64) -> (String, i64) {
        let code = hex::encode(crate::clock::random_bytes::<24>());
        let until = now + LOGIN_LINK_MS;
        let mut inner = self.lock();
        inner.expire(now);
        evict_oldest(&mut inner.links, MAX_PENDING_LINKS);
        inner.links.insert(code.clone(), until);
        (code, until)
    }

    /// Uses a login code: a new session id if the code is known and fresh
    /// (it cannot be used again).
    pub fn redeem(&self, code: &str, now: i64) -> Option<String> {
        let mut inner = self.lock();
        inner.expire(now);
        inner.links.remove(code)?;
        let session = hex::encode(crate::clock::random_bytes::<32>());
        evict_oldest(&mut inner.sessions, MAX_SESSIONS);
        inner.sessions.insert(session.clone(), now + SESSION_MS);
        Some(session)
    }

    /// Whether a session id is open.
    pub fn is_open(&self, session: &str, now: i64) -> bool {
        let mut inner = self.lock();
        inner.expire(now);
        inner.sessions.contains_key(session)
    }

    /// Closes a session.
    pub fn close(&self, session: &str) {
        self.lock().sessions.remove(session);
    }
}

/// Compares in constant time, so a secret cannot be guessed byte by byte.
pub fn same_secret(given: &str, expected: &str) -> bool {
    given.len() == expected.len() && given.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// The bearer token a request presents, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
}

/// The session cookie named `name` a request presents, if any.
pub fn session_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
}

/// Checks `Host`: an IP address (v4, or v6 in brackets), `localhost`, or
/// one of `allowed` (names from `api.hosts`), with any port. A host name
/// the operator did not list is what DNS rebinding needs, so it is refused.
///
/// # Errors
/// 403 `wrong_host` (or 400 when `Host` is absent) with the reason.
pub fn check_host(headers: &HeaderMap, allowed: &[String]) -> Result<(), ApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::bad_request("the request has no Host header"))?;
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, _)) if v6.parse::<std::net::Ipv6Addr>().is_ok() => return Ok(()),
            _ => host,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name.parse::<std::net::Ipv4Addr>().is_ok()
        || name == "localhost"
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(&name))
    {
        return Ok(());
    }
    Err(ApiError::new(
        axum::http::StatusCode::FORBIDDEN,
        "wrong_host",
        format!(
            "this node does not answer to the host name {name:?}: use its IP address or localhost, \
             or list the name in api.hosts in config.toml"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn with(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn hosts_are_addresses_localhost_or_listed_names() {
        let listed = vec!["passerelle.senneval.be".to_owned()];
        for ok in
            ["127.0.0.1:7420", "10.0.0.5", "[::1]:7420", "localhost:7420", "LOCALHOST", "passerelle.senneval.be:7420"]
        {
            assert!(check_host(&with(header::HOST, ok), &listed).is_ok(), "{ok}");
        }
        for bad in ["attacker.example:7420", "127.0.0.1.attacker.example", "[evil]:80", "localhost.evil:7420"] {
            let e = check_host(&with(header::HOST, bad), &listed).unwrap_err();
            assert_eq!(e.code(), "wrong_host", "{bad}");
        }
        assert!(check_host(&HeaderMap::new(), &listed).is_err());
    }

    #[test]
    fn a_login_link_opens_one_session_once_and_sessions_expire() {
        let logins = Logins::new(7420);
        let (code, until) = logins.new_link(1_000);
        assert_eq!(until, 1_000 + LOGIN_LINK_MS);
        let session = logins.redeem(&code, 2_000).expect("a fresh code opens a session");
        assert!(logins.redeem(&code, 2_001).is_none(), "a code works once");
        assert!(logins.is_open(&session, 3_000));
        assert!(!logins.is_open(&session, 2_000 + SESSION_MS + 1), "sessions expire");
        let (late, _) = logins.new_link(10_000);
        assert!(logins.redeem(&late, 10_000 + LOGIN_LINK_MS + 1).is_none(), "links expire");
        let s = logins.redeem(&logins.new_link(20_000).0, 20_000).unwrap();
        logins.close(&s);
        assert!(!logins.is_open(&s, 20_001));
    }

    #[test]
    fn links_and_sessions_are_bounded() {
        let logins = Logins::new(7420);
        let codes: Vec<String> = (0..MAX_PENDING_LINKS as i64 + 5).map(|i| logins.new_link(i).0).collect();
        assert!(logins.redeem(&codes[0], 100).is_none(), "the oldest link was dropped");
        assert!(logins.redeem(codes.last().unwrap(), 100).is_some());
        let sessions: Vec<String> = (0..MAX_SESSIONS as i64 + 3)
            .map(|i| logins.redeem(&logins.new_link(200 + i).0, 200 + i).unwrap())
            .collect();
        assert!(!logins.is_open(&sessions[0], 500));
        assert!(logins.is_open(sessions.last().unwrap(), 500));
    }

    #[test]
    fn cookies_and_tokens_are_read_from_headers() {
        let name = Logins::new(7420).cookie().to_owned();
        assert_eq!(name, "passerelle_session_7420");
        assert_eq!(session_cookie(&with(header::COOKIE, "a=b; passerelle_session_7420=abc; c=d"), &name), Some("abc"));
        assert_eq!(session_cookie(&with(header::COOKIE, "passerelle_session_7421=abc"), &name), None);
        assert_eq!(bearer(&with(header::AUTHORIZATION, "Bearer xyz")), Some("xyz"));
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("ab", "abc"));
    }
}
