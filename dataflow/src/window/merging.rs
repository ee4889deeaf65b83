//! The session windows of one key and the state window of each (Flink's
//! `MergingWindowSet`).
//!
//! When windows merge, their contents are merged into the contents of *one* of them —
//! the **state window** — rather than moved under the new, covering window: merging
//! never rewrites more state than it must. The set maps every live window to the window
//! its contents are stored under. It is kept per key in keyed state (namespace `()`),
//! so it is checkpointed with the contents.
//!
//! [`MergingWindowSet::add_window`] follows Flink's `addWindow` step by step and
//! returns the merges to perform instead of calling back.

use std::collections::BTreeMap;

use crate::window::assigner::{Window, WindowAssigner};

/// A merge the window operator must carry out (Flink's `MergeFunction.merge`
/// arguments).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Merge {
    /// The new covering window.
    pub(crate) result: Window,
    /// The pre-existing windows it replaces (their trigger state and timers go).
    pub(crate) merged: Vec<Window>,
    /// Where the merged contents live: the state window of the result.
    pub(crate) state_window: Window,
    /// State windows whose contents merge into `state_window`.
    pub(crate) merged_state_windows: Vec<Window>,
}

/// Window → state window, for one key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct MergingWindowSet {
    pub(crate) mapping: BTreeMap<Window, Window>,
}

impl MergingWindowSet {
    pub(crate) fn from_pairs(pairs: Vec<(Window, Window)>) -> Self {
        Self {
            mapping: pairs.into_iter().collect(),
        }
    }

    pub(crate) fn to_pairs(&self) -> Vec<(Window, Window)> {
        self.mapping.iter().map(|(a, b)| (*a, *b)).collect()
    }

    /// The window `window`'s contents are stored under, if it is live.
    pub(crate) fn state_window(&self, window: &Window) -> Option<Window> {
        self.mapping.get(window).copied()
    }

    /// Forgets `window` (fired for good, or late).
    pub(crate) fn retire(&mut self, window: &Window) {
        self.mapping.remove(window);
    }

    /// Adds `new` and merges; returns the window `new` ended up in and the merges to
    /// perform (in order).
    pub(crate) fn add_window(&mut self, new: Window) -> (Window, Vec<Merge>) {
        let mut windows: Vec<Window> = self.mapping.keys().copied().collect();
        windows.push(new);
        let merge_results = WindowAssigner::merge_windows(&windows);
        let mut result_window = new;
        let mut merged_new_window = false;
        let mut merges = Vec::new();
        for (merge_result, mut merged_windows) in merge_results.iter().cloned() {
            if let Some(i) = merged_windows.iter().position(|w| *w == new) {
                merged_windows.remove(i);
                merged_new_window = true;
                result_window = merge_result;
            }
            // Any merged window's state window becomes the result's (`merged_windows`
            // is not empty: a group has at least two windows, at most one of them new).
            let Some(state_window) = merged_windows
                .first()
                .and_then(|w| self.mapping.get(w).copied())
            else {
                continue;
            };
            let mut merged_state_windows = Vec::new();
            for w in &merged_windows {
                if let Some(s) = self.mapping.remove(w) {
                    merged_state_windows.push(s);
                }
            }
            self.mapping.insert(merge_result, state_window);
            merged_state_windows.retain(|s| *s != state_window);
            // Only the new window fell into one pre-existing window that it does not
            // extend: nothing to merge.
            if !(merged_windows.contains(&merge_result) && merged_windows.len() == 1) {
                merges.push(Merge {
                    result: merge_result,
                    merged: merged_windows,
                    state_window,
                    merged_state_windows,
                });
            }
        }
        if merge_results.is_empty() || (result_window == new && !merged_new_window) {
            self.mapping.insert(result_window, result_window);
        }
        (result_window, merges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: i64, e: i64) -> Window {
        Window::time(s, e)
    }

    #[test]
    fn a_new_window_alone_maps_to_itself() {
        let mut set = MergingWindowSet::default();
        assert_eq!(set.add_window(w(0, 3)), (w(0, 3), vec![]));
        assert_eq!(set.add_window(w(10, 13)), (w(10, 13), vec![]));
        assert_eq!(set.state_window(&w(0, 3)), Some(w(0, 3)));
    }

    #[test]
    fn merging_keeps_one_state_window_and_reports_the_rest() {
        let mut set = MergingWindowSet::default();
        set.add_window(w(0, 3));
        set.add_window(w(5, 8));
        // [2,6) bridges both: result [0,8), state window of [0,3) kept.
        let (result, merges) = set.add_window(w(2, 6));
        assert_eq!(result, w(0, 8));
        assert_eq!(
            merges,
            [Merge {
                result: w(0, 8),
                merged: vec![w(0, 3), w(5, 8)],
                state_window: w(0, 3),
                merged_state_windows: vec![w(5, 8)],
            }]
        );
        assert_eq!(set.to_pairs(), [(w(0, 8), w(0, 3))]);
        // A window inside an existing one merges nothing.
        assert_eq!(set.add_window(w(1, 4)), (w(0, 8), vec![]));
        assert_eq!(set.to_pairs(), [(w(0, 8), w(0, 3))]);
        // Extending it: the merged window is the old result, no state to move.
        let (result, merges) = set.add_window(w(7, 10));
        assert_eq!(result, w(0, 10));
        assert_eq!(merges[0].merged, [w(0, 8)]);
        assert!(merges[0].merged_state_windows.is_empty());
        set.retire(&w(0, 10));
        assert!(set.mapping.is_empty());
    }
}
