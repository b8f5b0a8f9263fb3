//! The clients that write to the ledger other than by crediting: single
//! uses, a bulk-use job, reversals, and the cancel of a job. Each retries
//! as a real client does: a 503 (or no answer) sends the same request
//! again, with the same `use_id` or key; a cancel refused because its job
//! still runs is asked again later.

use super::super::scenario::ReversalSpec;
use super::*;

/// What a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Submission `s` of accruals.
    Submission(usize),
    /// The client reusing submission 0's key with other content.
    KeyReuse,
    /// Single use `i` (`POST /v1/members/{id}/uses`).
    Use(usize),
    /// Bulk-use job `i` (`POST /v1/jobs` with `{"uses": [...]}`).
    UseJob(usize),
    /// Reversal `i` (`POST /v1/reversals`).
    Reversal(usize),
    /// The cancel of submission `s`'s job, sent once it was accepted.
    Cancel(usize),
}

/// Adds the scenario's ledger clients after the submitting ones.
pub(super) fn add_clients(
    scenario: &Scenario,
    clients: &mut Vec<Client>,
    roles: &mut Vec<Role>,
    requests: &mut Vec<ApiRequest>,
) {
    let extras = &scenario.extras;
    for (i, (_, at)) in extras.uses.iter().enumerate() {
        clients.push(Client::Waiting { at: *at });
        roles.push(Role::Use(i));
        requests.push(scenario.use_request(i));
    }
    for (i, (_, at)) in extras.use_jobs.iter().enumerate() {
        clients.push(Client::Waiting { at: *at });
        roles.push(Role::UseJob(i));
        requests.push(scenario.use_job_request(i));
    }
    for (i, (_, at)) in extras.reversals.iter().enumerate() {
        clients.push(Client::Waiting { at: *at });
        roles.push(Role::Reversal(i));
        requests.push(scenario.reversal_request(i));
    }
    if let Some(s) = extras.cancel {
        clients.push(Client::Blocked);
        roles.push(Role::Cancel(s));
        requests.push(scenario.cancel_request(s));
    }
}

/// How a ledger client takes an answer.
enum Next {
    Done,
    /// Send the same request again later (503).
    Retry,
    /// The job still runs: ask again later (parked while calm).
    NotYet,
}

impl Run {
    /// Takes the answer to a ledger client's request; false if `client` is
    /// not one (a submitting client, handled by the caller).
    pub(super) fn answer_ledger_client(&mut self, client: usize, abandoned: bool, response: &ApiResponse) -> bool {
        let role = self.roles[client];
        let status = response.status;
        let code = response.body["error"]["code"].as_str().unwrap_or_default().to_owned();
        let next = match role {
            Role::Submission(_) | Role::KeyReuse => return false,
            Role::Use(i) => {
                let use_id = self.scenario.extras.uses[i].0.use_id.clone();
                match (status, code.as_str()) {
                    (200 | 201, _) => {
                        if !self.model.lock().uses.contains_key(&use_id) {
                            self.violations.push(format!(
                                "use {use_id} answered {status}, but the ledger never applied it"
                            ));
                        }
                        Next::Done
                    }
                    (409, "insufficient_balance" | "too_many_lots") => Next::Done,
                    (503, _) => Next::Retry,
                    _ => self.unexpected(client, response),
                }
            }
            Role::UseJob(i) => {
                let n = self.scenario.extras.use_jobs[i].0.uses.len() as u64;
                match status {
                    202 if response.body["accepted"].as_u64() == Some(n)
                        && response.body["deduplicated"].as_u64() == Some(0) =>
                    {
                        Next::Done
                    }
                    503 => Next::Retry,
                    _ => self.unexpected(client, response),
                }
            }
            Role::Reversal(i) => match (status, code.as_str()) {
                (200 | 201, _) => {
                    let reversed = {
                        let model = self.model.lock();
                        match &self.scenario.extras.reversals[i].0 {
                            ReversalSpec::Accrual(p) => model.credits.get(&format!("a{p}")).is_some_and(|c| c.reversed),
                            ReversalSpec::Use(id) => model.uses.get(id).is_some_and(|u| u.reversed),
                        }
                    };
                    if !reversed {
                        self.violations.push(format!(
                            "reversal {i} answered {status}, but the ledger shows it not reversed"
                        ));
                    }
                    Next::Done
                }
                (404, "not_found") | (409, "already_spent") => Next::Done,
                (503, _) => Next::Retry,
                _ => self.unexpected(client, response),
            },
            Role::Cancel(_) => match (status, code.as_str()) {
                (200 | 202, _) => Next::Done,
                (409, "job_running") => Next::NotYet,
                (503, _) => Next::Retry,
                _ => self.unexpected(client, response),
            },
        };
        if abandoned {
            return true;
        }
        let mut core = self.sim.lock();
        self.clients[client] = match next {
            Next::Done => Client::Done,
            Next::NotYet if core.calm => Client::Parked,
            Next::Retry => Client::Waiting {
                at: core.now_ms + core.rng.u64(500..=10_000),
            },
            // A job runs for minutes of virtual time under faults: asking
            // every few seconds only made requests (and half the suite's
            // time), not cases.
            Next::NotYet => Client::Waiting {
                at: core.now_ms + core.rng.u64(20_000..=60_000),
            },
        };
        true
    }

    fn unexpected(&mut self, client: usize, response: &ApiResponse) -> Next {
        self.violations.push(format!(
            "client {client} ({:?}): unexpected answer {} {}",
            self.roles[client], response.status, response.body
        ));
        Next::Done
    }

    /// Submission `s`'s client got its answer: a client waiting to cancel
    /// its job may go.
    pub(super) fn unblock_cancel(&mut self, s: usize) {
        let mut core = self.sim.lock();
        for client in 0..self.clients.len() {
            if self.roles[client] == Role::Cancel(s) && self.clients[client] == Client::Blocked {
                let at = core.now_ms + core.rng.u64(0..=10_000);
                self.clients[client] = Client::Waiting { at };
            }
        }
    }

    /// Parked clients ask again; false if there were none.
    pub(super) fn unpark(&mut self) -> bool {
        let now = self.sim.lock().now_ms;
        let mut any = false;
        for c in &mut self.clients {
            if *c == Client::Parked {
                *c = Client::Waiting { at: now };
                any = true;
            }
        }
        any
    }
}
