//! Fuzzes the decoders of peer input for a time or input budget (see
//! `rill_benches::fuzz`); `scripts/fuzz.sh` runs every target.
//!
//! ```text
//! fuzz [<target>…|all] [--seconds S | --count N] [--seed X] [--start I]
//! ```
//!
//! Without a target it runs all of them, each for the whole budget. Prints inputs and
//! inputs/s per target; on the first finding prints it (hex input,
//! seed, index and the command reproducing it) and exits with status 1.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use rill_benches::fuzz::{self, Budget, GuardedAlloc};

#[global_allocator]
static ALLOC: GuardedAlloc = GuardedAlloc;

struct Args {
    targets: Vec<String>,
    budget: Budget,
    seed: u64,
    start: u64,
}

fn parse() -> anyhow::Result<Args> {
    let mut args = std::env::args().skip(1);
    let mut targets = Vec::new();
    let mut budget = Budget::Time(Duration::from_secs(10));
    let mut seed = 1;
    let mut start = 0;
    while let Some(a) = args.next() {
        let mut value = |name: &str| -> anyhow::Result<u64> {
            let v = args
                .next()
                .with_context(|| format!("{name} needs a value"))?;
            v.parse()
                .with_context(|| format!("{name} {v}: not a number"))
        };
        match a.as_str() {
            "--seconds" => budget = Budget::Time(Duration::from_secs(value("--seconds")?)),
            "--count" => budget = Budget::Inputs(value("--count")?),
            "--seed" => seed = value("--seed")?,
            "--start" => start = value("--start")?,
            "all" => targets.extend(fuzz::targets().iter().map(|t| t.name.to_string())),
            "-h" | "--help" => {
                bail!(
                    "usage: fuzz [<target>…|all] [--seconds S | --count N] [--seed X] [--start I]"
                )
            }
            name => targets.push(name.to_string()),
        }
    }
    if targets.is_empty() {
        targets.extend(fuzz::targets().iter().map(|t| t.name.to_string()));
    }
    Ok(Args {
        targets,
        budget,
        seed,
        start,
    })
}

fn main() -> anyhow::Result<ExitCode> {
    let args = parse()?;
    for name in &args.targets {
        let target = fuzz::target(name).with_context(|| format!("no fuzz target `{name}`"))?;
        match fuzz::run(target, args.seed, args.start, args.budget) {
            Ok(stats) => println!(
                "{name:<14} {:>11} inputs in {:>6.1} s = {:>9.0} inputs/s, no finding (seed {})",
                stats.inputs,
                stats.elapsed.as_secs_f64(),
                stats.rate(),
                args.seed
            ),
            Err(finding) => {
                eprintln!("FINDING\n{finding}");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
