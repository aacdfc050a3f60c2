//! The subcommands' bodies: each parses nothing, runs one job with a progress bar or a
//! printed summary, and writes its files atomically.

use std::path::Path;
use std::time::Instant;

use burn::prelude::*;
use flow_rl::io::write_atomically;
use flow_rl::metrics::JsonLinesWriter;
use flow_rl::models::FlowMatchingConfig;
use flow_rl::{Error, Result, Rng};
use indicatif::{ProgressBar, ProgressStyle};

use crate::PromptSet;
use crate::checkpoint::{BaseInfo, load_base, save_base};
use crate::evaluate::{Evaluation, SamplingConfig};
use crate::experiments::{ExperimentsConfig, run_all};
use crate::pretrain::{TEXT_ENCODER_SEED, pretrain, prompt_split};
use crate::prompt::{Prompt, PromptFamily};
use crate::scorer::{Corruption, Scorer, measure_accuracy};
use crate::text::TextEncoder;
use crate::world::{IMAGE_SIZE, Scene};
use crate::{plots, report};

/// Runs every experiment and writes the summary and figures.
pub fn run_experiments(
    config: &ExperimentsConfig,
    base: &Path,
    out: &Path,
    command: &str,
) -> Result<()> {
    if config.seeds == 0 || config.fine_tune.rollouts == 0 {
        return Err(Error::InvalidArgument {
            name: "--seeds / --rollouts".into(),
            value: format!("{} / {}", config.seeds, config.fine_tune.rollouts),
            expected: "both at least 1".into(),
        });
    }
    let results = run_all(config, base, out)?;
    report::write(&results, out, command)?;
    plots::draw_all(&results, out)?;
    println!(
        "{} runs in {:.0} s; wrote {}",
        results.runs.len(),
        results.seconds,
        out.join("summary.md").display()
    );
    Ok(())
}

