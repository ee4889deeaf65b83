//! Windows and window assigners (Flink's `TimeWindow`, `GlobalWindow` and
//! `WindowAssigner`s).

use serde::{Deserialize, Serialize};

use crate::error::{DataflowError, Result};
use crate::value::Value;
use crate::window::trigger::Trigger;

/// A window: the namespace of its contents, trigger state and timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Window {
    /// The half-open interval `[start, end)` of time (ms).
    Time {
        /// First timestamp in the window.
        start: i64,
        /// First timestamp after the window.
        end: i64,
    },
    /// The one window of [`WindowAssigner::Global`] (count windows).
    Global,
}

impl Window {
    /// `[start, end)`.
    pub fn time(start: i64, end: i64) -> Self {
        Window::Time { start, end }
    }

    /// The window's start (`i64::MIN` for the global window).
    pub fn start(&self) -> i64 {
        match self {
            Window::Time { start, .. } => *start,
            Window::Global => i64::MIN,
        }
    }

    /// The window's end (`i64::MAX` for the global window).
    pub fn end(&self) -> i64 {
        match self {
            Window::Time { end, .. } => *end,
            Window::Global => i64::MAX,
        }
    }

    /// The largest timestamp in the window: `end - 1` (`i64::MAX` for the global window).
    pub fn max_timestamp(&self) -> i64 {
        match self {
            Window::Time { end, .. } => end - 1,
            Window::Global => i64::MAX,
        }
    }

    /// Whether the two windows overlap or touch (Flink's `TimeWindow.intersects`).
    fn intersects(&self, other: &Window) -> bool {
        self.start() <= other.end() && self.end() >= other.start()
    }

    /// The smallest window covering both.
    fn cover(&self, other: &Window) -> Window {
        Window::time(self.start().min(other.start()), self.end().max(other.end()))
    }
}

/// The start of the window of `size` (aligned to `offset`) holding `timestamp`:
/// Flink's `timestamp - (timestamp - offset + size) % size`, with a remainder that is
/// never negative so timestamps before the epoch land in the right window too.
pub fn window_start_with_offset(timestamp: i64, offset: i64, size: i64) -> i64 {
    timestamp - (timestamp - offset).rem_euclid(size)
}

/// Assigns each record to windows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WindowAssigner {
    /// Fixed, non-overlapping windows of `size` over event time.
    TumblingEventTime {
        /// Window length (ms).
        size: i64,
        /// Alignment shift (ms, `|offset| < size`).
        offset: i64,
    },
    /// Fixed, non-overlapping windows of `size` over processing time.
    TumblingProcessingTime {
        /// Window length (ms).
        size: i64,
        /// Alignment shift (ms).
        offset: i64,
    },
    /// Windows of `size` starting every `slide`, over event time.
    SlidingEventTime {
        /// Window length (ms).
        size: i64,
        /// Distance between window starts (ms).
        slide: i64,
        /// Alignment shift (ms, `|offset| < slide`).
        offset: i64,
    },
    /// Windows of `size` starting every `slide`, over processing time.
    SlidingProcessingTime {
        /// Window length (ms).
        size: i64,
        /// Distance between window starts (ms).
        slide: i64,
        /// Alignment shift (ms).
        offset: i64,
    },
    /// Sessions over event time: a record opens `[t, t + gap)`, overlapping windows merge.
    EventTimeSession {
        /// Inactivity gap (ms).
        gap: i64,
    },
    /// Sessions over processing time.
    ProcessingTimeSession {
        /// Inactivity gap (ms).
        gap: i64,
    },
    /// Sessions over event time whose gap each record carries, as the i64 in field
    /// `gap_field` of its tuple (Flink's `withDynamicGap`).
    DynamicEventTimeSession {
        /// Index of the gap field.
        gap_field: usize,
    },
    /// Sessions over processing time with a per-record gap.
    DynamicProcessingTimeSession {
        /// Index of the gap field.
        gap_field: usize,
    },
    /// Everything in one window; needs a trigger (count windows).
    Global,
}

impl WindowAssigner {
    /// Tumbling event-time windows of `size` ms.
    pub fn tumbling_event_time(size: i64) -> Self {
        WindowAssigner::TumblingEventTime { size, offset: 0 }
    }

    /// Tumbling processing-time windows of `size` ms.
    pub fn tumbling_processing_time(size: i64) -> Self {
        WindowAssigner::TumblingProcessingTime { size, offset: 0 }
    }

    /// Sliding event-time windows of `size` ms every `slide` ms.
    pub fn sliding_event_time(size: i64, slide: i64) -> Self {
        WindowAssigner::SlidingEventTime {
            size,
            slide,
            offset: 0,
        }
    }

