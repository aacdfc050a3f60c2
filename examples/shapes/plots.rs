//! The experiments' figures: training curves (`curves.png`), the mechanism scatter
//! (`mechanism.png`), the multi-reward gains (`multi_reward.png`) and the multi-epoch
//! curves (`epochs.png`).

use std::path::Path;

use flow_rl::{Error, Result};
use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::experiments::{Results, RunResult, threshold};
use crate::mechanism::{Mechanism, NoiseBin, RecordedRow};
use crate::pretrain::IMAGE_DIMS;
use crate::report::{EPOCHS, main_runs, select};
use crate::rl::{Combination, ObjectiveName, StepRecord};

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type PlotResult = std::result::Result<(), Box<dyn std::error::Error>>;
/// A named, coloured line of `(x, y)` points.
type Curve = (String, RGBColor, Vec<(f64, f64)>);
/// A figure's file name and what draws it.
type Figure = (&'static str, fn(&Results, &Area) -> PlotResult);
/// A bar's name and its value for a run, given the base model's count and colour scores.
type Gain = (&'static str, fn(&RunResult, f64, f64) -> f64);

/// Ratio clip, GRPO-Guard, Flow-DPPO.
const COLOURS: [RGBColor; 3] = [
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(31, 119, 180),
];

/// Points per objective in the mechanism scatter (a uniform subsample beyond).
const SCATTER_POINTS: usize = 4000;

/// Bins of `log10(KL)` per objective in the mechanism figure's right panel.
const NOISE_PLOT_BINS: usize = 8;

fn colour_of(objective: ObjectiveName) -> RGBColor {
    COLOURS[ObjectiveName::ALL
        .iter()
        .position(|&known| known == objective)
        .expect("one of the three")]
}

/// Writes the four figures into `out`.
pub fn draw_all(results: &Results, out: &Path) -> Result<()> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| plot_error(out, "could not load the embedded DejaVu font".into()))?;
    let figures: [Figure; 4] = [
        ("curves.png", curves),
        ("mechanism.png", mechanism),
        ("multi_reward.png", multi_reward),
        ("epochs.png", epochs),
    ];
    for (name, draw) in figures {
        let path = out.join(name);
        // Drawn to a temporary name and renamed, so a failed plot leaves no half a PNG.
        let partial = out.join(format!(".{name}.partial.png"));
        {
            let root = BitMapBackend::new(&partial, (1400, 1000)).into_drawing_area();
            root.fill(&WHITE)
                .map_err(|err| plot_error(&path, err.to_string()))?;
            draw(results, &root).map_err(|err| plot_error(&path, err.to_string()))?;
            root.present()
                .map_err(|err| plot_error(&path, err.to_string()))?;
        }
        std::fs::rename(&partial, &path).map_err(|err| Error::io(&path, err))?;
    }
    Ok(())
}

/// The legend of every labelled series, framed, on a translucent white box.
fn draw_legend<'a, Coord: CoordTranslate>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, Coord>,
    position: SeriesLabelPosition,
) -> PlotResult {
    chart
        .configure_series_labels()
        .position(position)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    Ok(())
}

fn plot_error(path: &Path, message: String) -> Error {
    Error::io(path, std::io::Error::other(message))
}

/// The mean over runs of `value` at each rollout (runs of equal length).
fn mean_curve(runs: &[&RunResult], value: impl Fn(&StepRecord) -> Option<f64>) -> Vec<(f64, f64)> {
    let length = runs.iter().map(|run| run.steps.len()).min().unwrap_or(0);
    (0..length)
        .filter_map(|step| {
            let values: Vec<f64> = runs
                .iter()
                .filter_map(|run| value(&run.steps[step]))
                .collect();
            (values.len() == runs.len() && !values.is_empty()).then(|| {
                (
                    step as f64,
                    values.iter().sum::<f64>() / values.len() as f64,
                )
            })
        })
        .collect()
}

/// The trailing mean of the last `window` points of `curve` at each point: single rollouts
/// of 32 samples are noisy.
fn smoothed(curve: Vec<(f64, f64)>, window: usize) -> Vec<(f64, f64)> {
    (0..curve.len())
        .map(|end| {
            let from = (end + 1).saturating_sub(window);
            let values = &curve[from..=end];
            let mean = values.iter().map(|&(_, value)| value).sum::<f64>() / values.len() as f64;
            (curve[end].0, mean)
        })
        .collect()
}

/// Rollouts in the moving averages of the reward and accuracy curves.
const SMOOTHING: usize = 4;

