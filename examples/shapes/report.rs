//! The experiments' markdown summary (`summary.md`) and machine-readable results
//! (`results.json`): every number as mean ± std over the seeds, and a difference no larger
//! than the seeds' spread reported as no difference.

use std::fmt;
use std::path::Path;

use flow_rl::io::write_atomically;
use flow_rl::{Error, Result};

use crate::experiments::{Results, RunResult, clip_width, threshold};
use crate::mechanism::{Mechanism, RecordedRow};
use crate::pretrain::IMAGE_DIMS;
use crate::rl::{Combination, ObjectiveName};

/// The inner epochs of experiment 5.
pub const EPOCHS: [usize; 3] = [1, 2, 4];

/// Bins of `log10(KL)` in the pooled noise table.
const POOLED_NOISE_BINS: usize = 8;

/// A value over seeds: its mean, its sample standard deviation and how many seeds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// The mean.
    pub mean: f64,
    /// The sample standard deviation (0 for one value).
    pub std: f64,
    /// How many values.
    pub count: usize,
}

impl Spread {
    /// The spread of `values` (NaN mean for none).
    pub fn of(values: impl IntoIterator<Item = f64>) -> Spread {
        let values: Vec<f64> = values.into_iter().collect();
        let count = values.len();
        let mean = values.iter().sum::<f64>() / count as f64;
        let std = if count < 2 {
            0.0
        } else {
            (values
                .iter()
                .map(|value| (value - mean).powi(2))
                .sum::<f64>()
                / (count - 1) as f64)
                .sqrt()
        };
        Spread { mean, std, count }
    }

    /// `"higher"`, `"lower"` or `"no difference"`: how `self` compares with `other`, where
    /// a gap no larger than the larger of the two stds is no difference.
    pub fn compared_with(&self, other: &Spread) -> &'static str {
        let gap = self.mean - other.mean;
        if !gap.is_finite() {
            "n/a"
        } else if gap.abs() <= self.std.max(other.std) {
            "no difference"
        } else if gap > 0.0 {
            "higher"
        } else {
            "lower"
        }
    }
}

impl fmt::Display for Spread {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count == 0 {
            write!(formatter, "—")
        } else if self.count == 1 {
            write!(formatter, "{}", number(self.mean))
        } else {
            write!(formatter, "{} ± {}", number(self.mean), number(self.std))
        }
    }
}

/// Three significant decimals for ordinary values, scientific notation for tiny ones.
pub fn number(value: f64) -> String {
    if value == 0.0 || !value.is_finite() || value.abs() >= 0.01 {
        format!("{value:.3}")
    } else {
        format!("{value:.2e}")
    }
}

/// The mean of `values`, NaN for none.
fn mean(values: impl Iterator<Item = f64>) -> f64 {
    Spread::of(values).mean
}

/// Per-run quantities the tables and plots share.
impl RunResult {
    /// The rollout rewards' mean over the first quarter of the run.
    pub fn first_reward(&self) -> f64 {
        let quarter = (self.steps.len() / 4).max(1);
        mean(self.steps.iter().take(quarter).map(|step| step.reward))
    }

    /// The rollout rewards' mean over the last quarter of the run.
    pub fn final_reward(&self) -> f64 {
        let quarter = (self.steps.len() / 4).max(1);
        mean(
            self.steps
                .iter()
                .rev()
                .take(quarter)
                .map(|step| step.reward),
        )
    }

    /// The reward gained per unit of drift: `(final − first reward) / final drift`.
    pub fn reward_per_drift(&self) -> f64 {
        (self.final_reward() - self.first_reward()) / self.final_drift
    }

    /// The mean over rollouts of the fraction of rows clipped or dropped.
    pub fn stop_fraction(&self) -> f64 {
        mean(self.steps.iter().map(|step| {
            step.clip_fraction
                .or(step.dropped_fraction)
                .unwrap_or(f64::NAN)
        }))
    }
}

/// The runs of one objective, combination and epoch count, one per seed.
pub fn select(
    results: &Results,
    objective: ObjectiveName,
    combination: Combination,
    inner_epochs: usize,
) -> Vec<&RunResult> {
    results
        .runs
        .iter()
        .filter(|run| {
            run.spec.objective == objective
                && run.spec.combination == combination
                && run.spec.inner_epochs == inner_epochs
        })
        .collect()
}

