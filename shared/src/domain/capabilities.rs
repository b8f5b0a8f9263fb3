//! Who may call what: the API's routes, the capability each needs, and the
//! check that a request reached the handler with the identity its stack's
//! authorization mode demands.
//!
//! API Gateway authorizes (IAM evaluates the caller's policies against the
//! route's `execute-api:Invoke` ARN before the function runs); the three
//! managed policies of `template.yaml` grant exactly the routes of one
//! capability each, and a template test holds them to [`ROUTES`]. The
//! handler cannot see a caller's policies, so what it checks is the part it
//! can see: that API Gateway did authenticate the request the way the stack
//! says it must ([`check_caller`]), in case a route was ever left without
//! authorization.

use std::fmt;
use std::str::FromStr;

/// A set of routes granted together, one IAM managed policy each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    /// A CRM back-end: submit campaigns and follow their jobs.
    Submit,
    /// Support and reporting: balances, histories, jobs.
    Read,
    /// An operator: uses, reversals, job cancels (and, outside the API, the
    /// dead-letter queues).
    Operate,
}

impl Capability {
    /// Every capability, in the order the docs list them.
    pub const ALL: [Capability; 3] = [Capability::Submit, Capability::Read, Capability::Operate];

    /// The name used in the template (`SubmitPolicyArn`…) and the docs.
    pub fn name(self) -> &'static str {
        match self {
            Capability::Submit => "submit",
            Capability::Read => "read",
            Capability::Operate => "operate",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One route of the HTTP API and the capabilities that may call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Upper-case HTTP method.
    pub method: &'static str,
    /// Path template as API Gateway declares it: `/v1/jobs/{job_id}`.
    pub path: &'static str,
    /// The capabilities granted this route (never empty).
    pub capabilities: &'static [Capability],
}

use Capability::{Operate, Read, Submit};

/// Every route of the API with its capabilities: the one table the
/// template's policies, the docs' matrix and the tests are held to.
pub const ROUTES: &[Route] = &[
    Route {
        method: "POST",
        path: "/v1/jobs",
        capabilities: &[Submit],
    },
    Route {
        method: "GET",
        path: "/v1/jobs",
        capabilities: &[Submit, Read],
    },
    Route {
        method: "GET",
        path: "/v1/jobs/{job_id}",
        capabilities: &[Submit, Read],
    },
    Route {
        method: "POST",
        path: "/v1/jobs/{job_id}/cancel",
        capabilities: &[Operate],
    },
    Route {
        method: "GET",
        path: "/v1/members/{member_id}/balances",
        capabilities: &[Read],
    },
    Route {
        method: "GET",
        path: "/v1/members/{member_id}/ledger",
        capabilities: &[Read],
    },
    Route {
        method: "POST",
        path: "/v1/members/{member_id}/uses",
        capabilities: &[Operate],
    },
    Route {
        method: "POST",
        path: "/v1/reversals",
        capabilities: &[Operate],
    },
    Route {
        method: "POST",
        path: "/v1/uploads",
        capabilities: &[Submit],
    },
];

impl Route {
    /// Whether `capability` may call this route.
    pub fn allows(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability)
    }

    /// The tail of the route's `execute-api` ARN after the stage,
    /// `POST/v1/jobs/*/cancel`: each path parameter becomes `*`, as an IAM
    /// policy names every value of it.
    pub fn invoke_arn_tail(&self) -> String {
        let path: Vec<&str> = self
            .path
            .split('/')
            .map(|segment| if is_parameter(segment) { "*" } else { segment })
            .collect();
        format!("{}{}", self.method, path.join("/"))
    }

    /// Whether a concrete request (`GET`, `/v1/jobs/abc`) is this route.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        if !self.method.eq_ignore_ascii_case(method) {
            return false;
        }
        let template: Vec<&str> = self.path.trim_matches('/').split('/').collect();
        let concrete: Vec<&str> = path.trim_matches('/').split('/').collect();
        template.len() == concrete.len()
            && template
                .iter()
                .zip(&concrete)
                .all(|(t, c)| if is_parameter(t) { !c.is_empty() } else { t == c })
    }
}

fn is_parameter(segment: &str) -> bool {
    segment.starts_with('{') && segment.ends_with('}')
}

/// The route a request is, if any.
pub fn route_for(method: &str, path: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|route| route.matches(method, path))
}

