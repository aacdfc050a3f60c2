//! The quickstart figure: reward against drift, and samples before and after.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::Run;

const COLORS: [RGBColor; 3] = [
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(31, 119, 180),
];

/// Draws a 2 × 3 grid: reward vs drift, reward vs step, the pre-trained samples, then the
/// samples of each fine-tuned model.
pub fn draw(
    path: &Path,
    runs: &[Run],
    base: &[[f32; 2]],
) -> Result<(), Box<dyn std::error::Error>> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| "could not load the embedded DejaVu font")?;
    let root = BitMapBackend::new(path, (1500, 1000)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((2, 3));

    let max_drift = runs
        .iter()
        .flat_map(|r| r.curve.iter().map(|c| c.2))
        .fold(1e-6, f64::max);
    let mut chart = ChartBuilder::on(&panels[0])
        .caption(
            "reward vs drift from the pre-trained model",
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(45)
        .build_cartesian_2d(0.0..max_drift * 1.05, 0.0..1.2)?;
    chart
        .configure_mesh()
        .x_desc("trajectory KL")
        .y_desc("mean reward")
        .draw()?;
    for (run, color) in runs.iter().zip(COLORS) {
        chart
            .draw_series(LineSeries::new(
                run.curve.iter().map(|c| (c.2, c.1)),
                color.stroke_width(2),
            ))?
            .label(run.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;

    let steps = runs.iter().map(|r| r.rewards.len()).max().unwrap_or(1);
    let mut chart = ChartBuilder::on(&panels[1])
        .caption("training reward per step", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(45)
        .build_cartesian_2d(0..steps, 0.0..1.2)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("mean reward")
        .draw()?;
    for (run, color) in runs.iter().zip(COLORS) {
        chart.draw_series(LineSeries::new(
            run.rewards.iter().copied().enumerate(),
            color,
        ))?;
    }

    scatter(
        &panels[2],
        "pre-trained samples",
        base,
        RGBColor(90, 90, 90),
    )?;
    for ((panel, run), color) in panels[3..].iter().zip(runs).zip(COLORS) {
        scatter(panel, &format!("after {}", run.name), &run.samples, color)?;
    }
    root.present()?;
    Ok(())
}

fn scatter(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    title: &str,
    points: &[[f32; 2]],
    color: RGBColor,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(35)
        .build_cartesian_2d(-3.0f32..3.0f32, -3.0f32..3.0f32)?;
    chart.configure_mesh().draw()?;
    chart.draw_series(
        points
            .iter()
            .map(|p| Circle::new((p[0], p[1]), 2, color.mix(0.4).filled())),
    )?;
    Ok(())
}
