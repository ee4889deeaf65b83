//! The credit-based flow-control protocol as two pure state machines, one per end of a
//! remote input channel. No I/O, no tokio, no clock: messages and the current time go in,
//! messages and decisions come out (the quinn-proto pattern). The QUIC driver
//! ([`quic`](crate::quic)) moves the bytes.
//!
//! # Protocol
//!
//! 1. The consumer reserves its exclusive buffers, then sends
//!    `PartitionRequest{partition, subpartition, initial_credit}` with one credit per
//!    reserved buffer.
//! 2. The producer sends a data buffer only while it holds credit, and spends one credit
//!    per data buffer. Events (end of partition, barriers, cancel markers) need none. Every
//!    response carries a sequence number (0, 1, 2, …) and the producer's *backlog*: data
//!    buffers still queued for this channel.
//! 3. The consumer checks the sequence (a gap is a [`NetworkError::SequenceGap`]) and the
//!    credit (data without credit is a [`NetworkError::CreditViolation`]). From the
//!    backlog it computes how many buffers it wants (`backlog + initial_credit`, Flink's
//!    rule), asks its gate for floating buffers, and announces every buffer it has
//!    reserved but not yet announced with `AddCredit(n)`. A consumed exclusive buffer
//!    comes back to its channel and is announced again; a floating one goes back to the
//!    gate.
//! 4. After an aligned barrier the producer's subpartition is blocked;
//!    `ResumeConsumption` unblocks it.
//! 5. `CancelPartitionRequest` (consumer cancelled), `CloseRequest` (consumer done after
//!    end-of-partition) end the channel; the producer's `ErrorResponse` ends it too. An
//!    `ErrorResponse(PartitionNotFound)` — the producer is not deployed yet — makes the
//!    consumer retry after a backoff that doubles from `request-backoff-initial` up to
//!    `request-backoff-max`, then gives up. This is where time enters: the consumer
//!    reports its next deadline in [`ConsumerCredit::poll_timeout`] and the driver calls
//!    [`ConsumerCredit::handle_timeout`].
//!
//! # Invariants (checked by the property tests below)
//!
//! * the producer never sends a data buffer without credit;
//! * the consumer's announced credit never exceeds the buffers it holds for the channel,
//!   so every data buffer that arrives has somewhere to go;
//! * every buffer handed to the consumer state machine comes out again — used for data,
//!   or returned by [`ConsumerCredit::release`] on close, cancel or error.

use std::time::{Duration, Instant};

use crate::error::NetworkError;
use crate::partition::PartitionId;
use crate::protocol::{BufferHeader, ConsumerMessage, DataType, ErrorKind};

/// What the producer's driver must do after a consumer message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProducerAction {
    /// Nothing beyond trying to send more.
    None,
    /// Open a view on this subpartition and start sending.
    Open {
        /// Partition requested.
        partition: PartitionId,
        /// Subpartition requested.
        subpartition: u32,
    },
    /// Unblock the view after a blocking event.
    Resume,
    /// The consumer cancelled: release the view and end the stream.
    Cancel,
    /// The consumer is done: release the view and end the stream.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProducerPhase {
    AwaitingRequest,
    Active,
    Closed,
}

/// Producer end of one channel.
#[derive(Debug)]
pub struct ProducerCredit {
    phase: ProducerPhase,
    credit: u32,
    next_seq: u32,
    /// When the producer last found data queued but no credit (credit-starved).
    starved_since: Option<Instant>,
    starved_total: Duration,
}

impl Default for ProducerCredit {
    fn default() -> Self {
        Self::new()
    }
}

impl ProducerCredit {
    /// A channel waiting for its partition request.
    pub fn new() -> Self {
        ProducerCredit {
            phase: ProducerPhase::AwaitingRequest,
            credit: 0,
            next_seq: 0,
            starved_since: None,
            starved_total: Duration::ZERO,
        }
    }

    /// Credit currently held.
    pub fn credit(&self) -> u32 {
        self.credit
    }

    /// Whether the channel ended (cancel or close).
    pub fn is_closed(&self) -> bool {
        self.phase == ProducerPhase::Closed
    }

    /// Total time the channel had data queued but no credit, up to `now`.
    pub fn starved_time(&self, now: Instant) -> Duration {
        self.starved_total
            + self
                .starved_since
                .map_or(Duration::ZERO, |s| now.saturating_duration_since(s))
    }