/// How the deployed API authenticates callers (template parameter
/// `AuthMode`, function variable `AUTH_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// SigV4-signed requests, authorized by IAM per route (the default).
    #[default]
    Iam,
    /// The API key alone: anyone holding it may call every route.
    ApiKey,
}

impl AuthMode {
    /// The parameter value: `iam` or `api-key`.
    pub fn name(self) -> &'static str {
        match self {
            AuthMode::Iam => "iam",
            AuthMode::ApiKey => "api-key",
        }
    }
}

/// An `AUTH_MODE` value that is neither `iam` nor `api-key`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("authorization mode must be iam or api-key, got {0:?}")]
pub struct UnknownAuthMode(pub String);

impl FromStr for AuthMode {
    type Err = UnknownAuthMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "iam" => Ok(AuthMode::Iam),
            "api-key" => Ok(AuthMode::ApiKey),
            other => Err(UnknownAuthMode(other.to_owned())),
        }
    }
}

/// What API Gateway says it authenticated, from the request context
/// (`requestContext.identity`): only the fields authorization looks at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallerContext<'a> {
    /// `userArn`: the IAM principal of a SigV4-signed request.
    pub user_arn: Option<&'a str>,
    /// `caller`: the principal id of a SigV4-signed request.
    pub caller: Option<&'a str>,
    /// `apiKeyId`: the API key a request carried, on a method requiring one.
    pub api_key_id: Option<&'a str>,
}

/// A request whose context lacks the identity the mode requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallerRefused {
    #[error(
        "the request carries no IAM caller identity (requestContext.identity.userArn or caller): \
         this API answers only SigV4-signed requests that API Gateway authorized"
    )]
    NoIamIdentity,
    #[error(
        "the request carries no API key id (requestContext.identity.apiKeyId): \
         this API answers only requests with a valid x-api-key"
    )]
    NoApiKeyId,
}

impl CallerRefused {
    /// A stable machine-readable code.
    pub fn code(self) -> &'static str {
        match self {
            CallerRefused::NoIamIdentity => "missing_iam_identity",
            CallerRefused::NoApiKeyId => "missing_api_key_id",
        }
    }
}

