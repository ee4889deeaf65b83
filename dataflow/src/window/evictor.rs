//! Evictors: remove elements from a window before or after its function runs (Flink's
//! `CountEvictor` and `TimeEvictor`). A window with an evictor keeps all its elements
//! (no incremental aggregation), as in Flink's `EvictingWindowOperator`.

use serde::{Deserialize, Serialize};

use crate::error::{DataflowError, Result};
use crate::value::Value;

/// Which elements to remove from a firing window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Evictor {
    /// Keeps the last `max` elements (in arrival order).
    Count {
        /// Elements kept.
        max: usize,
        /// Evict after the function ran instead of before.
        after: bool,
    },
    /// Keeps the elements whose timestamp is within `window_size` of the window's
    /// largest element timestamp (`timestamp > max - window_size`).
    Time {
        /// Time span kept (ms).
        window_size: i64,
        /// Evict after the function ran instead of before.
        after: bool,
    },
}

impl Evictor {
    /// Keeps the last `max` elements, evicting before the function.
    pub fn count(max: usize) -> Self {
        Evictor::Count { max, after: false }
    }

    /// Keeps the last `window_size` ms of elements, evicting before the function.
    pub fn time(window_size: i64) -> Self {
        Evictor::Time {
            window_size,
            after: false,
        }
    }

    /// Checks sizes.
    pub fn validate(&self) -> Result<()> {
        match self {
            Evictor::Time { window_size, .. } if *window_size < 0 => {
                Err(DataflowError::InvalidConfig {
                    factory: "window evictor".into(),
                    reason: format!("a time evictor needs window_size ≥ 0, got {window_size}"),
                })
            }
            _ => Ok(()),
        }
    }

    fn after(&self) -> bool {
        match self {
            Evictor::Count { after, .. } | Evictor::Time { after, .. } => *after,
        }
    }

    /// Evicts from `elements` if this evictor runs before the function.
    pub(crate) fn evict_before(&self, elements: &mut Vec<(Option<i64>, Value)>) {
        if !self.after() {
            self.evict(elements);
        }
    }

    /// Evicts from `elements` if this evictor runs after the function.
    pub(crate) fn evict_after(&self, elements: &mut Vec<(Option<i64>, Value)>) {
        if self.after() {
            self.evict(elements);
        }
    }

    fn evict(&self, elements: &mut Vec<(Option<i64>, Value)>) {
        match self {
            Evictor::Count { max, .. } => {
                if elements.len() > *max {
                    elements.drain(..elements.len() - max);
                }
            }
            Evictor::Time { window_size, .. } => {
                // Flink: nothing is evicted unless elements carry timestamps.
                let Some(max) = elements.iter().filter_map(|(t, _)| *t).max() else {
                    return;
                };
                let cutoff = max - window_size;
                elements.retain(|(t, _)| t.is_none_or(|t| t > cutoff));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn els(ts: &[i64]) -> Vec<(Option<i64>, Value)> {
        ts.iter().map(|t| (Some(*t), Value::I64(*t))).collect()
    }

    fn times(e: &[(Option<i64>, Value)]) -> Vec<i64> {
        e.iter().filter_map(|(t, _)| *t).collect()
    }

    #[test]
    fn count_evictor_keeps_the_last_elements() {
        let mut e = els(&[5, 1, 9, 3]);
        Evictor::count(2).evict_before(&mut e);
        assert_eq!(times(&e), [9, 3]);
        let after = Evictor::Count {
            max: 1,
            after: true,
        };
        after.evict_before(&mut e);
        assert_eq!(e.len(), 2, "an after-evictor does nothing before");
        after.evict_after(&mut e);
        assert_eq!(times(&e), [3]);
    }

    #[test]
    fn time_evictor_keeps_elements_within_the_span_of_the_newest() {
        let mut e = els(&[5, 1, 9, 3, 7]);
        Evictor::time(4).evict_before(&mut e);
        // max 9, cutoff 5: keeps 9 and 7 (5 is not > 5).
        assert_eq!(times(&e), [9, 7]);
        let mut untimed = vec![(None, Value::I64(1))];
        Evictor::time(0).evict_before(&mut untimed);
        assert_eq!(untimed.len(), 1);
    }
}
