//! The run's tasks: polling every woken one until all wait at a gate or are
//! done, and taking in what each returned (a client's answer, a worker's
//! batch report, a redrive).

use super::*;

impl Run {
    /// Polls every woken task until all wait at a gate or are done.
    pub(super) fn poll_tasks(&mut self) {
        loop {
            let ready: Vec<TaskId> = self
                .tasks
                .iter()
                .filter(|(_, t)| t.flag.0.swap(false, Ordering::SeqCst))
                .map(|(id, _)| *id)
                .collect();
            if ready.is_empty() {
                break;
            }
            for id in ready {
                self.sim.lock().current_task = id;
                let Some(task) = self.tasks.get_mut(&id) else {
                    continue;
                };
                let task_waker = waker(task.flag.clone());
                let mut cx = Context::from_waker(&task_waker);
                if let Poll::Ready(output) = task.future.as_mut().poll(&mut cx) {
                    if let Some(task) = self.tasks.remove(&id) {
                        self.finish(id, task.kind, output);
                    }
                }
            }
        }
        let stalled: Vec<TaskId> = {
            let core = self.sim.lock();
            self.tasks
                .keys()
                .copied()
                .filter(|id| !core.waits_at_gate(*id))
                .collect()
        };
        for id in stalled {
            // Every wait of production code in the simulation is a gate.
            self.violations
                .push(format!("task {id} is waiting on something other than a port call"));
            self.tasks.remove(&id);
        }
    }

    pub(super) fn finish(&mut self, id: TaskId, kind: TaskKind, output: TaskOutput) {
        match (kind, output) {
            (TaskKind::Ingest { client, abandoned }, TaskOutput::Answer(response)) => {
                let status = response.status;
                self.note(|| {
                    format!(
                        "task {id}: client {client} {} {status} {}",
                        if abandoned { "no longer waits for" } else { "gets" },
                        response.body
                    )
                });
                if self.answer_ledger_client(client, abandoned, &response) {
                    return;
                }
                let reuses_key = client >= self.scenario.submissions.len();
                let acceptable = match status {
                    503 => true,
                    409 => reuses_key && response.body["error"]["code"] == "idempotency_key_reused",
                    202 => {
                        !reuses_key && {
                            let (accepted, deduplicated) = self.scenario.expected_counts(client);
                            let got = (
                                response.body["accepted"].as_u64(),
                                response.body["deduplicated"].as_u64(),
                            );
                            got == (Some(accepted), Some(deduplicated))
                        }
                    }
                    _ => false,
                };
                if !acceptable {
                    self.violations.push(format!(
                        "client {client}{}: unexpected answer {status} {}",
                        if reuses_key {
                            " (reusing a key with other content)"
                        } else {
                            ""
                        },
                        response.body
                    ));
                }
                if abandoned {
                    return;
                }
                if status == 503 {
                    // Retryable: the client tries again later with the same key.
                    let mut core = self.sim.lock();
                    let at = core.now_ms + core.rng.u64(500..=5_000);
                    self.clients[client] = Client::Waiting { at };
                    return;
                }
                self.clients[client] = Client::Done;
                self.unblock_cancel(client);
                if client == 0 && status == 202 {
                    // The client reusing the key, if the seed has one (the
                    // index after the submissions may be a ledger client).
                    let reuser = self.scenario.submissions.len();
                    if self.roles.get(reuser) == Some(&Role::KeyReuse) {
                        let other = &mut self.clients[reuser];
                        if *other == Client::Blocked {
                            let now = self.sim.lock().now_ms;
                            *other = Client::Waiting { at: now };
                        }
                    }
                }
            }
            (TaskKind::Redrive, TaskOutput::Redriven(result)) => match result {
                Ok(moved) => self.note(|| format!("task {id}: redrive moved {} messages", moved.messages)),
                // The operator runs it again later; the final redrive does.
                Err(e) => self.note(|| format!("task {id}: redrive failed: {e}")),
            },
            (TaskKind::Worker { batch }, TaskOutput::Batch(report)) => {
                self.note(|| {
                    format!(
                        "task {id}: worker returns, failed {:?}, applied {}, duplicate {}",
                        report.failed_message_ids, report.counts.applied, report.counts.duplicate
                    )
                });
                // The event source deletes what the worker did not report failed.
                let done: Vec<String> = batch
                    .iter()
                    .filter(|m| !report.failed_message_ids.contains(&m.message_id))
                    .map(|m| m.receipt_handle.clone())
                    .collect();
                if !done.is_empty() {
                    self.sim.lock().delete(QueueId::Main, &done, true);
                }
            }
            (TaskKind::Import { message }, TaskOutput::Imported(result)) => self.finish_import(id, &message, result),
            _ => self
                .violations
                .push(format!("task {id} ended with an output of another kind")),
        }
    }
}
