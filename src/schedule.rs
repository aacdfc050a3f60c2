//! Noise schedules and the choice of which denoising steps are stochastic (and trained).
//!
//! ```
//! use flow_rl::schedule::{SigmaScheduleConfig, SdeStepSelection};
//! use flow_rl::Rng;
//!
//! let schedule = SigmaScheduleConfig::new().init()?; // T = 10, shift 3 (SD3/SD3.5)
//! assert_eq!(schedule.steps(), 10);
//! let (sigma, sigma_next) = schedule.step(0)?;
//! assert_eq!((sigma, sigma_next), (1.0, schedule.sigmas()[1]));
//!
//! // The Flow-DPPO recipe: 3 distinct steps drawn from the first half, per rollout.
//! let selection = SdeStepSelection::default();
//! let steps = selection.select(schedule.steps(), &mut Rng::seed_from(0))?;
//! assert_eq!(steps.len(), 3);
//! assert!(steps.iter().all(|&i| i < 5));
//! # Ok::<(), flow_rl::Error>(())
//! ```

use burn::config::Config;

use crate::error::{Error, Result};
use crate::rng::Rng;

/// The most denoising steps a schedule may have.
///
/// Samplers use tens of steps (SD3.5: 28 to 40; the Flow-GRPO recipes: 10); the bound keeps
/// a mistyped count (`usize::MAX`, 2^40) from exhausting memory instead of failing.
pub const MAX_STEPS: usize = 100_000;

/// Configuration of the SD3-family shifted σ schedule.
#[derive(Config, Debug, PartialEq)]
pub struct SigmaScheduleConfig {
    /// Number of denoising steps T, in `1..=`[`MAX_STEPS`].
    #[config(default = 10)]
    pub steps: usize,
    /// Shift α (SD3 and SD3.5 use 3). `1` gives the unshifted linear schedule.
    #[config(default = 3.0)]
    pub shift: f64,
}

impl SigmaScheduleConfig {
    /// Builds the schedule, checking `1 ≤ steps ≤ MAX_STEPS` and a finite `shift > 0`.
    pub fn init(&self) -> Result<SigmaSchedule> {
        check_steps("steps", self.steps)?;
        if !(self.shift.is_finite() && self.shift > 0.0) {
            return Err(Error::invalid(
                "shift",
                self.shift,
                "a finite shift > 0 (SD3 uses 3)",
            ));
        }
        let steps = self.steps as f64;
        let sigmas = (0..=self.steps)
            .map(|i| {
                let t = 1.0 - i as f64 / steps;
                self.shift * t / (1.0 + (self.shift - 1.0) * t)
            })
            .collect();
        Ok(SigmaSchedule { sigmas })
    }
}

/// The noise levels `σ_0 = 1 > σ_1 > … > σ_T = 0` of a T-step sampler.
///
/// `σ_i = α·t_i / (1 + (α − 1)·t_i)` with `t_i = 1 − i/T`. Step `i` goes from `σ_i` to
/// `σ_{i+1}`; its `dt = σ_{i+1} − σ_i` is negative.
#[derive(Debug, Clone, PartialEq)]
pub struct SigmaSchedule {
    sigmas: Vec<f64>,
}

impl SigmaSchedule {
    /// The number of denoising steps T.
    pub fn steps(&self) -> usize {
        self.sigmas.len() - 1
    }

    /// All T + 1 noise levels, from 1 down to 0.
    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    /// `(σ_i, σ_{i+1})` of step `i`.
    pub fn step(&self, index: usize) -> Result<(f64, f64)> {
        if index >= self.steps() {
            return Err(Error::invalid(
                "step index",
                index,
                format!("a step in 0..{}", self.steps()),
            ));
        }
        Ok((self.sigmas[index], self.sigmas[index + 1]))
    }

    /// `dt_i = σ_{i+1} − σ_i` of step `i` (negative).
    pub fn dt(&self, index: usize) -> Result<f64> {
        self.step(index)
            .map(|(sigma, sigma_next)| sigma_next - sigma)
    }

