//! The states of a delivery, as the store keeps them and every layer above
//! reads them.

/// Where a delivery is in its life; stored as its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// A step (SPEC §4.7) whose needs have not all succeeded yet.
    Waiting,
    Pending,
    Running,
    Succeeded,
    Retrying,
    Dead,
    Skipped,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 7] = [
        DeliveryState::Waiting,
        DeliveryState::Pending,
        DeliveryState::Running,
        DeliveryState::Succeeded,
        DeliveryState::Retrying,
        DeliveryState::Dead,
        DeliveryState::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Waiting => "waiting",
            DeliveryState::Pending => "pending",
            DeliveryState::Running => "running",
            DeliveryState::Succeeded => "succeeded",
            DeliveryState::Retrying => "retrying",
            DeliveryState::Dead => "dead",
            DeliveryState::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// No more attempts will be made (until a person retries it).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeliveryState::Succeeded | DeliveryState::Dead | DeliveryState::Skipped
        )
    }
}

/// What one attempt came to, as recorded in its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Succeeded,
    /// Worth trying again (network error, timeout, 5xx, 429…).
    Retryable,
    /// Trying again cannot help (4xx, a refused URL, a permanent SMTP error).
    Failed,
    /// The rule or action no longer exists.
    Skipped,
}

impl AttemptOutcome {
    pub const ALL: [AttemptOutcome; 4] = [
        AttemptOutcome::Succeeded,
        AttemptOutcome::Retryable,
        AttemptOutcome::Failed,
        AttemptOutcome::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Retryable => "retryable",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }
}
