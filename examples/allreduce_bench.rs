//! The cost of data-parallel training's one gradient exchange per optimiser step: the
//! all-reduce of a LoRA's gradients between MPI processes, at SD3.5-medium's and
//! SD3.5-large's adapter sizes (rank 32 on the attention projections, f32 factors, as
//! `MmditLoraConfig`'s defaults), and the broadcast of the same parameters at start.
//!
//! ```sh
//! cargo build --release --features mpi --example allreduce_bench
//! mpirun -np 2 target/release/examples/allreduce_bench
//! ```
//!
//! Rank 0 prints a markdown table; every value is checked to be the sum over the workers.
//! `MpiCommunicator`'s all-reduce is a reduce to rank 0 and a broadcast, so that every
//! worker gets the same bits; the table puts MPI's own `MPI_Allreduce` (which does not
//! promise that) beside it, for the price of that guarantee.

use std::time::Instant;

use clap::Parser;
use flow_rl::distributed::{Communicator, MpiCommunicator};
use flow_rl::models::mmdit::{LoraWorkload, MmditConfig, MmditLoraConfig};
use mpi::collective::SystemOperation;
use mpi::traits::CommunicatorCollectives;

/// Time the all-reduce of LoRA gradient buffers between the processes of `mpirun`.
#[derive(Parser, Debug)]
struct Args {
    /// Timed repetitions per size (after one untimed warm-up).
    #[arg(long, default_value_t = 10)]
    repeats: usize,
    /// LoRA rank.
    #[arg(long, default_value_t = 32)]
    rank: usize,
}

fn main() -> flow_rl::Result<()> {
    let args = Args::parse();
    let mpi = MpiCommunicator::init()?;
    let lora = MmditLoraConfig::new().with_rank(args.rank);
    let workload = LoraWorkload::sd35(512, 1);
    let sizes = [
        ("SD3.5-medium", MmditConfig::sd35_medium()),
        ("SD3.5-large", MmditConfig::sd35_large()),
    ]
    .map(|(name, config)| {
        let bytes = config
            .estimate_lora_memory(&lora, &workload)
            .adapter_gradients;
        (name, bytes as usize / std::mem::size_of::<f32>())
    });
    if mpi.rank() == 0 {
        println!(
            "{} processes, LoRA rank {}, {} repeats\n",
            mpi.world_size(),
            args.rank,
            args.repeats
        );
        println!(
            "| Model | Values | MB (f32) | All-reduce ms (min / median) | MPI_Allreduce ms \
             (median) | Broadcast ms (median) | GB/s (all-reduce) |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|");
    }
    for (name, values) in sizes {
        let (all_reduce, broadcast) = time_exchanges(&mpi, values, args.repeats)?;
        let native = time_native_all_reduce(values, args.repeats);
        if mpi.rank() == 0 {
            let megabytes = values as f64 * 4.0 / 1e6;
            let median = all_reduce[all_reduce.len() / 2];
            println!(
                "| {name} | {values} | {megabytes:.1} | {:.1} / {:.1} | {:.1} | {:.1} | {:.2} |",
                all_reduce[0] * 1e3,
                median * 1e3,
                native[native.len() / 2] * 1e3,
                broadcast[broadcast.len() / 2] * 1e3,
                megabytes / 1e3 / median,
            );
        }
    }
    Ok(())
}

/// Sorted seconds of `repeats` all-reduces and broadcasts of `values` f32 values, each
/// started together after a barrier; errors if a sum is wrong.
fn time_exchanges(
    mpi: &MpiCommunicator,
    values: usize,
    repeats: usize,
) -> flow_rl::Result<(Vec<f64>, Vec<f64>)> {
    let world = mpi.world_size();
    let expected = (world * (world + 1) / 2) as f32;
    let mut buffer = vec![0.0f32; values];
    let mut all_reduce = Vec::with_capacity(repeats);
    for repeat in 0..=repeats {
        buffer.fill((mpi.rank() + 1) as f32);
        mpi.barrier()?;
        let started = Instant::now();
        mpi.all_reduce_sum(&mut buffer)?;
        let seconds = started.elapsed().as_secs_f64();
        if let Some(bad) = buffer.iter().position(|&v| v != expected) {
            return Err(flow_rl::Error::Distributed {
                operation: format!("all-reduce of {values} values"),
                message: format!("value {bad} is {} instead of {expected}", buffer[bad]),
            });
        }
        if repeat > 0 {
            all_reduce.push(seconds);
        }
    }
    let bytes: Vec<u8> = buffer.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut broadcast = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let mut received = if mpi.rank() == 0 {
            bytes.clone()
        } else {
            Vec::new()
        };
        mpi.barrier()?;
        let started = Instant::now();
        mpi.broadcast(&mut received, 0)?;
        broadcast.push(started.elapsed().as_secs_f64());
    }
    all_reduce.sort_by(f64::total_cmp);
    broadcast.sort_by(f64::total_cmp);
    Ok((all_reduce, broadcast))
}

/// Sorted seconds of `repeats` `MPI_Allreduce` sums of `values` f32 values in place of the
/// world communicator (MPI is initialised by the `MpiCommunicator`).
fn time_native_all_reduce(values: usize, repeats: usize) -> Vec<f64> {
    let world = mpi::topology::SimpleCommunicator::world();
    let sent = vec![1.0f32; values];
    let mut received = vec![0.0f32; values];
    let mut seconds = Vec::with_capacity(repeats);
    for repeat in 0..=repeats {
        world.barrier();
        let started = Instant::now();
        world.all_reduce_into(&sent[..], &mut received[..], SystemOperation::sum());
        if repeat > 0 {
            seconds.push(started.elapsed().as_secs_f64());
        }
    }
    seconds.sort_by(f64::total_cmp);
    seconds
}
