//! A short seeded run of every fuzz target (`scripts/fuzz.sh` runs them for longer), and
//! the deepest nesting a peer can send through rmp-serde, on a production-sized stack.

use rill_benches::fuzz::{self, Budget, GuardedAlloc};

#[global_allocator]
static ALLOC: GuardedAlloc = GuardedAlloc;

/// Inputs per target: a fraction of a second each in a debug build.
const INPUTS: u64 = 20_000;
/// Fixed, so that CI runs the same inputs every time (`scripts/fuzz.sh` varies them).
const SEED: u64 = 0x5eed;

fn short_run(name: &str) {
    let target = fuzz::target(name).expect("known target");
    if let Err(finding) = fuzz::run(target, SEED, 0, Budget::Inputs(INPUTS)) {
        panic!("{finding}");
    }
}

#[test]
fn rpc_frame() {
    short_run("rpc_frame");
}

#[test]
fn data_protocol() {
    short_run("data_protocol");
}

#[test]
fn record_codec() {
    short_run("record_codec");
}

#[test]
fn job_graph() {
    short_run("job_graph");
}

/// A `collect` call whose values nest as deep as the input allows is refused before it
/// exhausts a 2 MiB stack (a stack overflow would abort the whole process, not just fail
/// the call).
#[test]
fn deeply_nested_values_fail_to_decode_without_exhausting_the_stack() {
    use rill_dataflow::Value;
    use rill_endpoints::gateways::job_master;
    // Encoding recurses too: do it on a big stack.
    let encoded = std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(|| {
            let deep = (0..5_000).fold(Value::Null, |v, _| Value::Tuple(vec![v]));
            rmp_serde::to_vec(&job_master::Request::collect {
                execution: rill_endpoints::messages::ExecutionAttemptId(7),
                id: "out".into(),
                subtask: 0,
                values: vec![deep],
            })
            .unwrap()
        })
        .unwrap()
        .join()
        .unwrap();
    let decoded = std::thread::Builder::new()
        .name("decode-nested-values".into())
        .stack_size(fuzz::STACK_SIZE)
        .spawn(move || {
            // Both ways a `collect` is decoded: by the guarded `Value` with rmp-serde's
            // default depth, and through the RPC layer's bounded payload decoder.
            let plain = rmp_serde::from_slice::<job_master::Request>(&encoded).is_ok();
            let rpc = rill_runtime::frame::decode_payload::<job_master::Request>(&encoded);
            plain || rpc.is_ok()
        })
        .unwrap()
        .join()
        .unwrap();
    assert!(!decoded, "5000 levels of nesting must be refused");
}

/// Unknown map keys are skipped by rmp-serde recursively: a skipped value nested to the
/// depth limit must not exhaust a 2 MiB stack either.
#[test]
fn deeply_nested_unknown_fields_are_skipped_without_exhausting_the_stack() {
    // A job graph (a map) with one more key whose value is 5000 nested arrays.
    let mut encoded = vec![0x81, 0xa7];
    encoded.extend_from_slice(b"unknown");
    encoded.extend(std::iter::repeat_n(0x91, 5_000));
    encoded.push(0xc0);
    let decoded = std::thread::Builder::new()
        .name("decode-nested-unknown".into())
        .stack_size(fuzz::STACK_SIZE)
        .spawn(move || rill_dataflow::JobGraph::from_bytes(&encoded).is_ok())
        .unwrap()
        .join()
        .unwrap();
    assert!(!decoded);
}
