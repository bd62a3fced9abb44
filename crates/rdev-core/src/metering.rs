//! What model calls cost: the tokens one call or one attempt used ([`MeteredUsage`]), the
//! price table that turns them into dollars ([`PriceTable`]), the budget a task may spend
//! ([`Budget`]), a task's usage as its result reports it ([`TaskUsage`]), and the storage
//! port for usage per task and attempt ([`UsageStore`]).
//! rdev's model gateway fills these from the upstream's own `usage` reports; nothing here
//! reads a response or opens a connection.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{StoreError, TaskId, ValidationError};

/// Tokens of one model call, or summed over many.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct MeteredUsage {
    /// Input tokens billed at the input price (not read from or written to the cache).
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_input_tokens: u64,
    /// Input tokens written to the prompt cache, both lifetimes together.
    pub cache_creation_input_tokens: u64,
    /// Of [`Self::cache_creation_input_tokens`], those written with the 1-hour lifetime
    /// (priced higher than 5-minute writes).
    pub cache_creation_1h_input_tokens: u64,
}

impl MeteredUsage {
    /// Every token the call processed: input, output, cache reads and writes. What a
    /// `max_tokens` budget counts.
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.output_tokens)
            .saturating_add(self.cache_read_input_tokens)
            .saturating_add(self.cache_creation_input_tokens)
    }

    /// Adds `other` to `self`.
    pub fn add(&mut self, other: &Self) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cache_read_input_tokens = self
            .cache_read_input_tokens
            .saturating_add(other.cache_read_input_tokens);
        self.cache_creation_input_tokens = self
            .cache_creation_input_tokens
            .saturating_add(other.cache_creation_input_tokens);
        self.cache_creation_1h_input_tokens = self
            .cache_creation_1h_input_tokens
            .saturating_add(other.cache_creation_1h_input_tokens);
    }
}

/// A model's list price in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub input: f64,
    pub output: f64,
    /// A 5-minute cache write (1.25x input at Anthropic).
    pub cache_write_5m: f64,
    /// A 1-hour cache write (2x input at Anthropic).
    pub cache_write_1h: f64,
    /// A cache read (0.1x input at Anthropic).
    pub cache_read: f64,
}

impl ModelPrice {
    /// Anthropic's usual shape: cache writes at 1.25x (5 minutes) and 2x (1 hour) the
    /// input price, cache reads at 0.1x.
    pub const fn anthropic(input: f64, output: f64) -> Self {
        Self {
            input,
            output,
            cache_write_5m: input * 1.25,
            cache_write_1h: input * 2.0,
            cache_read: input * 0.1,
        }
    }

    /// What `usage` costs at this price, in dollars.
    pub fn cost(&self, usage: &MeteredUsage) -> f64 {
        let one_hour = usage
            .cache_creation_1h_input_tokens
            .min(usage.cache_creation_input_tokens);
        let five_minutes = usage.cache_creation_input_tokens - one_hour;
        let per_token = |tokens: u64, price: f64| tokens as f64 * price / 1_000_000.0;
        per_token(usage.input_tokens, self.input)
            + per_token(usage.output_tokens, self.output)
            + per_token(usage.cache_read_input_tokens, self.cache_read)
            + per_token(five_minutes, self.cache_write_5m)
            + per_token(one_hour, self.cache_write_1h)
    }

    fn validate(&self, model: &str) -> Result<(), ValidationError> {
        let all = [
            self.input,
            self.output,
            self.cache_write_5m,
            self.cache_write_1h,
            self.cache_read,
        ];
        if all.iter().all(|p| p.is_finite() && *p >= 0.0) {
            Ok(())
        } else {
            Err(ValidationError::InvalidField {
                field: "gateway.prices",
                reason: format!("prices of {model} must be finite and not negative"),
            })
        }
    }
}

/// The date of [`PriceTable::default`]'s prices (Anthropic's published list prices, per
/// million tokens). docs/gateway.md shows the same table.
pub const DEFAULT_PRICES_DATE: &str = "2025-11-24";