/// The main runs (weighted sum, 1 epoch) of `objective`.
pub fn main_runs(results: &Results, objective: ObjectiveName) -> Vec<&RunResult> {
    select(results, objective, Combination::WeightedSum, 1)
}

/// The spread over `runs` of `value`.
fn over<'a>(runs: &[&'a RunResult], value: impl Fn(&'a RunResult) -> f64) -> Spread {
    Spread::of(runs.iter().map(|run| value(run)))
}

/// Writes `summary.md` and `results.json` into `out`; `command` is the command line that
/// ran the experiments.
pub fn write(results: &Results, out: &Path, command: &str) -> Result<()> {
    write_atomically(
        &out.join("summary.md"),
        summary(results, command).as_bytes(),
    )?;
    let json = serde_json::json!({
        "config": results.config,
        "base": results.base,
        "base_provenance": results.base_provenance,
        "seconds": results.seconds,
        "runs": results.runs,
    });
    let text = serde_json::to_string_pretty(&json).map_err(|err| Error::InvalidArgument {
        name: "results".into(),
        value: err.to_string(),
        expected: "values with a JSON form".into(),
    })?;
    write_atomically(&out.join("results.json"), text.as_bytes())
}

/// The whole markdown summary.
pub fn summary(results: &Results, command: &str) -> String {
    let config = &results.config.fine_tune;
    let mut text = format!(
        "# Shapes: the Flow-DPPO claims in miniature\n\n\
         Made by `{command}` in {:.0} s ({:.1} min) on this machine.\n\n\
         - base model: {}\n\
         - {} seeds per arm; {} rollouts of {} prompts × {} samples; T = {}, shift {}; \
         LoRA rank {} alpha {}; AdamW lr {}; reward {}·count + {}·colour\n\
         - N = {IMAGE_DIMS} pixel dims; ratio clip and GRPO-Guard ε = {}; Flow-DPPO τ = {}\n\
         - mean ± std over seeds; a gap no larger than the larger std is reported as \
         *no difference*\n\n",
        results.seconds,
        results.seconds / 60.0,
        results.base_provenance,
        results.config.seeds,
        config.rollouts,
        config.groups_per_rollout,
        config.group_size,
        config.sampling_steps,
        config.shift,
        config.lora_rank,
        config.lora_alpha,
        config.learning_rate,
        config.count_weight,
        config.colour_weight,
        number(clip_width()),
        number(threshold()),
    );
    for section in [
        claims_table(results),
        reward_table(results),
        mechanism_tables(results),
        forgetting_table(results),
        multi_reward_table(results),
        epochs_table(results),
    ] {
        text.push_str(&section);
        text.push('\n');
    }
    text.push_str(
        "Figures: `curves.png` (experiment 1), `mechanism.png` (2), `multi_reward.png` (4), \
         `epochs.png` (5); image grids of the base model and of seed 0's main runs in \
         `grids/`; per-rollout logs in `runs/`.\n",
    );
    text
}

/// One row per claim: Flow-DPPO against each baseline.
fn claims_table(results: &Results) -> String {
    type Metric = fn(&Results, ObjectiveName) -> Spread;
    let claims: [(&str, &str, Metric); 5] = [
        (
            "1. higher reward",
            "training reward, last quarter",
            |results, objective| over(&main_runs(results, objective), RunResult::final_reward),
        ),
        (
            "1. better reward per drift",
            "reward gain / drift",
            |results, objective| over(&main_runs(results, objective), RunResult::reward_per_drift),
        ),
        (
            "3. less forgetting",
            "binding accuracy after − before",
            |results, objective| {
                let base = results.base.binding_accuracy;
                over(&main_runs(results, objective), |run| {
                    run.after.binding_accuracy - base
                })
            },
        ),
        (
            "4. balanced multi-reward",
            "smaller of count and colour gain (sum)",
            |results, objective| {
                let base = results.base;
                over(&main_runs(results, objective), |run| {
                    (run.after.train_count - base.train_count)
                        .min(run.after.train_colour - base.train_colour)
                })
            },
        ),
        (
            "5. stable multi-epoch",
            "final reward at 4 epochs − at 1",
            |results, objective| {
                let at = |epochs| select(results, objective, Combination::WeightedSum, epochs);
                let one = over(&at(1), RunResult::final_reward);
                let four = at(4);
                if four.is_empty() {
                    return Spread::of([]);
                }
                let shifted = over(&four, RunResult::final_reward);
                Spread {
                    mean: shifted.mean - one.mean,
                    std: shifted.std.max(one.std),
                    count: shifted.count.min(one.count),
                }
            },
        ),
    ];
    let mut text = String::from(
        "## The claims\n\n\
         | claim | measured as | ratio clip | GRPO-Guard | Flow-DPPO | Flow-DPPO vs ratio \
         clip | Flow-DPPO vs GRPO-Guard |\n|---|---|---|---|---|---|---|\n",
    );
    for (claim, measure, metric) in claims {
        let [clip, guard, dppo] = ObjectiveName::ALL.map(|objective| metric(results, objective));
        let against = |other: &Spread| {
            if other.count == 0 {
                "—"
            } else {
                dppo.compared_with(other)
            }
        };
        text.push_str(&format!(
            "| {claim} | {measure} | {clip} | {guard} | {dppo} | {} | {} |\n",
            against(&clip),
            against(&guard)
        ));
    }
    text.push_str(
        "\nClaim 2, the mechanism, has its own table below. In claim 5 the std is the larger \
         of the two arms'.\n",
    );
    text
}