/// Pre-trains with a progress bar and a loss log, and saves the checkpoint.
pub fn run_pretrain(out: &Path, config: &FlowMatchingConfig, init: Option<&Path>) -> Result<()> {
    let split = prompt_split()?;
    let device = Device::default().autodiff();
    let (initial, earlier) = match init {
        Some(path) => {
            let (model, info) = load_base(path, &device)?;
            if info.text_encoder_seed != TEXT_ENCODER_SEED {
                return Err(Error::InvalidArgument {
                    name: "--init text encoder seed".into(),
                    value: info.text_encoder_seed.to_string(),
                    expected: format!("{TEXT_ENCODER_SEED}, the seed pre-training encodes with"),
                });
            }
            (Some(model), format!("{}; then ", info.provenance))
        }
        None => (None, String::new()),
    };
    let encoder = TextEncoder::new(TEXT_ENCODER_SEED, &device)?;
    let log_path = out.with_extension("jsonl");
    write_atomically(&log_path, b"")?;
    let mut log = JsonLinesWriter::append(&log_path)?;
    let bar = ProgressBar::new(config.steps as u64);
    bar.set_style(
        ProgressStyle::with_template("pre-train [{bar:30}] {pos}/{len} {msg} ETA {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let started = Instant::now();
    let mut log_error = None;
    let mut recent_loss = None::<f64>;
    let (model, tail_loss) = pretrain(
        config,
        &split.train,
        &encoder,
        &device,
        initial,
        |step, loss| {
            // An exponential moving average, as single-batch losses are noisy.
            let smoothed = recent_loss.map_or(loss, |average| 0.98 * average + 0.02 * loss);
            recent_loss = Some(smoothed);
            bar.inc(1);
            bar.set_message(format!("loss {smoothed:.4}"));
            let record = serde_json::json!({
                "step": step,
                "loss": loss,
                "seconds": started.elapsed().as_secs_f64(),
            });
            if let Err(err) = log.write(&record) {
                log_error.get_or_insert(err);
            }
        },
    )?;
    bar.finish();
    if let Some(err) = log_error {
        return Err(err);
    }
    let seconds = started.elapsed().as_secs_f64();
    let provenance = format!(
        "{earlier}shapes pretrain --steps {} --batch-size {} --learning-rate {}{} --seed {}; \
         {} training prompts; tail loss {tail_loss:.5}; {seconds:.0} s",
        config.steps,
        config.batch_size,
        config.learning_rate,
        config
            .final_learning_rate
            .map_or(String::new(), |rate| format!(
                " --final-learning-rate {rate}"
            )),
        config.seed,
        split.train.len()
    );
    save_base(
        &model,
        &BaseInfo {
            text_encoder_seed: TEXT_ENCODER_SEED,
            provenance,
        },
        out,
    )?;
    println!(
        "trained {} steps of {} scenes in {seconds:.0} s; loss of the last 10% of steps \
         {tail_loss:.5}; wrote {} and the loss log {}",
        config.steps,
        config.batch_size,
        out.display(),
        log_path.display()
    );
    Ok(())
}

/// Evaluates a checkpoint on a prompt set, printing the scores and writing the grid.
pub fn run_evaluate(
    checkpoint: &Path,
    set: PromptSet,
    limit: Option<usize>,
    config: &SamplingConfig,
    grid: &Path,
) -> Result<()> {
    let split = prompt_split()?;
    let mut prompts = match set {
        PromptSet::Train => split.train,
        PromptSet::Eval => split.eval,
    };
    if let Some(limit) = limit {
        prompts.truncate(limit.max(1));
    }
    let device = Device::default();
    let (model, info) = load_base(checkpoint, &device)?;
    let encoder = TextEncoder::new(info.text_encoder_seed, &device)?;
    let started = Instant::now();
    let evaluation = Evaluation::run(&model, &encoder, &prompts, config, &Scorer::default())?;
    evaluation.write_grid(grid, 2)?;
    println!("checkpoint: {} ({})", checkpoint.display(), info.provenance);
    println!(
        "{:?} prompts: {} × {} samples, {} ODE steps (shift {}), seed {}, {:.0} s",
        set,
        prompts.len(),
        config.samples_per_prompt,
        config.steps,
        config.shift,
        config.seed,
        started.elapsed().as_secs_f64()
    );
    println!(
        "accuracy {:.4}  count score {:.4}  colour score {:.4}",
        evaluation.accuracy(),
        evaluation.mean_count_score(),
        evaluation.mean_colour_score()
    );
    for (index, (correct, samples)) in evaluation.correct_by_object_count().iter().enumerate() {
        if *samples > 0 {
            println!("  {} object(s): {correct}/{samples} correct", index + 1);
        }
    }
    println!(
        "wrote {} and the prompts beside it ({})",
        grid.display(),
        grid.with_extension("txt").display()
    );
    Ok(())
}

/// Writes the grid PNG at `out` and the prompts at `out` with extension `.txt`.
pub fn render(
    out: &Path,
    seed: u64,
    count: usize,
    family: Option<PromptFamily>,
    corrupt: bool,
    scale: u32,
) -> Result<()> {
    if count == 0 || scale == 0 {
        return Err(Error::InvalidArgument {
            name: "--count / --scale".into(),
            value: format!("{count} / {scale}"),
            expected: "both at least 1".into(),
        });
    }
    let mut rng = Rng::seed_from(seed);
    let prompts = family.map(PromptFamily::prompts);
    let corruption = if corrupt {
        Corruption::MILD
    } else {
        Corruption::CLEAN
    };
    let columns = (count as f64).sqrt().ceil() as u32;
    let rows = (count as u32).div_ceil(columns);
    let (tile, gap) = (IMAGE_SIZE as u32 * scale, 2);
    let mut canvas = image::RgbImage::from_pixel(
        columns * (tile + gap) + gap,
        rows * (tile + gap) + gap,
        image::Rgb([128, 128, 128]),
    );
    let mut listing = String::new();
    for index in 0..count as u32 {
        let scene = match &prompts {
            Some(prompts) => prompts[rng.below(prompts.len())].sample_scene(&mut rng),
            None => Scene::sample(&mut rng),
        };
        let image = corruption.apply(&scene.render(), &mut rng);
        let (x, y) = (
            gap + (index % columns) * (tile + gap),
            gap + (index / columns) * (tile + gap),
        );
        image::imageops::replace(&mut canvas, &image.to_rgb8(scale), x.into(), y.into());
        listing.push_str(&format!("{}\n", Prompt::of_scene(&scene)));
    }
    let mut png = std::io::Cursor::new(Vec::new());
    canvas
        .write_to(&mut png, image::ImageFormat::Png)
        .map_err(|err| Error::io(out, std::io::Error::other(err)))?;
    write_atomically(out, png.get_ref())?;
    let text_path = out.with_extension("txt");
    write_atomically(&text_path, listing.as_bytes())?;
    println!(
        "wrote {count} scenes to {} and their prompts to {}",
        out.display(),
        text_path.display()
    );
    Ok(())
}

/// Prints the scorer's accuracy, clean and mildly corrupted, with the first failures.
pub fn check_scorer(scenes: usize, seed: u64) {
    let scorer = Scorer::default();
    for (name, corruption) in [
        ("clean", Corruption::CLEAN),
        ("mild (tested)", Corruption::MILD),
        ("strong (for information)", Corruption::STRONG),
    ] {
        let accuracy = measure_accuracy(&scorer, scenes, seed, corruption);
        println!(
            "{name}: {}/{} correct ({:.2}%)",
            accuracy.correct,
            accuracy.scenes,
            100.0 * accuracy.fraction()
        );
        for (prompt, detections) in accuracy.failures.iter().take(5) {
            println!("  wrong on {prompt:?}: detected {detections:?}");
        }
    }
}