/// Prices per model name. A model is priced by the longest entry that equals its name or
/// is followed in it by `-` (`claude-sonnet-4-5` prices `claude-sonnet-4-5-20250929`);
/// a model no entry matches is priced at [`Self::fallback`], so a budget never treats an
/// unknown model as free.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceTable {
    pub models: BTreeMap<String, ModelPrice>,
    /// The price of a model no entry matches.
    pub fallback: ModelPrice,
}

impl Default for PriceTable {
    /// Anthropic's list prices on [`DEFAULT_PRICES_DATE`]; unknown models at the most
    /// expensive of them.
    fn default() -> Self {
        let opus_4 = ModelPrice::anthropic(15.0, 75.0);
        let models = [
            ("claude-opus-4-5", ModelPrice::anthropic(5.0, 25.0)),
            ("claude-opus-4-1", opus_4),
            ("claude-opus-4", opus_4),
            ("claude-sonnet-4-5", ModelPrice::anthropic(3.0, 15.0)),
            ("claude-sonnet-4", ModelPrice::anthropic(3.0, 15.0)),
            ("claude-3-7-sonnet", ModelPrice::anthropic(3.0, 15.0)),
            ("claude-haiku-4-5", ModelPrice::anthropic(1.0, 5.0)),
            ("claude-3-5-haiku", ModelPrice::anthropic(0.8, 4.0)),
            ("claude-3-haiku", ModelPrice::anthropic(0.25, 1.25)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Self {
            models,
            fallback: opus_4,
        }
    }
}

impl PriceTable {
    /// The price of `model`, and whether an entry matched (else the fallback).
    pub fn price(&self, model: &str) -> (&ModelPrice, bool) {
        let matched = self
            .models
            .iter()
            .filter(|(name, _)| {
                model == name.as_str()
                    || model
                        .strip_prefix(name.as_str())
                        .is_some_and(|rest| rest.starts_with('-'))
            })
            .max_by_key(|(name, _)| name.len());
        match matched {
            Some((_, price)) => (price, true),
            None => (&self.fallback, false),
        }
    }

    /// What `usage` of `model` costs, in dollars.
    pub fn cost(&self, model: &str, usage: &MeteredUsage) -> f64 {
        self.price(model).0.cost(usage)
    }

    /// Every price finite and not negative.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.fallback.validate("the fallback")?;
        self.models.iter().try_for_each(|(m, p)| p.validate(m))
    }
}

/// What a task may spend on model calls; `None` is no limit of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Budget {
    /// Dollars, at the gateway's price table.
    pub max_cost_usd: Option<f64>,
    /// Tokens of every kind ([`MeteredUsage::total_tokens`]).
    pub max_tokens: Option<u64>,
}

impl Budget {
    /// The tighter of two budgets, limit by limit: the smallest applies.
    pub fn tightest(self, other: Self) -> Self {
        fn min<T: PartialOrd>(a: Option<T>, b: Option<T>) -> Option<T> {
            match (a, b) {
                (Some(a), Some(b)) => Some(if b < a { b } else { a }),
                (a, b) => a.or(b),
            }
        }
        Self {
            max_cost_usd: min(self.max_cost_usd, other.max_cost_usd),
            max_tokens: min(self.max_tokens, other.max_tokens),
        }
    }

    /// Whether any limit is set.
    pub fn is_limited(&self) -> bool {
        self.max_cost_usd.is_some() || self.max_tokens.is_some()
    }

    /// A cost limit must be a positive finite number, a token limit at least 1.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(c) = self.max_cost_usd {
            if !(c.is_finite() && c > 0.0) {
                return Err(ValidationError::InvalidField {
                    field: "max_cost_usd",
                    reason: format!("must be a positive number of dollars, got {c}"),
                });
            }
        }
        if self.max_tokens == Some(0) {
            return Err(ValidationError::InvalidField {
                field: "max_tokens",
                reason: "must be at least 1".to_owned(),
            });
        }
        Ok(())
    }
}

/// Usage of one model in one attempt of a task, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttemptUsage {
    pub attempt: u32,
    /// The agent provider whose calls these were (`claude-code`, `opencode`).
    pub provider: String,
    /// The model the calls asked for.
    pub model: String,
    #[serde(flatten)]
    pub usage: MeteredUsage,
    pub cost_usd: f64,
    /// Model calls counted (each answered call once, whatever its outcome).
    pub calls: u64,
}

