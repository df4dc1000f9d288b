//! Deciding steps (SPEC §4.7) against the live rules: the [`StepJudge`]
//! the store calls in the transaction that finishes a step's last need.

use std::sync::Arc;

use crate::store::steps::Ready;
use crate::store::{StepJudge, Verdict};
use crate::watch::LiveRules;

/// Evaluates a step's `when` over the payload and its needs' outputs, and
/// dates its first attempt `delay` after now; a step whose rule or action
/// is gone is skipped, as any delivery whose action no longer exists.
pub struct RulesJudge {
    rules: Arc<LiveRules>,
}

impl RulesJudge {
    pub fn new(rules: Arc<LiveRules>) -> Self {
        Self { rules }
    }
}

impl StepJudge for RulesJudge {
    fn judge(&self, step: &Ready<'_>) -> Verdict {
        let set = self.rules.current();
        let Some(action) = set.rule(step.rule).and_then(|r| r.action(step.action)) else {
            return Verdict::Skip {
                reason: format!(
                    "rule `{}` or its action `{}` no longer exists",
                    step.rule, step.action
                ),
                trace: Vec::new(),
            };
        };
        let (holds, trace) = crate::evaluate::step_when(action, step.event, step.outputs);
        if !holds {
            return Verdict::Skip {
                reason: "its `when` is false".to_owned(),
                trace,
            };
        }
        let delay = action.delay.map_or(0, |d| d.as_millis() as i64);
        Verdict::Run {
            due_at_ms: step.now_ms.saturating_add(delay),
            trace,
        }
    }
}