/// Experiment 1: accuracy, reward and drift of the main runs.
fn reward_table(results: &Results) -> String {
    let base = results.base;
    let mut text = format!(
        "## 1. Reward and drift (weighted sum, 1 epoch)\n\n\
         The base model: training-prompt accuracy {}, held-out counting accuracy {}.\n\n\
         | objective | train accuracy | held-out accuracy | first reward | final reward | \
         drift | reward gain / drift | clip or mask fraction |\n|---|---|---|---|---|---|---|---|\n",
        number(base.train_accuracy),
        number(base.held_out_accuracy),
    );
    for objective in ObjectiveName::ALL {
        let runs = main_runs(results, objective);
        text.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            objective.name(),
            over(&runs, |run| run.after.train_accuracy),
            over(&runs, |run| run.after.held_out_accuracy),
            over(&runs, RunResult::first_reward),
            over(&runs, RunResult::final_reward),
            over(&runs, |run| run.final_drift),
            over(&runs, RunResult::reward_per_drift),
            over(&runs, RunResult::stop_fraction),
        ));
    }
    text.push_str(
        "\nAccuracies are of deterministic ODE samples from fixed noise after training; \
         rewards are the rollouts' (SDE samples) mean of the first and last quarter of the \
         rollouts; drift is the exact per-step KL to the base model summed along SDE \
         trajectories after the last rollout.\n",
    );
    text
}

/// Experiment 2: the noise of `log r` against the exact KL, and the constraint errors.
fn mechanism_tables(results: &Results) -> String {
    let pooled: Vec<RecordedRow> = ObjectiveName::ALL
        .iter()
        .flat_map(|&objective| main_runs(results, objective))
        .flat_map(|run| run.rows.iter().copied())
        .collect();
    let noise = Mechanism::measure(&pooled, IMAGE_DIMS, threshold(), POOLED_NOISE_BINS);
    let mut text = format!(
        "## 2. Mechanism (the main runs' {} updated rows with KL > 0)\n\n\
         `std(log r)` among rows of about equal exact KL against `sqrt(2·KL/N)`, N = \
         {IMAGE_DIMS}. Mean of `|log r + KL| / sqrt(2·KL/N)` over all rows: {} (0.798 if \
         the prediction holds).\n\n\
         | KL range | rows | mean KL | std of log r | sqrt(2·KL/N) | ratio |\n\
         |---|---|---|---|---|---|\n",
        noise.rows,
        number(noise.mean_normalised_noise),
    );
    for bin in &noise.bins {
        text.push_str(&format!(
            "| {} – {} | {} | {} | {} | {} | {} |\n",
            number(bin.kl_low),
            number(bin.kl_high),
            bin.rows,
            number(bin.mean_kl),
            number(bin.log_ratio_std),
            number(bin.predicted_std),
            number(bin.log_ratio_std / bin.predicted_std),
        ));
    }
    text.push_str(&format!(
        "\nConstraint errors against the exact KL and τ = {} (per run, then over seeds). \
         *Over-constraint*: stopped rows (clipped or dropped) whose KL is below τ. \
         *Kept above τ*: rows that kept their gradient with KL ≥ τ (the issue's \
         under-constraint for ratio clipping). *Kept above τ, along A*: of those, the ones \
         that moved further along their advantage, which a KL trust region stops.\n\n\
         | objective | inner epochs | rows with KL ≥ τ | stopped rows | over-constraint | \
         kept above τ | kept above τ, along A | mean \\|log r + KL\\| / sqrt(2KL/N) |\n\
         |---|---|---|---|---|---|---|---|\n",
        number(threshold())
    ));
    let arms = ObjectiveName::ALL
        .iter()
        .flat_map(|&objective| EPOCHS.iter().map(move |&epochs| (objective, epochs)));
    for (objective, epochs) in arms {
        let runs = select(results, objective, Combination::WeightedSum, epochs);
        if runs.is_empty() {
            continue;
        }
        text.push_str(&format!(
            "| {} | {epochs} | {} | {} | {} | {} | {} | {} |\n",
            objective.name(),
            over(&runs, |run| above_threshold_fraction(&run.mechanism)),
            over(&runs, |run| run.mechanism.errors.stopped_rows as f64),
            over(&runs, |run| run.mechanism.errors.over_constraint),
            over(&runs, |run| run.mechanism.errors.kept_above_threshold),
            over(&runs, |run| run.mechanism.errors.under_constraint),
            over(&runs, |run| run.mechanism.mean_normalised_noise),
        ));
    }
    text
}