    /// Handles one consumer message; an error means the consumer broke the protocol.
    pub fn handle(
        &mut self,
        msg: ConsumerMessage,
        now: Instant,
    ) -> Result<ProducerAction, NetworkError> {
        match (self.phase, msg) {
            (
                ProducerPhase::AwaitingRequest,
                ConsumerMessage::PartitionRequest {
                    partition,
                    subpartition,
                    initial_credit,
                },
            ) => {
                self.phase = ProducerPhase::Active;
                self.credit = initial_credit;
                Ok(ProducerAction::Open {
                    partition,
                    subpartition,
                })
            }
            (ProducerPhase::AwaitingRequest, m) => Err(NetworkError::malformed(format!(
                "{m:?} before PartitionRequest"
            ))),
            (ProducerPhase::Active, ConsumerMessage::PartitionRequest { .. }) => Err(
                NetworkError::malformed("second PartitionRequest on one stream"),
            ),
            (ProducerPhase::Active, ConsumerMessage::AddCredit(0)) => {
                Err(NetworkError::credit("AddCredit(0)"))
            }
            (ProducerPhase::Active, ConsumerMessage::AddCredit(n)) => {
                self.credit = self.credit.checked_add(n).ok_or_else(|| {
                    NetworkError::credit(format!("credit overflow: {} + {n}", self.credit))
                })?;
                if let Some(s) = self.starved_since.take() {
                    self.starved_total += now.saturating_duration_since(s);
                }
                Ok(ProducerAction::None)
            }
            (ProducerPhase::Active, ConsumerMessage::ResumeConsumption) => {
                Ok(ProducerAction::Resume)
            }
            (ProducerPhase::Active, ConsumerMessage::CancelPartitionRequest) => {
                self.phase = ProducerPhase::Closed;
                Ok(ProducerAction::Cancel)
            }
            (ProducerPhase::Active, ConsumerMessage::CloseRequest) => {
                self.phase = ProducerPhase::Closed;
                Ok(ProducerAction::Close)
            }
            // Late messages after close (e.g. credit racing a cancel) are harmless.
            (ProducerPhase::Closed, _) => Ok(ProducerAction::None),
        }
    }

    /// Whether an element of this type may be sent now.
    pub fn may_send(&self, data_type: DataType) -> bool {
        self.phase == ProducerPhase::Active && (data_type == DataType::Event || self.credit > 0)
    }

    /// Notes that data is queued but cannot be sent for lack of credit.
    pub fn note_starved(&mut self, now: Instant) {
        if self.starved_since.is_none() {
            self.starved_since = Some(now);
        }
    }

    /// Spends credit for an element about to be sent and returns its header.
    ///
    /// Calling it when [`Self::may_send`] is false is a local bug, reported as an error
    /// rather than sending without credit.
    pub fn on_send(
        &mut self,
        data_type: DataType,
        size: u32,
        backlog: u32,
    ) -> Result<BufferHeader, NetworkError> {
        if !self.may_send(data_type) {
            return Err(NetworkError::credit(
                "producer tried to send without credit",
            ));
        }
        if data_type == DataType::Data {
            self.credit -= 1;
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        Ok(BufferHeader {
            seq,
            backlog,
            data_type,
            size,
        })
    }
}

/// What arrived, as seen by the consumer state machine.
#[derive(Debug)]
pub enum Received<B> {
    /// A data buffer: fill this reserved buffer with the payload.
    Data(B),
    /// An event: decode the payload.
    Event,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConsumerPhase {
    /// Needs to (re)send a partition request once it holds its exclusive buffers.
    Requesting,
    /// Request sent; buffers flowing.
    Active,
    /// Waiting to retry a request for a partition the producer did not know.
    Backoff { retry_at: Instant },
    /// End of partition received, or cancelled; nothing more is accepted.
    Closed,
}

/// Consumer end of one remote channel. `B` is the buffer type (a pool
/// [`Buffer`](crate::buffer_pool::Buffer) in the driver, a token in tests).
#[derive(Debug)]
pub struct ConsumerCredit<B> {
    partition: PartitionId,
    subpartition: u32,
    phase: ConsumerPhase,
    exclusive_target: u32,
    exclusive: Vec<B>,
    floating: Vec<B>,
    /// Credit the producer holds: buffers reserved for data in flight.
    announced: u32,
    initial_credit: u32,
    expected_seq: u32,
    backlog: u32,
    pending_resume: bool,
    pending_end: Option<ConsumerMessage>,
    backoff: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
}

impl<B> ConsumerCredit<B> {
    /// A channel that will read `subpartition` of `partition` with `exclusive` exclusive
    /// buffers, retrying unknown partitions with the given backoff bounds.
    pub fn new(
        partition: PartitionId,
        subpartition: u32,
        exclusive: u32,
        backoff_initial: Duration,
        backoff_max: Duration,
    ) -> Self {
        ConsumerCredit {
            partition,
            subpartition,
            phase: ConsumerPhase::Requesting,
            exclusive_target: exclusive,
            exclusive: Vec::new(),
            floating: Vec::new(),
            announced: 0,
            initial_credit: exclusive,
            expected_seq: 0,
            backlog: 0,
            pending_resume: false,
            pending_end: None,
            backoff: backoff_initial,
            backoff_initial,
            backoff_max,
        }
    }