/// A line chart of several named curves on one panel.
fn line_panel(
    area: &Area,
    title: &str,
    (x_label, y_label): (&str, &str),
    curves: &[Curve],
) -> PlotResult {
    let points = curves.iter().flat_map(|(_, _, curve)| curve.iter());
    let (mut x_max, mut y_min, mut y_max) = (1e-12f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in points {
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if !y_min.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    let pad = ((y_max - y_min) * 0.1).max(1e-3);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max * 1.02, (y_min - pad)..(y_max + pad))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()?;
    for (name, colour, curve) in curves {
        let colour = *colour;
        chart
            .draw_series(LineSeries::new(
                curve.iter().copied(),
                colour.stroke_width(2),
            ))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        chart.draw_series(
            curve
                .iter()
                .map(|&point| Circle::new(point, 3, colour.filled())),
        )?;
    }
    draw_legend(&mut chart, SeriesLabelPosition::LowerRight)
}

/// Experiment 1: reward, accuracy and clip or mask fraction per rollout, and reward
/// against drift, each the mean over seeds of the main runs.
fn curves(results: &Results, root: &Area) -> PlotResult {
    let panels = root.split_evenly((2, 2));
    let per_objective = |value: &dyn Fn(&StepRecord) -> Option<f64>| {
        ObjectiveName::ALL
            .iter()
            .map(|&objective| {
                let runs = main_runs(results, objective);
                (
                    objective.name().to_string(),
                    colour_of(objective),
                    mean_curve(&runs, value),
                )
            })
            .collect::<Vec<_>>()
    };
    let smooth = |curves: Vec<Curve>| {
        curves
            .into_iter()
            .map(|(name, colour, curve)| (name, colour, smoothed(curve, SMOOTHING)))
            .collect::<Vec<_>>()
    };
    line_panel(
        &panels[0],
        "rollout reward (mean over seeds, 4-rollout moving average)",
        ("rollout", "w·count + w·colour"),
        &smooth(per_objective(&|step| Some(step.reward))),
    )?;
    line_panel(
        &panels[1],
        "rollout prompt accuracy (SDE samples, moving average)",
        ("rollout", "accuracy"),
        &smooth(per_objective(&|step| Some(step.accuracy))),
    )?;
    line_panel(
        &panels[2],
        "fraction of rows clipped (ratio clip, GRPO-Guard) or dropped (Flow-DPPO)",
        ("rollout", "fraction"),
        &per_objective(&|step| step.clip_fraction.or(step.dropped_fraction)),
    )?;
    let reward_by_drift: Vec<_> = ObjectiveName::ALL
        .iter()
        .map(|&objective| {
            let runs = main_runs(results, objective);
            let drift = mean_curve(&runs, |step| step.drift);
            let reward = mean_curve(&runs, |step| step.drift.map(|_| step.reward));
            let curve = drift
                .iter()
                .zip(&reward)
                .map(|(&(_, drift), &(_, reward))| (drift, reward))
                .collect();
            (objective.name().to_string(), colour_of(objective), curve)
        })
        .collect();
    line_panel(
        &panels[3],
        "rollout reward against drift from the base model",
        ("trajectory KL to the base", "reward"),
        &reward_by_drift,
    )
}

/// Experiment 2. Left: every main-run row's `log r + KL` against its exact KL, stopped rows
/// (clipped or dropped) ringed in black, with the predicted noise `±sqrt(2·KL/N)` and τ.
/// Right: the measured std of `log r` in bins of KL against the prediction, per objective.
fn mechanism(results: &Results, root: &Area) -> PlotResult {
    let rows: Vec<(ObjectiveName, Vec<RecordedRow>)> = ObjectiveName::ALL
        .iter()
        .map(|&objective| {
            let moved: Vec<RecordedRow> = main_runs(results, objective)
                .iter()
                .flat_map(|run| run.rows.iter().copied())
                .filter(|row| row.kl > 0.0)
                .collect();
            (objective, moved)
        })
        .collect();
    let panels = root.split_evenly((1, 2));
    noise_scatter(&panels[0], &rows)?;
    noise_bins(&panels[1], &rows)
}

fn noise_scatter(area: &Area, rows: &[(ObjectiveName, Vec<RecordedRow>)]) -> PlotResult {
    let all = rows.iter().flat_map(|(_, rows)| rows.iter());
    let (mut kl_min, mut kl_max, mut spread) = (f64::INFINITY, f64::NEG_INFINITY, 1e-9f64);
    for row in all {
        let kl = f64::from(row.kl);
        kl_min = kl_min.min(kl);
        kl_max = kl_max.max(kl);
        spread = spread.max((f64::from(row.log_ratio) + kl).abs());
    }
    let tau = threshold();
    if !kl_min.is_finite() {
        (kl_min, kl_max) = (tau / 10.0, tau * 10.0);
    }
    let (kl_min, kl_max) = (kl_min.min(tau) / 2.0, kl_max.max(tau) * 2.0);
    let limit = spread * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "log r + KL against the exact KL (ringed: clipped or dropped)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((kl_min..kl_max).log_scale(), -limit..limit)?;
    chart
        .configure_mesh()
        .x_desc("exact KL(π_old ‖ π_new), mean over N")
        .y_desc("log r + KL")
        .x_label_formatter(&|kl| format!("{kl:.0e}"))
        .y_label_formatter(&|value| format!("{value:.1e}"))
        .draw()?;
    for (objective, rows) in rows {
        let colour = colour_of(*objective);
        let stride = rows.len().div_ceil(SCATTER_POINTS).max(1);
        let point = |row: &RecordedRow| (f64::from(row.kl), f64::from(row.log_ratio + row.kl));
        chart
            .draw_series(
                rows.iter()
                    .step_by(stride)
                    .map(|row| Circle::new(point(row), 2, colour.mix(0.35).filled())),
            )?
            .label(objective.name())
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, colour.filled()));
        // Every stopped row, however many: they are what the constraint errors count.
        chart.draw_series(
            rows.iter()
                .filter(|row| row.stopped())
                .map(|row| Circle::new(point(row), 4, BLACK.stroke_width(1))),
        )?;
    }
    let envelope: Vec<(f64, f64)> = (0..=200)
        .map(|step| {
            let kl = kl_min * (kl_max / kl_min).powf(f64::from(step) / 200.0);
            (kl, (2.0 * kl / IMAGE_DIMS as f64).sqrt())
        })
        .filter(|&(_, predicted)| predicted <= limit)
        .collect();
    for sign in [1.0, -1.0] {
        let drawn = chart.draw_series(LineSeries::new(
            envelope
                .iter()
                .map(|&(kl, predicted)| (kl, sign * predicted)),
            BLACK.stroke_width(2),
        ))?;
        if sign > 0.0 {
            drawn.label("± sqrt(2·KL/N)").legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2))
            });
        }
    }
    let grey = RGBColor(90, 90, 90);
    chart
        .draw_series(LineSeries::new(
            [(tau, -limit), (tau, limit)],
            grey.stroke_width(3),
        ))?
        .label("τ (Flow-DPPO)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey.stroke_width(3)));
    draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)
}