/// Refuses a request API Gateway did not authenticate as `mode` requires:
/// in `iam` mode a principal (`userArn` or `caller`), in `api-key` mode an
/// API key id. Empty strings count as absent.
pub fn check_caller(mode: AuthMode, caller: &CallerContext<'_>) -> Result<(), CallerRefused> {
    let present = |v: Option<&str>| v.is_some_and(|v| !v.trim().is_empty());
    match mode {
        AuthMode::Iam if present(caller.user_arn) || present(caller.caller) => Ok(()),
        AuthMode::Iam => Err(CallerRefused::NoIamIdentity),
        AuthMode::ApiKey if present(caller.api_key_id) => Ok(()),
        AuthMode::ApiKey => Err(CallerRefused::NoApiKeyId),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_a_capability_and_appears_once() {
        for (i, route) in ROUTES.iter().enumerate() {
            assert!(!route.capabilities.is_empty(), "{route:?}");
            assert!(route.path.starts_with("/v1/"), "{route:?}");
            assert_eq!(route.method, route.method.to_ascii_uppercase());
            for other in &ROUTES[i + 1..] {
                assert!(
                    (route.method, route.path) != (other.method, other.path),
                    "{route:?} twice"
                );
            }
        }
    }

    #[test]
    fn the_capabilities_are_the_issue_s_table() {
        let of = |c: Capability| -> Vec<String> {
            ROUTES
                .iter()
                .filter(|r| r.allows(c))
                .map(|r| format!("{} {}", r.method, r.path))
                .collect()
        };
        assert_eq!(
            of(Submit),
            [
                "POST /v1/jobs",
                "GET /v1/jobs",
                "GET /v1/jobs/{job_id}",
                "POST /v1/uploads"
            ]
        );
        assert_eq!(
            of(Read),
            [
                "GET /v1/jobs",
                "GET /v1/jobs/{job_id}",
                "GET /v1/members/{member_id}/balances",
                "GET /v1/members/{member_id}/ledger"
            ]
        );
        assert_eq!(
            of(Operate),
            [
                "POST /v1/jobs/{job_id}/cancel",
                "POST /v1/members/{member_id}/uses",
                "POST /v1/reversals"
            ]
        );
    }

    #[test]
    fn a_path_parameter_is_a_star_in_the_invoke_arn() {
        let tails: Vec<String> = ROUTES.iter().map(Route::invoke_arn_tail).collect();
        assert_eq!(
            tails,
            [
                "POST/v1/jobs",
                "GET/v1/jobs",
                "GET/v1/jobs/*",
                "POST/v1/jobs/*/cancel",
                "GET/v1/members/*/balances",
                "GET/v1/members/*/ledger",
                "POST/v1/members/*/uses",
                "POST/v1/reversals",
                "POST/v1/uploads"
            ]
        );
    }

    #[test]
    fn a_request_finds_its_route() {
        let found = |m: &str, p: &str| route_for(m, p).map(|r| (r.method, r.path));
        assert_eq!(found("POST", "/v1/jobs"), Some(("POST", "/v1/jobs")));
        assert_eq!(found("get", "/v1/jobs/"), Some(("GET", "/v1/jobs")));
        assert_eq!(found("GET", "/v1/jobs/j-1"), Some(("GET", "/v1/jobs/{job_id}")));
        assert_eq!(
            found("POST", "/v1/jobs/j-1/cancel"),
            Some(("POST", "/v1/jobs/{job_id}/cancel"))
        );
        assert_eq!(
            found("GET", "/v1/members/m-1/ledger"),
            Some(("GET", "/v1/members/{member_id}/ledger"))
        );
        assert_eq!(found("DELETE", "/v1/jobs/j-1"), None);
        assert_eq!(found("GET", "/v1/jobs/j-1/cancel"), None);
        assert_eq!(found("GET", "/v1/members//ledger"), None);
        assert_eq!(found("GET", "/v2/jobs"), None);
    }

    #[test]
    fn the_mode_is_iam_or_api_key() {
        assert_eq!("iam".parse(), Ok(AuthMode::Iam));
        assert_eq!("api-key".parse(), Ok(AuthMode::ApiKey));
        assert_eq!(AuthMode::default(), AuthMode::Iam);
        let bad = "IAM".parse::<AuthMode>().unwrap_err();
        assert_eq!(
            bad.to_string(),
            "authorization mode must be iam or api-key, got \"IAM\""
        );
        for mode in [AuthMode::Iam, AuthMode::ApiKey] {
            assert_eq!(mode.name().parse(), Ok(mode));
        }
    }

    #[test]
    fn iam_mode_needs_a_principal_and_api_key_mode_a_key_id() {
        let signed = CallerContext {
            user_arn: Some("arn:aws:iam::123456789012:user/crm"),
            caller: Some("AIDAEXAMPLE"),
            api_key_id: Some("k1"),
        };
        let caller_only = CallerContext {
            caller: Some("AROAEXAMPLE:session"),
            ..CallerContext::default()
        };
        let key_only = CallerContext {
            api_key_id: Some("k1"),
            ..CallerContext::default()
        };
        let blank = CallerContext {
            user_arn: Some(""),
            caller: Some(" "),
            api_key_id: Some(""),
        };
        let none = CallerContext::default();

        assert_eq!(check_caller(AuthMode::Iam, &signed), Ok(()));
        assert_eq!(check_caller(AuthMode::Iam, &caller_only), Ok(()));
        assert_eq!(
            check_caller(AuthMode::Iam, &key_only),
            Err(CallerRefused::NoIamIdentity)
        );
        assert_eq!(check_caller(AuthMode::Iam, &blank), Err(CallerRefused::NoIamIdentity));
        assert_eq!(check_caller(AuthMode::Iam, &none), Err(CallerRefused::NoIamIdentity));

        assert_eq!(check_caller(AuthMode::ApiKey, &key_only), Ok(()));
        assert_eq!(check_caller(AuthMode::ApiKey, &signed), Ok(()));
        assert_eq!(
            check_caller(AuthMode::ApiKey, &caller_only),
            Err(CallerRefused::NoApiKeyId)
        );
        assert_eq!(check_caller(AuthMode::ApiKey, &blank), Err(CallerRefused::NoApiKeyId));
        assert_eq!(check_caller(AuthMode::ApiKey, &none), Err(CallerRefused::NoApiKeyId));
        assert_eq!(CallerRefused::NoIamIdentity.code(), "missing_iam_identity");
        assert_eq!(CallerRefused::NoApiKeyId.code(), "missing_api_key_id");
    }
}