    fn held(&self) -> u32 {
        (self.exclusive.len() + self.floating.len()) as u32
    }

    /// Credit the producer currently holds.
    pub fn announced_credit(&self) -> u32 {
        self.announced
    }

    /// Buffers held for incoming data (announced or not).
    pub fn held_buffers(&self) -> u32 {
        self.held()
    }

    /// Last backlog the producer reported.
    pub fn backlog(&self) -> u32 {
        self.backlog
    }

    /// Whether the channel ended.
    pub fn is_closed(&self) -> bool {
        self.phase == ConsumerPhase::Closed
    }

    /// Whether a (new) stream must be opened to send a partition request: the driver opens
    /// one when this turns true, then drains [`Self::poll_transmit`].
    pub fn needs_stream(&self) -> bool {
        self.phase == ConsumerPhase::Requesting && self.held() >= self.exclusive_target
    }

    /// Adds a recycled (or initially reserved) exclusive buffer.
    pub fn add_exclusive(&mut self, buffer: B) {
        self.exclusive.push(buffer);
    }

    /// Adds a floating buffer granted by the gate.
    pub fn add_floating(&mut self, buffer: B) {
        self.floating.push(buffer);
    }

    /// Floating buffers wanted from the gate now: `backlog + initial_credit` minus what is
    /// held (Flink's rule), zero unless the channel is active.
    pub fn floating_wanted(&self) -> u32 {
        if self.phase != ConsumerPhase::Active {
            return 0;
        }
        (self.backlog + self.initial_credit).saturating_sub(self.held())
    }

    /// Next message to send, if any. PartitionRequest first, then resume, then credit;
    /// a pending cancel or close is sent last.
    pub fn poll_transmit(&mut self) -> Option<ConsumerMessage> {
        match self.phase {
            ConsumerPhase::Requesting if self.held() >= self.exclusive_target => {
                self.phase = ConsumerPhase::Active;
                self.expected_seq = 0;
                self.announced = self.held();
                self.initial_credit = self.announced.max(1);
                return Some(ConsumerMessage::PartitionRequest {
                    partition: self.partition,
                    subpartition: self.subpartition,
                    initial_credit: self.announced,
                });
            }
            ConsumerPhase::Active => {
                if self.pending_resume {
                    self.pending_resume = false;
                    return Some(ConsumerMessage::ResumeConsumption);
                }
                let unannounced = self.held() - self.announced;
                if unannounced > 0 {
                    self.announced += unannounced;
                    return Some(ConsumerMessage::AddCredit(unannounced));
                }
            }
            ConsumerPhase::Closed => return self.pending_end.take(),
            _ => {}
        }
        None
    }

    /// Handles a buffer-response header.
    pub fn on_buffer(&mut self, header: &BufferHeader) -> Result<Received<B>, NetworkError> {
        if self.phase != ConsumerPhase::Active {
            return Err(NetworkError::malformed(format!(
                "buffer response while {:?}",
                self.phase
            )));
        }
        if header.seq != self.expected_seq {
            return Err(NetworkError::SequenceGap {
                expected: self.expected_seq,
                received: header.seq,
            });
        }
        self.expected_seq = self.expected_seq.wrapping_add(1);
        self.backlog = header.backlog;
        match header.data_type {
            DataType::Event => Ok(Received::Event),
            DataType::Data => {
                if self.announced == 0 {
                    return Err(NetworkError::credit(format!(
                        "data buffer {} arrived without credit",
                        header.seq
                    )));
                }
                self.announced -= 1;
                // Floating first, so exclusive buffers (which need no gate round trip to
                // come back) stay as the channel's reserve, as in Flink.
                let buffer = self
                    .floating
                    .pop()
                    .or_else(|| self.exclusive.pop())
                    .ok_or_else(|| NetworkError::credit("announced credit without a buffer"))?;
                Ok(Received::Data(buffer))
            }
        }
    }