    /// Sliding processing-time windows of `size` ms every `slide` ms.
    pub fn sliding_processing_time(size: i64, slide: i64) -> Self {
        WindowAssigner::SlidingProcessingTime {
            size,
            slide,
            offset: 0,
        }
    }

    /// Event-time sessions with a static gap of `gap` ms.
    pub fn event_time_session(gap: i64) -> Self {
        WindowAssigner::EventTimeSession { gap }
    }

    /// Processing-time sessions with a static gap of `gap` ms.
    pub fn processing_time_session(gap: i64) -> Self {
        WindowAssigner::ProcessingTimeSession { gap }
    }

    /// Checks sizes, slides, offsets and gaps.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| {
            Err(DataflowError::InvalidConfig {
                factory: "window assigner".into(),
                reason,
            })
        };
        match *self {
            WindowAssigner::TumblingEventTime { size, offset }
            | WindowAssigner::TumblingProcessingTime { size, offset } => {
                if size <= 0 || offset.checked_abs().is_none_or(|o| o >= size) {
                    return bad(format!(
                        "tumbling windows need size > 0 and |offset| < size, got size {size}, offset {offset}"
                    ));
                }
            }
            WindowAssigner::SlidingEventTime {
                size,
                slide,
                offset,
            }
            | WindowAssigner::SlidingProcessingTime {
                size,
                slide,
                offset,
            } => {
                if size <= 0 || slide <= 0 || offset.checked_abs().is_none_or(|o| o >= slide) {
                    return bad(format!(
                        "sliding windows need size > 0, slide > 0 and |offset| < slide, got size {size}, slide {slide}, offset {offset}"
                    ));
                }
            }
            WindowAssigner::EventTimeSession { gap }
            | WindowAssigner::ProcessingTimeSession { gap } => {
                if gap <= 0 {
                    return bad(format!("session windows need a gap > 0, got {gap}"));
                }
            }
            WindowAssigner::DynamicEventTimeSession { .. }
            | WindowAssigner::DynamicProcessingTimeSession { .. }
            | WindowAssigner::Global => {}
        }
        Ok(())
    }

    /// Whether windows are over event time (timers, lateness and cleanup use the
    /// watermark).
    pub fn is_event_time(&self) -> bool {
        matches!(
            self,
            WindowAssigner::TumblingEventTime { .. }
                | WindowAssigner::SlidingEventTime { .. }
                | WindowAssigner::EventTimeSession { .. }
                | WindowAssigner::DynamicEventTimeSession { .. }
        )
    }

    /// Whether windows merge (sessions).
    pub fn is_merging(&self) -> bool {
        matches!(
            self,
            WindowAssigner::EventTimeSession { .. }
                | WindowAssigner::ProcessingTimeSession { .. }
                | WindowAssigner::DynamicEventTimeSession { .. }
                | WindowAssigner::DynamicProcessingTimeSession { .. }
        )
    }

    /// The trigger used when none is set: event time, processing time, or never (global).
    pub fn default_trigger(&self) -> Trigger {
        match self {
            WindowAssigner::Global => Trigger::Never,
            a if a.is_event_time() => Trigger::EventTime,
            _ => Trigger::ProcessingTime,
        }
    }

    /// The windows of a record with `timestamp` (event time) arriving at processing time
    /// `now`, appended to `out`.
    pub fn assign(
        &self,
        value: &Value,
        timestamp: Option<i64>,
        now: i64,
        out: &mut Vec<Window>,
    ) -> Result<()> {
        let t = if self.is_event_time() {
            timestamp.ok_or_else(|| DataflowError::Operator {
                operator: "window".into(),
                message: format!(
                    "record {value} has no timestamp: event-time windows need timestamps (assign them before the window)"
                ),
            })?
        } else {
            now
        };
        match *self {
            WindowAssigner::TumblingEventTime { size, offset }
            | WindowAssigner::TumblingProcessingTime { size, offset } => {
                let start = window_start_with_offset(t, offset, size);
                out.push(Window::time(start, start + size));
            }
            WindowAssigner::SlidingEventTime {
                size,
                slide,
                offset,
            }
            | WindowAssigner::SlidingProcessingTime {
                size,
                slide,
                offset,
            } => {
                let mut start = window_start_with_offset(t, offset, slide);
                while start > t - size {
                    out.push(Window::time(start, start + size));
                    start -= slide;
                }
            }
            WindowAssigner::EventTimeSession { gap }
            | WindowAssigner::ProcessingTimeSession { gap } => {
                out.push(Window::time(t, t + gap));
            }
            WindowAssigner::DynamicEventTimeSession { gap_field }
            | WindowAssigner::DynamicProcessingTimeSession { gap_field } => {
                let gap = value
                    .as_tuple()
                    .and_then(|f| f.get(gap_field))
                    .and_then(Value::as_i64)
                    .filter(|g| *g > 0)
                    .ok_or_else(|| DataflowError::Operator {
                        operator: "window".into(),
                        message: format!(
                            "record {value} has no positive i64 session gap in field {gap_field}"
                        ),
                    })?;
                out.push(Window::time(t, t + gap));
            }
            WindowAssigner::Global => out.push(Window::Global),
        }
        Ok(())
    }

    /// Groups `windows` into merged sessions (Flink's `TimeWindow.mergeWindows`): sorted
    /// by start, every run of overlapping or touching windows becomes one covering
    /// window. Returns only groups of more than one window, as (covering window, members).
    pub fn merge_windows(windows: &[Window]) -> Vec<(Window, Vec<Window>)> {
        let mut sorted = windows.to_vec();
        sorted.sort();
        let mut groups: Vec<(Window, Vec<Window>)> = Vec::new();
        for w in sorted {
            match groups.last_mut() {
                Some((cover, members)) if cover.intersects(&w) => {
                    *cover = cover.cover(&w);
                    members.push(w);
                }
                _ => groups.push((w, vec![w])),
            }
        }
        groups.retain(|(_, members)| members.len() > 1);
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assign(a: &WindowAssigner, t: i64) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        a.assign(&Value::Null, Some(t), 0, &mut out).unwrap();
        out.iter().map(|w| (w.start(), w.end())).collect()
    }

    #[test]
    fn tumbling_windows_align_to_the_epoch_and_offset() {
        let a = WindowAssigner::tumbling_event_time(5_000);
        assert_eq!(assign(&a, 0), [(0, 5_000)]);
        assert_eq!(assign(&a, 4_999), [(0, 5_000)]);
        assert_eq!(assign(&a, 5_000), [(5_000, 10_000)]);
        assert_eq!(assign(&a, -1), [(-5_000, 0)]);
        let shifted = WindowAssigner::TumblingEventTime {
            size: 5_000,
            offset: 1_000,
        };
        assert_eq!(assign(&shifted, 500), [(-4_000, 1_000)]);
        assert_eq!(assign(&shifted, 1_000), [(1_000, 6_000)]);
        assert_eq!(window_start_with_offset(7, 0, 3), 6);
    }

    #[test]
    fn sliding_windows_cover_every_start_within_size() {
        let a = WindowAssigner::sliding_event_time(10, 4);
        // Starts 8, 4, 0 contain 9 (8 > 9 - 10 = -1 down to 0; -4 is not > -1).
        assert_eq!(assign(&a, 9), [(8, 18), (4, 14), (0, 10)]);
        assert_eq!(assign(&a, 0), [(0, 10), (-4, 6), (-8, 2)]);
        // slide > size: some timestamps are in no window.
        let gaps = WindowAssigner::sliding_event_time(2, 5);
        assert_eq!(assign(&gaps, 1), [(0, 2)]);
        assert!(assign(&gaps, 3).is_empty());
    }

    #[test]
    fn sessions_and_merging() {
        let a = WindowAssigner::event_time_session(3);
        assert_eq!(assign(&a, 7), [(7, 10)]);
        let w = |s, e| Window::time(s, e);
        let merged =
            WindowAssigner::merge_windows(&[w(10, 13), w(0, 3), w(3, 6), w(20, 23), w(12, 15)]);
        assert_eq!(
            merged,
            [
                (w(0, 6), vec![w(0, 3), w(3, 6)]),
                (w(10, 15), vec![w(10, 13), w(12, 15)]),
            ]
        );
        let dynamic = WindowAssigner::DynamicEventTimeSession { gap_field: 1 };
        let mut out = Vec::new();
        dynamic
            .assign(
                &Value::Tuple(vec!["k".into(), Value::I64(4)]),
                Some(2),
                0,
                &mut out,
            )
            .unwrap();
        assert_eq!(out, [w(2, 6)]);
        assert!(dynamic
            .assign(&Value::Tuple(vec!["k".into()]), Some(2), 0, &mut out)
            .is_err());
    }

    #[test]
    fn processing_time_uses_the_clock_and_event_time_needs_timestamps() {
        let a = WindowAssigner::tumbling_processing_time(100);
        let mut out = Vec::new();
        a.assign(&Value::Null, None, 250, &mut out).unwrap();
        assert_eq!(out, [Window::time(200, 300)]);
        assert!(WindowAssigner::tumbling_event_time(100)
            .assign(&Value::Null, None, 250, &mut out)
            .is_err());
        assert!(WindowAssigner::tumbling_event_time(0).validate().is_err());
        assert!(WindowAssigner::sliding_event_time(10, 0)
            .validate()
            .is_err());
        assert!(WindowAssigner::event_time_session(0).validate().is_err());
        assert_eq!(Window::Global.max_timestamp(), i64::MAX);
        assert_eq!(Window::time(0, 10).max_timestamp(), 9);
    }
}