    /// The network's timestep input of step `i` for SD3-family models, `1000·σ_i`.
    pub fn timestep(&self, index: usize) -> Result<f64> {
        self.step(index).map(|(sigma, _)| 1000.0 * sigma)
    }
}

/// Which denoising steps of a rollout are stochastic (SDE) and trained; the others run the
/// deterministic ODE kernel.
///
/// Windows are fractions of T: `[window_start, window_end)` covers the step indices `i` with
/// `window_start·T ≤ i < window_end·T`. Every draw is shared by all samples of one rollout.
#[derive(Config, Debug, PartialEq)]
pub enum SdeStepSelection {
    /// `count` distinct steps drawn uniformly from the window (Flow-DPPO: `[0, 0.5)`, 3 of 10).
    RandomSubset {
        /// Start of the window, as a fraction of T.
        window_start: f64,
        /// End of the window (exclusive), as a fraction of T.
        window_end: f64,
        /// How many steps to draw.
        count: usize,
    },
    /// `count` consecutive steps at a uniformly drawn start inside the window
    /// (Flow-GRPO-Fast).
    ContiguousWindow {
        /// Start of the window, as a fraction of T.
        window_start: f64,
        /// End of the window (exclusive), as a fraction of T.
        window_end: f64,
        /// Length of the contiguous run.
        count: usize,
    },
    /// Every step `i < fraction·T` (original Flow-GRPO: 0.9, i.e. 9 of 10 steps).
    BelowFraction {
        /// Fraction of T below which every step is stochastic.
        fraction: f64,
    },
}

impl Default for SdeStepSelection {
    /// The Flow-DPPO recipe: 3 distinct steps from the first half of the chain.
    fn default() -> Self {
        SdeStepSelection::RandomSubset {
            window_start: 0.0,
            window_end: 0.5,
            count: 3,
        }
    }
}

impl SdeStepSelection {
    /// The stochastic steps of one rollout of `total_steps` steps, ascending.
    ///
    /// Errors if `total_steps` is 0 or above [`MAX_STEPS`], if a window is not a valid
    /// sub-interval of `[0, 1]`, if it holds no step, or if `count` is 0 or larger than the
    /// number of steps in the window.
    pub fn select(&self, total_steps: usize, rng: &mut Rng) -> Result<Vec<usize>> {
        check_steps("total_steps", total_steps)?;
        match *self {
            SdeStepSelection::RandomSubset {
                window_start,
                window_end,
                count,
            } => {
                let window = step_window(window_start, window_end, count, total_steps)?;
                let picked = rng.distinct_below(window.len(), count);
                Ok(picked.into_iter().map(|i| window.start + i).collect())
            }
            SdeStepSelection::ContiguousWindow {
                window_start,
                window_end,
                count,
            } => {
                let window = step_window(window_start, window_end, count, total_steps)?;
                let start = window.start + rng.below(window.len() - count + 1);
                Ok((start..start + count).collect())
            }
            SdeStepSelection::BelowFraction { fraction } => {
                if !(fraction > 0.0 && fraction <= 1.0) {
                    return Err(Error::invalid(
                        "fraction",
                        fraction,
                        "a fraction of T in (0, 1]",
                    ));
                }
                // A fraction·T below the tolerance of `window_bound` holds no step.
                let end = window_bound(fraction, total_steps);
                if end == 0 {
                    return Err(Error::invalid(
                        "fraction",
                        fraction,
                        format!(
                            "a fraction of T that holds at least one step: fraction·T = \
                             {} with T = {total_steps}, so no step i < fraction·T",
                            fraction * total_steps as f64
                        ),
                    ));
                }
                Ok((0..end).collect())
            }
        }
    }
}