    /// Handles an error response at `now`; `Ok` means a retry is scheduled.
    pub fn on_error(
        &mut self,
        kind: ErrorKind,
        message: &str,
        now: Instant,
    ) -> Result<(), NetworkError> {
        match kind {
            ErrorKind::PartitionNotFound if self.backoff <= self.backoff_max => {
                self.phase = ConsumerPhase::Backoff {
                    retry_at: now + self.backoff,
                };
                self.backoff = self.backoff.saturating_mul(2);
                self.announced = 0;
                Ok(())
            }
            ErrorKind::PartitionNotFound => Err(NetworkError::PartitionNotFound {
                partition: self.partition,
            }),
            _ => {
                self.phase = ConsumerPhase::Closed;
                Err(NetworkError::Remote {
                    message: format!("{kind:?}: {message}").into(),
                })
            }
        }
    }

    /// When [`Self::handle_timeout`] must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            ConsumerPhase::Backoff { retry_at } => Some(retry_at),
            _ => None,
        }
    }

    /// Advances time: a due retry moves the channel back to requesting.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let ConsumerPhase::Backoff { retry_at } = self.phase {
            if now >= retry_at {
                self.phase = ConsumerPhase::Requesting;
            }
        }
    }

    /// The consumer delivered a blocking event and is ready for more.
    pub fn resume_consumption(&mut self) {
        if self.phase == ConsumerPhase::Active {
            self.pending_resume = true;
        }
    }

    /// End of partition arrived: send `CloseRequest` and accept nothing more.
    pub fn on_end_of_partition(&mut self) {
        self.close(ConsumerMessage::CloseRequest);
    }

    /// The consumer cancels: send `CancelPartitionRequest` if a request is outstanding.
    pub fn cancel(&mut self) {
        self.close(ConsumerMessage::CancelPartitionRequest);
    }

    fn close(&mut self, msg: ConsumerMessage) {
        if self.phase == ConsumerPhase::Active {
            self.pending_end = Some(msg);
        }
        self.phase = ConsumerPhase::Closed;
        self.backoff = self.backoff_initial;
    }

    /// Returns every held buffer (to be dropped back into its pool) and closes the
    /// channel; used on close, cancel and error.
    pub fn release(&mut self) -> Vec<B> {
        if self.phase != ConsumerPhase::Closed {
            self.phase = ConsumerPhase::Closed;
        }
        self.announced = 0;
        let mut all = std::mem::take(&mut self.exclusive);
        all.append(&mut self.floating);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    const P: PartitionId = PartitionId(1);

    fn consumer(excl: u32) -> ConsumerCredit<u32> {
        let mut c = ConsumerCredit::new(
            P,
            0,
            excl,
            Duration::from_millis(100),
            Duration::from_millis(400),
        );
        for i in 0..excl {
            c.add_exclusive(i);
        }
        c
    }

    fn data(seq: u32, backlog: u32) -> BufferHeader {
        BufferHeader {
            seq,
            backlog,
            data_type: DataType::Data,
            size: 10,
        }
    }

    #[test]
    fn request_carries_exclusive_credit_and_backlog_drives_floating() {
        let t0 = Instant::now();
        let mut c = consumer(2);
        assert!(c.needs_stream());
        let req = c.poll_transmit().unwrap();
        assert_eq!(
            req,
            ConsumerMessage::PartitionRequest {
                partition: P,
                subpartition: 0,
                initial_credit: 2
            }
        );
        let mut p = ProducerCredit::new();
        assert_eq!(
            p.handle(req, t0).unwrap(),
            ProducerAction::Open {
                partition: P,
                subpartition: 0
            }
        );
        let h = p.on_send(DataType::Data, 10, 5).unwrap();
        assert!(matches!(c.on_buffer(&h).unwrap(), Received::Data(_)));
        // backlog 5 + initial 2 − 1 held = 6 floating buffers wanted.
        assert_eq!(c.floating_wanted(), 6);
        for i in 0..6 {
            c.add_floating(100 + i);
        }
        assert_eq!(c.poll_transmit(), Some(ConsumerMessage::AddCredit(6)));
        assert_eq!(c.poll_transmit(), None);
        p.handle(ConsumerMessage::AddCredit(6), t0).unwrap();
        assert_eq!(p.credit(), 7);
    }

    #[test]
    fn data_without_credit_is_a_violation_and_events_need_none() {
        let mut c = consumer(1);
        c.poll_transmit();
        c.on_buffer(&data(0, 0)).unwrap();
        let ev = BufferHeader {
            seq: 1,
            backlog: 0,
            data_type: DataType::Event,
            size: 1,
        };
        assert!(matches!(c.on_buffer(&ev).unwrap(), Received::Event));
        assert!(matches!(
            c.on_buffer(&data(2, 0)),
            Err(NetworkError::CreditViolation { .. })
        ));
        let mut p = ProducerCredit::new();
        assert!(p.on_send(DataType::Data, 1, 0).is_err(), "not even open");
        p.handle(
            ConsumerMessage::PartitionRequest {
                partition: P,
                subpartition: 0,
                initial_credit: 0,
            },
            Instant::now(),
        )
        .unwrap();
        assert!(!p.may_send(DataType::Data));
        assert!(p.may_send(DataType::Event));
        assert!(p.on_send(DataType::Data, 1, 0).is_err());
    }

    #[test]
    fn sequence_gap_is_an_error() {
        let mut c = consumer(2);
        c.poll_transmit();
        c.on_buffer(&data(0, 0)).unwrap();
        assert!(matches!(
            c.on_buffer(&data(2, 0)),
            Err(NetworkError::SequenceGap {
                expected: 1,
                received: 2
            })
        ));
    }

    #[test]
    fn bad_consumer_messages_are_rejected() {
        let t = Instant::now();
        let mut p = ProducerCredit::new();
        assert!(p.handle(ConsumerMessage::AddCredit(1), t).is_err());
        p.handle(
            ConsumerMessage::PartitionRequest {
                partition: P,
                subpartition: 0,
                initial_credit: u32::MAX,
            },
            t,
        )
        .unwrap();
        assert!(matches!(
            p.handle(ConsumerMessage::AddCredit(1), t),
            Err(NetworkError::CreditViolation { .. })
        ));
        assert!(p.handle(ConsumerMessage::AddCredit(0), t).is_err());
        assert!(p
            .handle(
                ConsumerMessage::PartitionRequest {
                    partition: P,
                    subpartition: 0,
                    initial_credit: 1
                },
                t
            )
            .is_err());
    }

    #[test]
    fn partition_not_found_retries_with_doubling_backoff_in_virtual_time() {
        let t0 = Instant::now();
        let mut c = consumer(2);
        let mut now = t0;
        let mut retries = 0;
        loop {
            assert!(matches!(
                c.poll_transmit(),
                Some(ConsumerMessage::PartitionRequest { .. })
            ));
            match c.on_error(ErrorKind::PartitionNotFound, "not yet", now) {
                Ok(()) => {
                    let at = c.poll_timeout().unwrap();
                    c.handle_timeout(at - Duration::from_millis(1));
                    assert!(!c.needs_stream(), "too early");
                    now = at;
                    c.handle_timeout(now);
                    assert!(c.needs_stream());
                    retries += 1;
                }
                Err(e) => {
                    assert!(matches!(e, NetworkError::PartitionNotFound { .. }));
                    break;
                }
            }
        }
        // 100, 200, 400 ms, then the 800 ms step exceeds the 400 ms maximum.
        assert_eq!(retries, 3);
        assert_eq!(now - t0, Duration::from_millis(700));
        assert_eq!(c.release().len(), 2);
    }

    #[derive(Debug, Clone)]
    enum Step {
        ProducerSend,
        DeliverToProducer,
        DeliverToConsumer,
        TaskConsumes,
        GrantFloating,
        Transmit,
        Resume,
        Cancel,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => Just(Step::ProducerSend),
            3 => Just(Step::DeliverToProducer),
            4 => Just(Step::DeliverToConsumer),
            3 => Just(Step::TaskConsumes),
            2 => Just(Step::GrantFloating),
            3 => Just(Step::Transmit),
            1 => Just(Step::Resume),
            1 => Just(Step::Cancel),
        ]
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Tok {
        Excl(u32),
        Float(u32),
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, rng_seed: proptest::test_runner::RngSeed::Fixed(17), ..ProptestConfig::default() })]
        /// Random interleavings of a producer and consumer joined by two in-order
        /// queues: the producer never sends data without credit (the consumer would
        /// report a violation), data arrives in order, and every buffer returns.
        #[test]
        fn credit_protocol_is_safe_under_random_interleavings(
            items in proptest::collection::vec(prop_oneof![5 => Just(true), 1 => Just(false)], 0..60),
            steps in proptest::collection::vec(step(), 0..400),
            excl in 1u32..4,
            floating_total in 0u32..6,
        ) {
            let now = Instant::now();
            let mut c: ConsumerCredit<Tok> = ConsumerCredit::new(P, 0, excl, Duration::from_millis(1), Duration::from_millis(1));
            for i in 0..excl { c.add_exclusive(Tok::Excl(i)); }
            let mut floating_pool: Vec<Tok> = (0..floating_total).map(Tok::Float).collect();
            let mut p = ProducerCredit::new();
            // Producer queue: (index, is_data).
            let mut queue: VecDeque<(usize, bool)> = items.iter().copied().enumerate().collect();
            let mut to_producer: VecDeque<ConsumerMessage> = VecDeque::new();
            let mut to_consumer: VecDeque<(BufferHeader, usize)> = VecDeque::new();
            let mut task: VecDeque<Tok> = VecDeque::new();
            let mut received: Vec<usize> = Vec::new();
            let mut cancelled = false;
            let mut exclusive_dropped = 0u32;
            for s in steps {
                match s {
                    Step::ProducerSend => {
                        if let Some(&(i, is_data)) = queue.front() {
                            let dt = if is_data { DataType::Data } else { DataType::Event };
                            if p.may_send(dt) {
                                queue.pop_front();
                                let backlog = queue.iter().filter(|(_, d)| *d).count() as u32;
                                let h = p.on_send(dt, 8, backlog).unwrap();
                                to_consumer.push_back((h, i));
                            } else {
                                prop_assert!(p.on_send(dt, 8, 0).is_err());
                                p.note_starved(now);
                            }
                        }
                    }
                    Step::DeliverToProducer => {
                        if let Some(m) = to_producer.pop_front() {
                            p.handle(m, now).unwrap();
                        }
                    }
                    Step::DeliverToConsumer => {
                        if let Some((h, i)) = to_consumer.pop_front() {
                            if c.is_closed() { continue; }
                            match c.on_buffer(&h) {
                                Ok(Received::Data(tok)) => { task.push_back(tok); received.push(i); }
                                Ok(Received::Event) => received.push(i),
                                Err(e) => prop_assert!(false, "protocol error {e}"),
                            }
                        }
                    }
                    Step::TaskConsumes => {
                        match task.pop_front() {
                            Some(Tok::Excl(i)) if !c.is_closed() => c.add_exclusive(Tok::Excl(i)),
                            Some(Tok::Excl(_)) => exclusive_dropped += 1,
                            Some(f @ Tok::Float(_)) => floating_pool.push(f),
                            None => {}
                        }
                    }
                    Step::GrantFloating => {
                        if c.floating_wanted() > 0 {
                            if let Some(f) = floating_pool.pop() { c.add_floating(f); }
                        }
                    }
                    Step::Transmit => {
                        while let Some(m) = c.poll_transmit() { to_producer.push_back(m); }
                        prop_assert!(c.announced_credit() <= c.held_buffers() || c.is_closed());
                    }
                    Step::Resume => c.resume_consumption(),
                    Step::Cancel => { c.cancel(); cancelled = true; }
                }
            }
            // Data arrives in order and without loss (unless cancelled mid-way).
            prop_assert!(received.windows(2).all(|w| w[0] < w[1]));
            if !cancelled {
                prop_assert_eq!(received.clone(), (0..received.len()).collect::<Vec<_>>());
            }
            // Every buffer comes back: those in the task, the state machine and the pool.
            let mut exclusive_back = 0;
            let mut floating_back = floating_pool.len() as u32;
            for t in task.drain(..).chain(c.release()) {
                match t { Tok::Excl(_) => exclusive_back += 1, Tok::Float(_) => floating_back += 1 }
            }
            prop_assert_eq!(exclusive_back + exclusive_dropped, excl);
            prop_assert_eq!(floating_back, floating_total);
        }
    }
}