fn noise_bins(area: &Area, rows: &[(ObjectiveName, Vec<RecordedRow>)]) -> PlotResult {
    let binned: Vec<(ObjectiveName, Vec<NoiseBin>)> = rows
        .iter()
        .map(|(objective, rows)| {
            let mechanism = Mechanism::measure(rows, IMAGE_DIMS, threshold(), NOISE_PLOT_BINS);
            (*objective, mechanism.bins)
        })
        .collect();
    let values = binned
        .iter()
        .flat_map(|(_, bins)| bins.iter())
        .flat_map(|bin| [bin.predicted_std, bin.log_ratio_std])
        .filter(|value| *value > 0.0);
    let (low, high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), value| {
        (low.min(value), high.max(value))
    });
    let (low, high) = if low.is_finite() {
        (low / 2.0, high * 2.0)
    } else {
        (1e-6, 1e-3)
    };
    let mut chart = ChartBuilder::on(area)
        .caption(
            "std of log r in bins of KL against sqrt(2·KL/N)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((low..high).log_scale(), (low..high).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("predicted sqrt(2·mean KL/N)")
        .y_desc("measured std of log r")
        .x_label_formatter(&|value| format!("{value:.0e}"))
        .y_label_formatter(&|value| format!("{value:.0e}"))
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            [(low, low), (high, high)],
            BLACK.stroke_width(2),
        ))?
        .label("measured = predicted")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    for (objective, bins) in &binned {
        let colour = colour_of(*objective);
        chart
            .draw_series(bins.iter().map(|bin| {
                Circle::new(
                    (bin.predicted_std, bin.log_ratio_std.max(low)),
                    5,
                    colour.filled(),
                )
            }))?
            .label(objective.name())
            .legend(move |(x, y)| Circle::new((x + 10, y), 5, colour.filled()));
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)
}

