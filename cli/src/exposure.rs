//! Who may reach `pointflow local serve`: the local server takes unsigned
//! requests and, with `--backend aws`, writes to whatever table it is given,
//! so by default it listens on loopback only and answers only requests whose
//! `Host` header names loopback and its own port. The `Host` check defeats
//! DNS rebinding: a web page whose name is re-pointed to 127.0.0.1 can make
//! the browser send requests to the local port, but they still carry the
//! page's own name in `Host`.

use std::net::{IpAddr, SocketAddr};

/// The command-line flag that lifts both checks, named in their errors.
pub const ALLOW_REMOTE_FLAG: &str = "--allow-remote";

/// Whether the server may be reached from other machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Exposure {
    /// Loopback addresses only, and loopback `Host` headers only (the default).
    #[default]
    LoopbackOnly,
    /// Any address and any `Host`: the operator passed `--allow-remote`.
    Remote,
}

/// The listen address is not loopback and `--allow-remote` was not given.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "refusing to listen on {addr}: it is not a loopback address, and the local server takes unsigned \
     requests; use 127.0.0.1 or [::1], or pass {ALLOW_REMOTE_FLAG} if other machines must reach it"
)]
pub struct NotLoopback {
    /// The address asked for.
    pub addr: SocketAddr,
}

/// Checks the address `serve` is about to bind.
pub fn check_bind(addr: SocketAddr, exposure: Exposure) -> Result<(), NotLoopback> {
    match exposure {
        Exposure::Remote => Ok(()),
        Exposure::LoopbackOnly if addr.ip().is_loopback() => Ok(()),
        Exposure::LoopbackOnly => Err(NotLoopback { addr }),
    }
}

/// A request's `Host` header is not one the loopback server answers.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostRefused {
    #[error("the request has no Host header")]
    Missing,
    #[error(
        "Host {host:?} is not this server: it answers only localhost, 127.0.0.1 or [::1] on port {port} \
         (a foreign Host is how DNS rebinding reaches a loopback server; start it with {ALLOW_REMOTE_FLAG} \
         to serve other names)"
    )]
    Foreign {
        /// The header as received (truncated).
        host: String,
        /// The port the server is bound to.
        port: u16,
    },
}

/// Longest `Host` value echoed back in an error.
const MAX_ECHO: usize = 100;

/// Checks a request's `Host` header against the bound `port`: under
/// [`Exposure::LoopbackOnly`] it must name `localhost`, a 127.0.0.0/8
/// address or `[::1]`, with the bound port (no port means 80, as in HTTP).
pub fn check_host(host: Option<&str>, port: u16, exposure: Exposure) -> Result<(), HostRefused> {
    if exposure == Exposure::Remote {
        return Ok(());
    }
    let host = host.ok_or(HostRefused::Missing)?;
    let foreign = || HostRefused::Foreign {
        host: host.chars().take(MAX_ECHO).collect(),
        port,
    };
    let (name, host_port) = split_host(host).ok_or_else(foreign)?;
    if host_port != port || !is_loopback_name(name) {
        return Err(foreign());
    }
    Ok(())
}

/// Splits `name[:port]` or `[v6][:port]`; `None` if the port is malformed.
fn split_host(host: &str) -> Option<(&str, u16)> {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        match after {
            "" => (inside, None),
            _ => (inside, Some(after.strip_prefix(':')?)),
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    let port = match port {
        None => 80,
        // `u16::from_str` accepts a leading '+', which no Host header carries.
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
        Some(_) => return None,
    };
    Some((name, port))
}

fn is_loopback_name(name: &str) -> bool {
    // A trailing dot is the same DNS name, and still resolves to loopback.
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn binding_beyond_loopback_needs_the_flag_and_the_error_names_it() {
        assert_eq!(check_bind(addr("127.0.0.1:3000"), Exposure::LoopbackOnly), Ok(()));
        assert_eq!(check_bind(addr("127.0.0.2:3000"), Exposure::LoopbackOnly), Ok(()));
        assert_eq!(check_bind(addr("[::1]:3000"), Exposure::LoopbackOnly), Ok(()));
        for remote in ["0.0.0.0:3000", "[::]:3000", "192.168.1.20:3000"] {
            let err = check_bind(addr(remote), Exposure::LoopbackOnly).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(ALLOW_REMOTE_FLAG), "{text}");
            assert!(text.contains(remote), "{text}");
            assert_eq!(check_bind(addr(remote), Exposure::Remote), Ok(()));
        }
    }

    #[test]
    fn loopback_hosts_on_the_bound_port_pass() {
        for host in [
            "localhost:3000",
            "LOCALHOST:3000",
            "localhost.:3000",
            "127.0.0.1:3000",
            "127.1.2.3:3000",
            "[::1]:3000",
        ] {
            assert_eq!(check_host(Some(host), 3000, Exposure::LoopbackOnly), Ok(()), "{host}");
        }
        assert_eq!(check_host(Some("localhost"), 80, Exposure::LoopbackOnly), Ok(()));
        assert_eq!(check_host(Some("[::1]"), 80, Exposure::LoopbackOnly), Ok(()));
    }

    #[test]
    fn foreign_names_other_ports_and_malformed_hosts_are_refused() {
        for host in [
            "evil.example:3000",
            "localhost.evil.example:3000",
            "192.168.1.20:3000",
            "0.0.0.0:3000",
            "localhost:3001",
            "localhost",
            "127.0.0.1",
            "localhost:+3000",
            "localhost:",
            "[::1]3000",
            "[::1:3000",
            "",
        ] {
            let err = check_host(Some(host), 3000, Exposure::LoopbackOnly).unwrap_err();
            assert!(
                matches!(err, HostRefused::Foreign { port: 3000, .. }),
                "{host}: {err:?}"
            );
            assert!(err.to_string().contains(ALLOW_REMOTE_FLAG));
        }
        assert_eq!(
            check_host(None, 3000, Exposure::LoopbackOnly),
            Err(HostRefused::Missing)
        );
    }

    #[test]
    fn the_flag_accepts_any_host() {
        assert_eq!(check_host(Some("evil.example"), 3000, Exposure::Remote), Ok(()));
        assert_eq!(check_host(None, 3000, Exposure::Remote), Ok(()));
    }

    #[test]
    fn a_long_host_is_echoed_truncated() {
        let host = "a".repeat(5000);
        match check_host(Some(&host), 3000, Exposure::LoopbackOnly) {
            Err(HostRefused::Foreign { host, .. }) => assert_eq!(host.len(), MAX_ECHO),
            other => panic!("{other:?}"),
        }
    }
}
