//! The operator's `pointflow dlq redrive` (the production
//! [`crate::services::dlq::redrive`]), of the accrual DLQ and of the import
//! DLQ: mid-run through the fault gates, and once more at the end.

use super::*;

impl Run {
    /// An operator runs `pointflow dlq redrive` while the pipeline runs,
    /// from a DLQ that holds messages (the accrual one, or the import one).
    pub(super) fn start_redrive(&mut self) {
        self.redrives += 1;
        let (max, kind) = {
            let mut core = self.sim.lock();
            let max = core.rng.usize(1..=10);
            let accruals = !core.queues[QueueId::Dead as usize].messages.is_empty();
            let imports = !core.queues[QueueId::ImportsDead as usize].messages.is_empty();
            let kind = match (accruals, imports) {
                (true, true) if core.rng.bool() => QueueKind::Imports,
                (false, true) => QueueKind::Imports,
                _ => QueueKind::Accruals,
            };
            (max, kind)
        };
        let (dead, main) = match kind {
            QueueKind::Accruals => (self.faulty_dead.clone(), self.faulty_main.clone()),
            QueueKind::Imports => (self.imports.faulty_dead.clone(), self.imports.faulty_queue.clone()),
        };
        let id = self.spawn(
            TaskKind::Redrive,
            Box::pin(async move {
                // Messages carry real-clock `queued_at` stamps, so the age
                // rule is checked on the real clock: nothing here is too old.
                let now = time::OffsetDateTime::now_utc();
                TaskOutput::Redriven(crate::services::dlq::redrive(dead.as_ref(), main.as_ref(), kind, max, now).await)
            }),
        );
        let mut core = self.sim.lock();
        core.count(FaultKind::RedriveMidRun);
        core.note(|| format!("task {id}: an operator redrives up to {max} messages from the {kind} DLQ"));
    }

    /// Whether a DLQ holds messages an operator could redrive.
    pub(super) fn dead_letters_waiting(core: &Core) -> bool {
        !core.queues[QueueId::Dead as usize].messages.is_empty()
            || !core.queues[QueueId::ImportsDead as usize].messages.is_empty()
    }

    /// Moves both DLQs back with the production redrive: the import one
    /// first, whose chunks queue accruals the worker then applies.
    pub(super) fn redrive(&mut self) {
        {
            // A redrive that died mid-run left DLQ messages in flight: the
            // operator's later run sees them again.
            let mut core = self.sim.lock();
            let latest = [QueueId::Dead, QueueId::ImportsDead]
                .iter()
                .flat_map(|q| core.queues[*q as usize].messages.iter().map(|m| m.visible_at))
                .max();
            if let Some(t) = latest {
                core.now_ms = core.now_ms.max(t);
            }
        }
        let imports: (Arc<dyn WorkQueue>, Arc<dyn WorkQueue>) = (self.imports.dead.clone(), self.imports.queue.clone());
        let accruals: (Arc<dyn WorkQueue>, Arc<dyn WorkQueue>) = (self.dead.clone(), self.main.clone());
        let queues = [(QueueKind::Imports, imports), (QueueKind::Accruals, accruals)];
        for (kind, (dead, main)) in queues {
            match futures::executor::block_on(crate::services::dlq::redrive(
                dead.as_ref(),
                main.as_ref(),
                kind,
                usize::MAX,
                time::OffsetDateTime::now_utc(),
            )) {
                Ok(moved) => self.note(|| {
                    format!(
                        "redrive of the {kind} DLQ: {} messages, {} accruals",
                        moved.messages, moved.accruals
                    )
                }),
                Err(e) => self.violations.push(format!("redrive of the {kind} DLQ failed: {e}")),
            }
        }
    }
}