/// Experiment 4: count and colour gains on the training prompts per objective, weighted
/// sum against GDPO, as bars of the mean over seeds with the std as whiskers.
fn multi_reward(results: &Results, root: &Area) -> PlotResult {
    let base = results.base;
    let gains: [Gain; 2] = [
        ("count gain", |run, count, _| run.after.train_count - count),
        ("colour gain", |run, _, colour| {
            run.after.train_colour - colour
        }),
    ];
    let mut bars = Vec::new();
    for (slot, (objective, combination)) in ObjectiveName::ALL
        .iter()
        .flat_map(|&objective| {
            [Combination::WeightedSum, Combination::Gdpo]
                .map(|combination| (objective, combination))
        })
        .enumerate()
    {
        let runs = select(results, objective, combination, 1);
        for (which, (_, gain)) in gains.iter().enumerate() {
            let values: Vec<f64> = runs
                .iter()
                .map(|run| gain(run, base.train_count, base.train_colour))
                .collect();
            let spread = crate::report::Spread::of(values);
            bars.push((slot, which, objective, combination, spread));
        }
    }
    let extent = bars
        .iter()
        .filter(|bar| bar.4.count > 0)
        .map(|bar| bar.4.mean.abs() + bar.4.std)
        .fold(1e-3, f64::max);
    let mut chart = ChartBuilder::on(root)
        .caption(
            "reward gains on the training prompts (left bar count, right bar colour; solid: \
             weighted sum, light: GDPO)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..6.0, (-extent * 1.2)..(extent * 1.2))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(12)
        .x_label_formatter(&|x: &f64| {
            // A label under the middle of each slot (ticks at the half-integers), none elsewhere.
            let slot = (x - 0.5).round();
            let objective = ObjectiveName::ALL.get(slot.max(0.0) as usize / 2);
            match objective {
                Some(objective) if (x - 0.5 - slot).abs() < 1e-6 && slot >= 0.0 => {
                    let combination = if (slot as usize).is_multiple_of(2) {
                        "sum"
                    } else {
                        "gdpo"
                    };
                    format!("{} {combination}", objective.name())
                }
                _ => String::new(),
            }
        })
        .y_desc("gain after − before (ODE samples)")
        .draw()?;
    for (slot, which, objective, combination, spread) in bars {
        if spread.count == 0 {
            continue;
        }
        let colour = colour_of(objective);
        let fill = match combination {
            Combination::WeightedSum => colour.filled(),
            Combination::Gdpo => colour.mix(0.4).filled(),
        };
        let left = slot as f64 + 0.15 + which as f64 * 0.35;
        let right = left + 0.3;
        chart.draw_series([Rectangle::new([(left, 0.0), (right, spread.mean)], fill)])?;
        let middle = (left + right) / 2.0;
        chart.draw_series([PathElement::new(
            vec![
                (middle, spread.mean - spread.std),
                (middle, spread.mean + spread.std),
            ],
            BLACK.stroke_width(2),
        )])?;
    }
    chart.draw_series(LineSeries::new([(0.0, 0.0), (6.0, 0.0)], BLACK))?;
    Ok(())
}

/// Experiment 5: the rollout reward (moving average) and the clip or mask fraction of ratio
/// clip and Flow-DPPO at 1, 2 and 4 inner epochs, means over seeds.
fn epochs(results: &Results, root: &Area) -> PlotResult {
    let panels = root.split_evenly((2, 2));
    let shades = [1.0, 0.6, 0.3];
    for (column, objective) in [ObjectiveName::RatioClip, ObjectiveName::FlowDppo]
        .into_iter()
        .enumerate()
    {
        let colour = colour_of(objective);
        let curves_of = |value: &dyn Fn(&StepRecord) -> Option<f64>, window: usize| {
            EPOCHS
                .iter()
                .zip(shades)
                .map(|(&epochs, shade)| {
                    let runs = select(results, objective, Combination::WeightedSum, epochs);
                    let RGBColor(red, green, blue) = colour;
                    let faded = |channel: u8| {
                        (f64::from(channel) * shade + 230.0 * (1.0 - shade)).round() as u8
                    };
                    (
                        format!("{epochs} epoch(s)"),
                        RGBColor(faded(red), faded(green), faded(blue)),
                        smoothed(mean_curve(&runs, value), window),
                    )
                })
                .collect::<Vec<_>>()
        };
        line_panel(
            &panels[column],
            &format!("{}: rollout reward (moving average)", objective.name()),
            ("rollout", "reward"),
            &curves_of(&|step| Some(step.reward), SMOOTHING),
        )?;
        line_panel(
            &panels[2 + column],
            &format!("{}: fraction of rows clipped or dropped", objective.name()),
            ("rollout", "fraction"),
            &curves_of(&|step| step.clip_fraction.or(step.dropped_fraction), 1),
        )?;
    }
    Ok(())
}
