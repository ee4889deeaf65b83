//! Combining watermarks of several input channels (Flink's `StatusWatermarkValve`).
//!
//! A task's event time is the minimum watermark over its input channels, because each
//! channel only promises its own progress. Two refinements:
//!
//! * **Idle channels are excluded.** A channel that announced `Idle` does not hold the
//!   minimum back; when *every* channel is idle the task forwards the largest watermark
//!   seen and becomes idle itself, and it becomes active again with the first active
//!   channel.
//! * **Re-activated channels must catch up.** A channel that returns from idleness with
//!   a watermark below the task's current one is *unaligned* and ignored in the minimum
//!   until it reaches the current watermark, so the output never goes backwards.
//!
//! Channels that reached end of input stop counting (as if at `i64::MAX`). The valve is
//! a pure state machine: inputs in, at most one new watermark and status out.

use crate::element::WatermarkStatus;

#[derive(Clone, Copy, Debug)]
struct Channel {
    watermark: i64,
    idle: bool,
    /// Counts towards the minimum (not behind the output after re-activation).
    aligned: bool,
}

/// What the task must forward after feeding the valve.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ValveOutput {
    /// A new, larger output watermark.
    pub watermark: Option<i64>,
    /// A change of the task's output status.
    pub status: Option<WatermarkStatus>,
}

/// Min-over-active-channels watermark combiner.
#[derive(Clone, Debug)]
pub struct WatermarkValve {
    channels: Vec<Channel>,
    output: i64,
    output_idle: bool,
}

impl WatermarkValve {
    /// A valve over `channels` input channels, all active, none with a watermark yet.
    pub fn new(channels: usize) -> Self {
        Self {
            channels: vec![
                Channel {
                    watermark: i64::MIN,
                    idle: false,
                    aligned: true,
                };
                channels
            ],
            output: i64::MIN,
            output_idle: false,
        }
    }

    /// The last watermark output (`i64::MIN` before any).
    pub fn current(&self) -> i64 {
        self.output
    }

    /// Channel `channel` delivered watermark `watermark`; returns a new output watermark
    /// if the minimum advanced. Out-of-range channels and idle channels are ignored.
    pub fn input_watermark(&mut self, channel: usize, watermark: i64) -> Option<i64> {
        let output = self.output;
        let c = self.channels.get_mut(channel)?;
        if c.idle || watermark <= c.watermark {
            return None;
        }
        c.watermark = watermark;
        if !c.aligned && watermark >= output {
            c.aligned = true;
        }
        self.advance()
    }

    /// Channel `channel` changed status.
    pub fn input_status(&mut self, channel: usize, status: WatermarkStatus) -> ValveOutput {
        let output = self.output;
        let Some(c) = self.channels.get_mut(channel) else {
            return ValveOutput::default();
        };
        let mut out = ValveOutput::default();
        match status {
            WatermarkStatus::Idle if !c.idle => {
                c.idle = true;
                c.aligned = false;
                if self.channels.iter().all(|c| c.idle) {
                    let max = self
                        .channels
                        .iter()
                        .map(|c| c.watermark)
                        .max()
                        .unwrap_or(i64::MIN);
                    if max > self.output {
                        self.output = max;
                        out.watermark = Some(max);
                    }
                    self.output_idle = true;
                    out.status = Some(WatermarkStatus::Idle);
                } else {
                    out.watermark = self.advance();
                }
            }
            WatermarkStatus::Active if c.idle => {
                c.idle = false;
                c.aligned = c.watermark >= output;
                if self.output_idle {
                    self.output_idle = false;
                    out.status = Some(WatermarkStatus::Active);
                }
            }
            _ => {}
        }
        out
    }

    /// Channel `channel` reached end of input: it no longer holds the watermark back.
    pub fn input_ended(&mut self, channel: usize) -> Option<i64> {
        let c = self.channels.get_mut(channel)?;
        *c = Channel {
            watermark: i64::MAX,
            idle: false,
            aligned: true,
        };
        self.advance()
    }

    fn advance(&mut self) -> Option<i64> {
        let min = self
            .channels
            .iter()
            .filter(|c| c.aligned && !c.idle)
            .map(|c| c.watermark)
            .min()?;
        (min > self.output).then(|| {
            self.output = min;
            min
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use WatermarkStatus::{Active, Idle};

    #[test]
    fn output_is_min_over_channels() {
        let mut v = WatermarkValve::new(2);
        assert_eq!(v.input_watermark(0, 10), None);
        assert_eq!(v.input_watermark(1, 5), Some(5));
        assert_eq!(v.input_watermark(1, 20), Some(10));
        assert_eq!(v.input_watermark(1, 15), None, "watermarks never go back");
        assert_eq!(v.input_watermark(7, 100), None, "unknown channel ignored");
    }

    #[test]
    fn idle_channels_are_excluded() {
        let mut v = WatermarkValve::new(2);
        v.input_watermark(0, 10);
        let out = v.input_status(1, Idle);
        assert_eq!(
            out,
            ValveOutput {
                watermark: Some(10),
                status: None
            }
        );
        assert_eq!(v.input_watermark(0, 12), Some(12));
        assert_eq!(
            v.input_watermark(1, 50),
            None,
            "idle channel's watermark ignored"
        );
    }

    #[test]
    fn all_idle_forwards_max_and_goes_idle_then_reactivates() {
        let mut v = WatermarkValve::new(2);
        v.input_watermark(0, 10);
        v.input_watermark(1, 20);
        assert_eq!(v.input_status(0, Idle).watermark, Some(20));
        let out = v.input_status(1, Idle);
        assert_eq!(
            out,
            ValveOutput {
                watermark: None,
                status: Some(Idle)
            }
        );
        let out = v.input_status(0, Active);
        assert_eq!(
            out,
            ValveOutput {
                watermark: None,
                status: Some(Active)
            }
        );
        // Channel 0 is at 10 < 20: unaligned until it catches up.
        assert_eq!(v.input_watermark(0, 15), None);
        assert_eq!(v.input_watermark(0, 25), Some(25));
    }

    #[test]
    fn all_idle_forwards_the_largest_watermark() {
        let mut v = WatermarkValve::new(2);
        v.input_watermark(0, 30);
        v.input_watermark(1, 20);
        assert_eq!(v.current(), 20);
        v.input_status(1, Idle); // min over {0} = 30
        v.input_watermark(0, 40);
        let out = v.input_status(0, Idle);
        assert_eq!(
            out,
            ValveOutput {
                watermark: None,
                status: Some(Idle)
            }
        );
        assert_eq!(v.current(), 40);
    }

    #[test]
    fn ended_channels_stop_holding_back() {
        let mut v = WatermarkValve::new(2);
        v.input_watermark(0, 10);
        assert_eq!(v.input_ended(1), Some(10));
        assert_eq!(v.input_ended(0), Some(i64::MAX));
    }
}