/// The sum of [`AttemptUsage`] rows: what a task used in all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageTotal {
    #[serde(flatten)]
    pub usage: MeteredUsage,
    pub cost_usd: f64,
    pub calls: u64,
}

impl UsageTotal {
    /// The sum of `rows`.
    pub fn of<'a>(rows: impl IntoIterator<Item = &'a AttemptUsage>) -> Self {
        rows.into_iter().fold(Self::default(), |mut t, r| {
            t.usage.add(&r.usage);
            t.cost_usd += r.cost_usd;
            t.calls += r.calls;
            t
        })
    }
}

/// A task's metered usage as its result reports it: the totals over every attempt, and
/// the rows per attempt and model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskUsage {
    #[serde(flatten)]
    pub total: UsageTotal,
    #[serde(default)]
    pub by_attempt: Vec<AttemptUsage>,
}

impl TaskUsage {
    /// The totals of `rows`, with the rows.
    pub fn of(rows: Vec<AttemptUsage>) -> Self {
        Self {
            total: UsageTotal::of(&rows),
            by_attempt: rows,
        }
    }
}

/// Usage per task and attempt. Rows only grow: each recorded call adds to its
/// (task, attempt, model) row. Removed with their task.
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Adds one call's (or several calls') usage to the row of `task`, `attempt`,
    /// `usage.model`; `usage.attempt` is ignored in favour of `attempt`.
    async fn record_usage(
        &self,
        task: TaskId,
        attempt: u32,
        usage: &AttemptUsage,
    ) -> Result<(), StoreError>;
    /// Every row of `task`, by attempt then model.
    async fn task_usage(&self, task: TaskId) -> Result<Vec<AttemptUsage>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_match_the_longest_entry_at_a_dash_and_unknown_models_pay_the_fallback() {
        let t = PriceTable::default();
        assert_eq!(t.price("claude-sonnet-4-5-20250929").0.input, 3.0);
        assert_eq!(t.price("claude-opus-4-5").0.output, 25.0);
        assert_eq!(t.price("claude-opus-4-1-20250805").0.output, 75.0);
        let (p, known) = t.price("claude-opus-4-8");
        assert!(known);
        assert_eq!(
            p.output, 75.0,
            "an Opus 4 point release is priced as Opus 4"
        );
        let (p, known) = t.price("gpt-5");
        assert!(!known);
        assert_eq!(p, &t.fallback);
        assert!(
            !t.price("claude-sonnet-40").1,
            "a prefix must end at a dash"
        );
    }

    #[test]
    fn cost_prices_one_hour_cache_writes_at_their_own_rate() {
        let price = ModelPrice::anthropic(3.0, 15.0);
        let usage = MeteredUsage {
            input_tokens: 1_000_000,
            output_tokens: 1_000_000,
            cache_read_input_tokens: 1_000_000,
            cache_creation_input_tokens: 2_000_000,
            cache_creation_1h_input_tokens: 1_000_000,
        };
        let cost = price.cost(&usage);
        assert!(
            (cost - (3.0 + 15.0 + 0.3 + 3.75 + 6.0)).abs() < 1e-9,
            "{cost}"
        );
        assert_eq!(usage.total_tokens(), 5_000_000);
    }

    #[test]
    fn the_smallest_budget_applies_limit_by_limit() {
        let spec = Budget {
            max_cost_usd: Some(2.0),
            max_tokens: None,
        };
        let project = Budget {
            max_cost_usd: Some(5.0),
            max_tokens: Some(1000),
        };
        let server = Budget::default();
        let b = spec.tightest(project).tightest(server);
        assert_eq!(b.max_cost_usd, Some(2.0));
        assert_eq!(b.max_tokens, Some(1000));
        assert!(!Budget::default().is_limited());
    }

    #[test]
    fn budgets_must_be_positive() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let b = Budget {
                max_cost_usd: Some(bad),
                max_tokens: None,
            };
            assert!(b.validate().is_err(), "{bad}");
        }
        let b = Budget {
            max_cost_usd: None,
            max_tokens: Some(0),
        };
        assert!(b.validate().is_err());
        assert!(Budget {
            max_cost_usd: Some(0.01),
            max_tokens: Some(1)
        }
        .validate()
        .is_ok());
    }
}