/// The fraction of a run's moved rows whose KL reached τ.
fn above_threshold_fraction(mechanism: &Mechanism) -> f64 {
    let errors = &mechanism.errors;
    let above = errors.stopped_rows as f64 * (1.0 - errors.over_constraint)
        + errors.kept_rows as f64 * errors.kept_above_threshold;
    above / mechanism.rows.max(1) as f64
}

/// Experiment 3: colour-binding accuracy before and after training on counting.
fn forgetting_table(results: &Results) -> String {
    let base = results.base.binding_accuracy;
    let mut text = format!(
        "## 3. Forgetting: colour-binding prompts, never trained on\n\n\
         The base model's accuracy: {}.\n\n\
         | objective | accuracy after | change | change vs none |\n|---|---|---|---|\n",
        number(base)
    );
    for objective in ObjectiveName::ALL {
        let runs = main_runs(results, objective);
        let change = over(&runs, |run| run.after.binding_accuracy - base);
        let none = Spread {
            mean: 0.0,
            std: 0.0,
            count: 1,
        };
        text.push_str(&format!(
            "| {} | {} | {change} | {} |\n",
            objective.name(),
            over(&runs, |run| run.after.binding_accuracy),
            change.compared_with(&none),
        ));
    }
    text
}

/// Experiment 4: each reward's gain on the training prompts, by combination.
fn multi_reward_table(results: &Results) -> String {
    let base = results.base;
    let mut text = format!(
        "## 4. Multi-reward: count and colour gains on the training prompts\n\n\
         The base model: count score {}, colour score {} (ODE samples).\n\n\
         | objective | combination | count gain | colour gain | train accuracy |\n\
         |---|---|---|---|---|\n",
        number(base.train_count),
        number(base.train_colour),
    );
    for objective in ObjectiveName::ALL {
        for combination in [Combination::WeightedSum, Combination::Gdpo] {
            let runs = select(results, objective, combination, 1);
            if runs.is_empty() {
                continue;
            }
            text.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                objective.name(),
                combination.name(),
                over(&runs, |run| run.after.train_count - base.train_count),
                over(&runs, |run| run.after.train_colour - base.train_colour),
                over(&runs, |run| run.after.train_accuracy),
            ));
        }
    }
    text
}

/// Experiment 5: final accuracy and reward at 1, 2 and 4 inner epochs.
fn epochs_table(results: &Results) -> String {
    let mut text = String::from(
        "## 5. Multi-epoch: the same rollouts, more passes\n\n\
         | objective | inner epochs | train accuracy | final reward | drift | clip or mask \
         fraction |\n|---|---|---|---|---|---|\n",
    );
    for objective in [ObjectiveName::RatioClip, ObjectiveName::FlowDppo] {
        for epochs in EPOCHS {
            let runs = select(results, objective, Combination::WeightedSum, epochs);
            if runs.is_empty() {
                continue;
            }
            text.push_str(&format!(
                "| {} | {epochs} | {} | {} | {} | {} |\n",
                objective.name(),
                over(&runs, |run| run.after.train_accuracy),
                over(&runs, RunResult::final_reward),
                over(&runs, |run| run.final_drift),
                over(&runs, RunResult::stop_fraction),
            ));
        }
    }
    text
}
