//! What a run shows and keeps: the progress bar and per-step lines, the reward plot, and the
//! logs trimmed back to a checkpoint on `--resume`.

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;
use flow_rl::io::write_atomically;
use flow_rl::memory::PeakMemory;
use flow_rl::metrics::{StepMetrics, read_json_lines};
use flow_rl::{Error, Result};
use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::eval::{EVAL_FILE, EvalRecord};
use crate::{Args, METRICS_FILE};

/// The reward plot, under `--out`.
pub const PLOT_FILE: &str = "rewards.png";

/// The progress bar with ETA, and a line per step.
pub struct Progress {
    bar: ProgressBar,
    samples_per_step: usize,
    peak: PeakMemory,
}

impl Progress {
    /// A bar from `done` to `args.train_steps`.
    pub fn new(args: &Args, done: usize, device: &Device) -> Self {
        let bar = ProgressBar::new(args.train_steps as u64).with_position(done as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] step {pos}/{len}, ETA {eta_precise} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.reset_eta();
        Self {
            bar,
            samples_per_step: args.prompts_per_rollout * args.group_size,
            peak: PeakMemory::new(device),
        }
    }

    /// Prints one step's rewards, rollout images/s, seconds per optimiser step and memory.
    pub fn step_done(&mut self, metrics: &StepMetrics, seconds: f64) {
        self.peak.sample();
        let rewards: Vec<String> = metrics
            .rewards
            .iter()
            .map(|r| format!("{} {} ± {}", r.name, readable(r.mean), readable(r.std)))
            .collect();
        let optimiser_steps = metrics.updates.max(1);
        let line = format!(
            "step {:>5}: {} | rollout {:.2} images/s | {:.2} s per optimiser step ({} of {}) | \
             kl {:.2e} | step {:.1} s | memory {}",
            metrics.step + 1,
            rewards.join(", "),
            self.samples_per_step as f64 / metrics.rollout_seconds.max(1e-9),
            metrics.update_seconds / optimiser_steps as f64,
            metrics.updates - metrics.skipped_updates,
            metrics.updates,
            metrics.objective.kl_mean,
            seconds,
            self.peak.report(),
        );
        // `suspend`, not `println`: a hidden bar (no terminal, as in CI logs) drops its lines.
        self.bar.suspend(|| println!("{line}"));
        self.bar.inc(1);
        if let Some(first) = metrics.rewards.first() {
            self.bar
                .set_message(format!("{} {:.4}", first.name, first.mean));
        }
    }

    /// Notes a save.
    pub fn saved(&self, step: usize) {
        self.bar.suspend(|| {
            println!("step {step:>5}: saved the evaluation grid, adapters and checkpoint");
        });
    }

    /// Ends the bar.
    pub fn finish(&self) {
        self.bar.finish();
    }
}

/// Four significant digits, in scientific notation where fixed decimals would hide them
/// (a 16² JPEG's −2.2e-3 and its 1e-5 spread).
fn readable(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude != 0.0 && !(1e-2..1e5).contains(&magnitude) {
        format!("{value:.3e}")
    } else {
        format!("{value:.4}")
    }
}

/// Drops the lines of steps after the checkpoint's `steps_done` from `metrics.jsonl` and
/// `eval.jsonl` (a run killed between a step and its checkpoint logged them), so a resumed
/// run's logs are the uninterrupted run's.
pub fn truncate_logs(out: &Path, steps_done: usize) -> Result<()> {
    keep_lines(&out.join(METRICS_FILE), |line: &serde_json::Value| {
        line["step"]
            .as_u64()
            .is_some_and(|step| (step as usize) < steps_done)
    })?;
    keep_lines(&out.join(EVAL_FILE), |line: &serde_json::Value| {
        line["step"]
            .as_u64()
            .is_some_and(|step| (step as usize) <= steps_done)
    })
}

fn keep_lines(path: &Path, keep: impl Fn(&serde_json::Value) -> bool) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(|err| Error::io(path, err))?;
    let mut kept = String::new();
    for (number, line) in text.lines().enumerate() {
        let value: serde_json::Value = serde_json::from_str(line).map_err(|err| {
            Error::io(
                path,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("line {}: {err}", number + 1),
                ),
            )
        })?;
        if keep(&value) {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    write_atomically(path, kept.as_bytes())
}

/// Draws `rewards.png`: each reward's rollout mean per step, and its evaluation mean.
pub fn plot_rewards(out: &Path) -> Result<()> {
    let metrics: Vec<StepMetrics> = read_json_lines(out.join(METRICS_FILE))?;
    let evals: Vec<EvalRecord> = if out.join(EVAL_FILE).exists() {
        read_json_lines(out.join(EVAL_FILE))?
    } else {
        Vec::new()
    };
    let path = out.join(PLOT_FILE);
    draw(&path, &metrics, &evals)
        .map_err(|err| Error::io(&path, std::io::Error::other(err.to_string())))
}

const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// One panel per reward: the rollout mean (line) and the evaluation mean (points).
fn draw(
    path: &Path,
    metrics: &[StepMetrics],
    evals: &[EvalRecord],
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| "could not load the embedded DejaVu font")?;
    let mut curves: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for step in metrics {
        for reward in &step.rewards {
            curves
                .entry(&reward.name)
                .or_default()
                .push(((step.step + 1) as f64, reward.mean));
        }
    }
    let panels = curves.len().max(1);
    let root = BitMapBackend::new(path, (900, 320 * panels as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((panels, 1));
    for (index, ((name, curve), area)) in curves.iter().zip(&areas).enumerate() {
        let evaluated: Vec<(f64, f64)> = evals
            .iter()
            .filter_map(|e| e.rewards.get(*name).map(|&mean| (e.step as f64, mean)))
            .collect();
        let values = curve.iter().chain(&evaluated).map(|p| p.1);
        let (low, high) = values.fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(v), h.max(v)));
        let pad = ((high - low) * 0.05).max(1e-6);
        let last_step = curve.last().map_or(1.0, |p| p.0).max(1.0);
        let color = COLORS[index % COLORS.len()];
        let mut chart = ChartBuilder::on(area)
            .caption(format!("reward {name}"), ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(80)
            .build_cartesian_2d(0.0..last_step + 1.0, low - pad..high + pad)?;
        // Enough decimals to tell the ticks of a narrow range apart.
        let decimals = (-(high - low + 2.0 * pad).log10()).ceil().max(0.0) as usize + 1;
        let tick = |value: &f64| format!("{value:.decimals$}");
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("mean")
            .y_label_formatter(&tick)
            .draw()?;
        chart
            .draw_series(LineSeries::new(
                curve.iter().copied(),
                color.stroke_width(2),
            ))?
            .label("rollout (SDE)")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                evaluated
                    .iter()
                    .map(|&point| Circle::new(point, 4, BLACK.filled())),
            )?
            .label("evaluation (ODE, fixed noise)")
            .legend(|(x, y)| Circle::new((x + 10, y), 4, BLACK.filled()));
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()?;
    }
    root.present()?;
    Ok(())
}