/// Checks a step count against `1..=MAX_STEPS`.
fn check_steps(name: &str, steps: usize) -> Result<()> {
    if !(1..=MAX_STEPS).contains(&steps) {
        return Err(Error::invalid(
            name,
            steps,
            format!("between 1 and {MAX_STEPS} denoising steps"),
        ));
    }
    Ok(())
}

/// The first step index `i` with `i ≥ fraction·T`, i.e. the exclusive end of `i < fraction·T`.
fn window_bound(fraction: f64, total_steps: usize) -> usize {
    // The small tolerance keeps e.g. 0.3·10 = 3.0000000000000004 from excluding step 3.
    let exact = fraction * total_steps as f64;
    (exact - 1e-9).ceil().max(0.0) as usize
}

fn step_window(
    window_start: f64,
    window_end: f64,
    count: usize,
    total_steps: usize,
) -> Result<std::ops::Range<usize>> {
    if !(0.0..1.0).contains(&window_start) {
        return Err(Error::invalid(
            "window_start",
            window_start,
            "a fraction of T in [0, 1)",
        ));
    }
    if !(window_end > window_start && window_end <= 1.0) {
        return Err(Error::invalid(
            "window_end",
            window_end,
            format!("a fraction of T in ({window_start}, 1]"),
        ));
    }
    let window = window_bound(window_start, total_steps)..window_bound(window_end, total_steps);
    if count == 0 || count > window.len() {
        return Err(Error::invalid(
            "count",
            count,
            format!(
                "between 1 and the {} steps of the window {:?} (T = {total_steps}, fractions [{window_start}, {window_end}))",
                window.len(),
                window
            ),
        ));
    }
    Ok(window)
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;

    #[test]
    fn sd3_schedule_matches_reference_values() {
        // ALGORITHMS.md §1, T = 10, α = 3.
        let expected = [
            1.0, 0.964286, 0.923077, 0.875, 0.818182, 0.75, 0.666667, 0.5625, 0.428571, 0.25, 0.0,
        ];
        let schedule = SigmaScheduleConfig::new().init().unwrap();
        assert_eq!(schedule.sigmas().len(), 11);
        for (got, want) in schedule.sigmas().iter().zip(expected) {
            assert_abs_diff_eq!(*got, want, epsilon = 1e-6);
        }
        assert_abs_diff_eq!(schedule.dt(0).unwrap(), 0.964286 - 1.0, epsilon = 1e-6);
        assert_abs_diff_eq!(schedule.timestep(1).unwrap(), 964.2857, epsilon = 1e-3);
    }

    #[test]
    fn unit_shift_is_linear() {
        let schedule = SigmaScheduleConfig::new()
            .with_steps(4)
            .with_shift(1.0)
            .init()
            .unwrap();
        assert_eq!(schedule.sigmas(), &[1.0, 0.75, 0.5, 0.25, 0.0]);
    }

    #[test]
    fn zero_steps_and_bad_shift_are_errors() {
        let err = SigmaScheduleConfig::new().with_steps(0).init().unwrap_err();
        assert!(err.to_string().contains("steps"), "{err}");
        assert!(SigmaScheduleConfig::new().with_shift(0.0).init().is_err());
        assert!(
            SigmaScheduleConfig::new()
                .with_shift(f64::NAN)
                .init()
                .is_err()
        );
        let schedule = SigmaScheduleConfig::new().init().unwrap();
        assert!(schedule.step(10).is_err());
    }

    #[test]
    fn random_subset_stays_in_window_and_covers_it() {
        let selection = SdeStepSelection::default();
        let mut rng = Rng::seed_from(42);
        let mut seen = [false; 5];
        for _ in 0..200 {
            let steps = selection.select(10, &mut rng).unwrap();
            assert_eq!(steps.len(), 3);
            assert!(steps.windows(2).all(|w| w[0] < w[1]));
            for step in steps {
                seen[step] = true;
            }
        }
        assert!(
            seen.iter().all(|&s| s),
            "every step of [0, 5) is drawn eventually"
        );
    }

    #[test]
    fn selection_is_determined_by_the_seed() {
        let selection = SdeStepSelection::default();
        let a = selection.select(10, &mut Rng::seed_from(9)).unwrap();
        let b = selection.select(10, &mut Rng::seed_from(9)).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn contiguous_window_is_contiguous_and_inside() {
        let selection = SdeStepSelection::ContiguousWindow {
            window_start: 0.2,
            window_end: 0.8,
            count: 2,
        };
        let mut rng = Rng::seed_from(1);
        let mut starts = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let steps = selection.select(10, &mut rng).unwrap();
            assert_eq!(steps.len(), 2);
            assert_eq!(steps[1], steps[0] + 1);
            assert!(steps[0] >= 2 && steps[1] < 8, "{steps:?}");
            starts.insert(steps[0]);
        }
        assert_eq!(starts.into_iter().collect::<Vec<_>>(), vec![2, 3, 4, 5, 6]);
    }

    #[test]
    fn below_fraction_takes_every_step_below() {
        let selection = SdeStepSelection::BelowFraction { fraction: 0.9 };
        let steps = selection.select(10, &mut Rng::seed_from(0)).unwrap();
        assert_eq!(steps, (0..9).collect::<Vec<_>>());
        let third = SdeStepSelection::BelowFraction { fraction: 0.3 };
        assert_eq!(
            third.select(10, &mut Rng::seed_from(0)).unwrap(),
            vec![0, 1, 2]
        );
    }

    #[test]
    fn count_larger_than_window_is_an_error() {
        let selection = SdeStepSelection::RandomSubset {
            window_start: 0.0,
            window_end: 0.5,
            count: 6,
        };
        let err = selection.select(10, &mut Rng::seed_from(0)).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("count") && message.contains('6'),
            "{message}"
        );
        let contiguous = SdeStepSelection::ContiguousWindow {
            window_start: 0.0,
            window_end: 0.3,
            count: 4,
        };
        assert!(contiguous.select(10, &mut Rng::seed_from(0)).is_err());
        let empty = SdeStepSelection::RandomSubset {
            window_start: 0.5,
            window_end: 0.4,
            count: 1,
        };
        assert!(empty.select(10, &mut Rng::seed_from(0)).is_err());
        for fraction in [0.0, 1.5, f64::NAN] {
            let invalid = SdeStepSelection::BelowFraction { fraction };
            assert!(invalid.select(10, &mut Rng::seed_from(0)).is_err());
        }
        let tiny = SdeStepSelection::BelowFraction { fraction: 0.05 };
        assert_eq!(tiny.select(10, &mut Rng::seed_from(0)).unwrap(), vec![0]);
    }

    #[test]
    fn step_counts_above_the_bound_are_errors_not_allocations() {
        // usize::MAX used to panic with a capacity overflow and 2^40 to abort on allocation.
        for steps in [usize::MAX, 1 << 40, MAX_STEPS + 1] {
            let err = SigmaScheduleConfig::new()
                .with_steps(steps)
                .init()
                .unwrap_err();
            let message = err.to_string();
            assert!(
                message.contains(&steps.to_string()) && message.contains("100000"),
                "{message}"
            );
            let every_step = SdeStepSelection::BelowFraction { fraction: 1.0 };
            assert!(every_step.select(steps, &mut Rng::seed_from(0)).is_err());
        }
        let longest = SigmaScheduleConfig::new()
            .with_steps(MAX_STEPS)
            .init()
            .unwrap();
        assert_eq!(longest.steps(), MAX_STEPS);
    }

    #[test]
    fn a_below_fraction_that_holds_no_step_is_an_error_naming_it() {
        // 1e-12·10 is below every step index: the selection used to be empty.
        let selection = SdeStepSelection::BelowFraction { fraction: 1e-12 };
        let err = selection.select(10, &mut Rng::seed_from(0)).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("fraction") && message.contains("0.000000000001"),
            "{message}"
        );
    }
}
