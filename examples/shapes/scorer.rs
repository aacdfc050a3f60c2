//! A GenEval-like programmatic scorer: colour masks, connected components, a shape class
//! per component, then per-atom answers and a prompt-level verdict.
//!
//! 1. The image is smoothed by a 3×3 binomial filter (noise shrinks, edges stay put); then a
//!    pixel belongs to colour `c` when its channel `c` is at least [`Scorer::min_value`]
//!    and exceeds both other channels by [`Scorer::min_margin`]: dim blurred edges, noise on
//!    the black background and greyish pixels belong to no colour.
//! 2. Each colour's mask is cut into 4-connected components; components smaller than
//!    [`Scorer::min_area`] pixels are specks and ignored.
//! 3. A component's shape class is the shape whose ideal mask (a clean render of the shape,
//!    smoothed and thresholded as in step 1) overlaps it best, by intersection over union, over box sides within 2
//!    pixels of the component's extent and placements within a pixel of its centre: a fill
//!    ratio measured against the best-fitting box of each shape (a square fills its box, a
//!    circle π/4 of it, a triangle ½ of it, apex up), robust to the stray edge pixels that
//!    make a component's bounding box, and so a plain fill ratio, unreliable under noise.
//!    A component that no shape overlaps by [`Scorer::min_iou`] is an unrecognised object.
//! 4. A prompt is answered clause by clause (the number of detected objects of the clause's
//!    colour and shape) and is correct, as GenEval scores a prompt, when every clause's count
//!    is right, nothing else was detected, and every object was recognised.

use crate::prompt::{Clause, Prompt};
use crate::world::{
    BORDER, Colour, IMAGE_SIZE, Image, Kind, MAX_OBJECT_SIZE, MIN_OBJECT_SIZE, Object, Scene, Shape,
};
use flow_rl::Rng;

/// One detected object.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// The colour and the best-fitting shape.
    pub kind: Kind,
    /// Its pixels.
    pub area: usize,
    /// Its bounding box: first row, first column, and side lengths (rows, columns).
    pub bounds: (usize, usize, usize, usize),
    /// The intersection over union of the component and the best-fitting shape's mask.
    pub iou: f64,
    /// Whether `iou` reaches [`Scorer::min_iou`]; an unrecognised object makes every prompt
    /// incorrect, as an object the prompt does not ask for.
    pub recognised: bool,
}

/// One clause's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClauseAnswer {
    /// The clause asked.
    pub clause: Clause,
    /// Detected objects of its colour and shape.
    pub found: usize,
    /// Detected objects of its shape, any colour.
    pub found_shape: usize,
    /// Detected objects of its colour, any shape.
    pub found_colour: usize,
}

impl ClauseAnswer {
    /// Whether exactly the clause's count of its kind was detected.
    pub fn is_correct(&self) -> bool {
        self.found == self.clause.count
    }
}

/// The scorer's answer for one image and prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Every detected object.
    pub detections: Vec<Detection>,
    /// One answer per clause of the prompt.
    pub clauses: Vec<ClauseAnswer>,
    /// GenEval's prompt-level answer: every clause right, no other object, and every object
    /// recognised.
    pub correct: bool,
    /// How well the objects' shapes and counts match, colours aside: over shapes,
    /// `Σ min(detected, asked) / Σ max(detected, asked)`, in `[0, 1]`, 1 exactly when every
    /// shape is there as many times as asked.
    pub count_score: f64,
    /// How well the colours are bound, given the shapes: of the objects matched by shape
    /// (`Σ_shapes min(detected, asked)`), the fraction matched by colour and shape too
    /// (`Σ_kinds min(detected, asked)`), in `[0, 1]`; 0 when no shape matches.
    pub colour_score: f64,
}

/// The detector's thresholds; [`Scorer::default`] holds the tested values.
#[derive(Debug, Clone, PartialEq)]
pub struct Scorer {
    /// The least value, in `[0, 1]`, of a coloured pixel's own channel.
    pub min_value: f32,
    /// The least lead of a coloured pixel's own channel over each other channel.
    pub min_margin: f32,
    /// Components of fewer pixels are specks.
    pub min_area: usize,
    /// The least intersection over union with a shape's mask for a recognised object.
    pub min_iou: f64,
    /// Each shape's mask at every box side the search tries.
    templates: Vec<Template>,
}

/// A shape's mask in a box of one side: the pixels it covers at least half of.
#[derive(Debug, Clone, PartialEq)]
struct Template {
    shape: Shape,
    size: usize,
    /// One bit set per covered pixel, bit `c` of row `r` for the box's pixel `(r, c)`.
    rows: Vec<u64>,
    /// How many pixels it covers.
    area: usize,
}

/// The taps of the 3×3 binomial filter applied before thresholding: it divides pixel noise
/// by ≈ 2.7, while the 0.5 level of a hard edge stays where the edge is and a square's
/// corner pixel stays above it (9/16).
const SMOOTHING: [f32; 3] = [0.25, 0.5, 0.25];
/// Box sides searched around a component's extent, each way.
const SIZE_SLACK: usize = 2;
/// Placements searched around a component's centre, each way, in pixels.
const SHIFT_SLACK: i64 = 1;

impl Default for Scorer {
    fn default() -> Self {
        let sizes = MIN_OBJECT_SIZE.saturating_sub(2 * SIZE_SLACK).max(2)
            ..=MAX_OBJECT_SIZE + 2 * SIZE_SLACK;
        let templates = Shape::ALL
            .into_iter()
            .flat_map(|shape| sizes.clone().map(move |size| (shape, size)))
            .map(|(shape, size)| {
                // The shape as `detect` sees a clean render of it: smoothed, then thresholded.
                let corner = BORDER;
                let scene = Scene {
                    objects: vec![Object {
                        kind: Kind {
                            colour: Colour::Red,
                            shape,
                        },
                        x: corner,
                        y: corner,
                        size,
                    }],
                };
                let seen = scene.render().convolved(SMOOTHING);
                let rows: Vec<u64> = (0..size)
                    .map(|row| {
                        (0..size)
                            .filter(|&column| seen.rgb(corner + row, corner + column)[0] >= 0.5)
                            .fold(0, |bits, column| bits | 1 << column)
                    })
                    .collect();
                let area = rows.iter().map(|bits| bits.count_ones() as usize).sum();
                Template {
                    shape,
                    size,
                    rows,
                    area,
                }
            })
            .collect();
        Scorer {
            min_value: 0.5,
            min_margin: 0.25,
            min_area: 12,
            min_iou: 0.6,
            templates,
        }
    }
}

impl Scorer {
    /// The objects in an image.
    pub fn detect(&self, image: &Image) -> Vec<Detection> {
        let image = image.convolved(SMOOTHING);
        let mut detections = Vec::new();
        for colour in Colour::ALL {
            let mask: Vec<bool> = (0..IMAGE_SIZE * IMAGE_SIZE)
                .map(|pixel| {
                    self.is_colour(image.rgb(pixel / IMAGE_SIZE, pixel % IMAGE_SIZE), colour)
                })
                .collect();
            for component in components(&mask) {
                if component.len() >= self.min_area {
                    detections.push(self.classify(colour, &component));
                }
            }
        }
        detections
    }

    /// Scores an image against a prompt.
    pub fn score(&self, image: &Image, prompt: &Prompt) -> Verdict {
        let detections = self.detect(image);
        let count_where = |keep: &dyn Fn(Kind) -> bool| {
            detections
                .iter()
                .filter(|detection| keep(detection.kind))
                .count()
        };
        let clauses: Vec<ClauseAnswer> = prompt
            .clauses()
            .iter()
            .map(|&clause| ClauseAnswer {
                clause,
                found: count_where(&|kind| kind == clause.kind),
                found_shape: count_where(&|kind| kind.shape == clause.kind.shape),
                found_colour: count_where(&|kind| kind.colour == clause.kind.colour),
            })
            .collect();
        let correct = clauses.iter().all(ClauseAnswer::is_correct)
            && detections.len() == prompt.object_count()
            && detections.iter().all(|detection| detection.recognised);

        let asked = prompt.kinds();
        let matched_by = |same: &dyn Fn(Kind, Kind) -> bool, groups: Vec<Kind>| {
            let (mut overlap, mut larger) = (0, 0);
            for group in groups {
                let wanted = asked.iter().filter(|&&kind| same(kind, group)).count();
                let seen = detections
                    .iter()
                    .filter(|detection| same(detection.kind, group))
                    .count();
                overlap += wanted.min(seen);
                larger += wanted.max(seen);
            }
            (overlap, larger)
        };
        let shapes: Vec<Kind> = Shape::ALL
            .into_iter()
            .map(|shape| Kind {
                colour: Colour::Red,
                shape,
            })
            .collect();
        let (shape_overlap, shape_larger) = matched_by(&|a, b| a.shape == b.shape, shapes);
        let (kind_overlap, _) = matched_by(&|a, b| a == b, Kind::all().collect());
        let ratio = |numerator: usize, denominator: usize| {
            if denominator == 0 {
                0.0
            } else {
                numerator as f64 / denominator as f64
            }
        };
        Verdict {
            detections,
            clauses,
            correct,
            count_score: ratio(shape_overlap, shape_larger),
            colour_score: ratio(kind_overlap, shape_overlap),
        }
    }

    /// Whether a pixel belongs to `colour`'s mask.
    fn is_colour(&self, rgb: [f32; 3], colour: Colour) -> bool {
        let own = colour.channel();
        rgb[own] >= self.min_value
            && (0..3)
                .filter(|&channel| channel != own)
                .all(|channel| rgb[own] - rgb[channel] >= self.min_margin)
    }

    /// The shape class of a component (pixel indices): the best-overlapping template.
    fn classify(&self, colour: Colour, pixels: &[usize]) -> Detection {
        // The component as one bit mask per image row.
        let mut member = [0u64; IMAGE_SIZE];
        for &pixel in pixels {
            member[pixel / IMAGE_SIZE] |= 1 << (pixel % IMAGE_SIZE);
        }
        let rows = pixels.iter().map(|pixel| pixel / IMAGE_SIZE);
        let columns = pixels.iter().map(|pixel| pixel % IMAGE_SIZE);
        let (top, bottom) = (rows.clone().min().unwrap_or(0), rows.max().unwrap_or(0));
        let (left, right) = (
            columns.clone().min().unwrap_or(0),
            columns.max().unwrap_or(0),
        );
        let (height, width) = (bottom - top + 1, right - left + 1);
        let extent = height.max(width);
        // Twice the box's centre, so that odd and even sides place exactly.
        let (centre_row2, centre_column2) = ((top + bottom + 1) as i64, (left + right + 1) as i64);

        let (mut best_shape, mut best_iou) = (Shape::Circle, -1.0);
        for template in &self.templates {
            if template.size + SIZE_SLACK < extent || template.size > extent + SIZE_SLACK {
                continue;
            }
            let size = template.size as i64;
            for shift_row in -SHIFT_SLACK..=SHIFT_SLACK {
                for shift_column in -SHIFT_SLACK..=SHIFT_SLACK {
                    let origin_row = (centre_row2 - size).div_euclid(2) + shift_row;
                    let origin_column = (centre_column2 - size).div_euclid(2) + shift_column;
                    let mut intersection = 0usize;
                    for (offset, &bits) in template.rows.iter().enumerate() {
                        let row = origin_row + offset as i64;
                        if !(0..IMAGE_SIZE as i64).contains(&row) {
                            continue;
                        }
                        let placed = if origin_column >= 0 {
                            bits << origin_column
                        } else {
                            bits >> -origin_column
                        };
                        intersection += (placed & member[row as usize]).count_ones() as usize;
                    }
                    let union = template.area + pixels.len() - intersection;
                    let iou = intersection as f64 / union as f64;
                    if iou > best_iou {
                        (best_shape, best_iou) = (template.shape, iou);
                    }
                }
            }
        }
        Detection {
            kind: Kind {
                colour,
                shape: best_shape,
            },
            area: pixels.len(),
            bounds: (top, left, height, width),
            iou: best_iou.max(0.0),
            recognised: best_iou >= self.min_iou,
        }
    }
}

/// The 4-connected components of a `IMAGE_SIZE²` mask, each as its pixel indices.
fn components(mask: &[bool]) -> Vec<Vec<usize>> {
    let mut seen = vec![false; mask.len()];
    let mut found = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        let mut component = Vec::new();
        let mut frontier = vec![start];
        while let Some(pixel) = frontier.pop() {
            component.push(pixel);
            let (row, column) = (pixel / IMAGE_SIZE, pixel % IMAGE_SIZE);
            let neighbours = [
                (row > 0).then(|| pixel - IMAGE_SIZE),
                (row + 1 < IMAGE_SIZE).then(|| pixel + IMAGE_SIZE),
                (column > 0).then(|| pixel - 1),
                (column + 1 < IMAGE_SIZE).then(|| pixel + 1),
            ];
            for neighbour in neighbours.into_iter().flatten() {
                if mask[neighbour] && !seen[neighbour] {
                    seen[neighbour] = true;
                    frontier.push(neighbour);
                }
            }
        }
        found.push(component);
    }
    found
}

/// How rendered images are spoiled before scoring, to stand in for a generator's output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Corruption {
    /// The std of a 3×3 Gaussian blur, in pixels; 0 for none.
    pub blur_sigma: f32,
    /// The std of additive Gaussian noise on `[0, 1]` values; 0 for none.
    pub noise_std: f32,
}

impl Corruption {
    /// The image as rendered.
    pub const CLEAN: Corruption = Corruption {
        blur_sigma: 0.0,
        noise_std: 0.0,
    };
    /// A slight blur (σ = 0.6 px) then noise of std 0.1.
    pub const MILD: Corruption = Corruption {
        blur_sigma: 0.6,
        noise_std: 0.1,
    };

    /// Beyond the tested condition, for information: blur σ = 1 px, noise std 0.2.
    pub const STRONG: Corruption = Corruption {
        blur_sigma: 1.0,
        noise_std: 0.2,
    };

    /// The corrupted image (blur first, then noise drawn from `rng`).
    pub fn apply(&self, image: &Image, rng: &mut Rng) -> Image {
        let blurred = if self.blur_sigma > 0.0 {
            image.blurred(self.blur_sigma)
        } else {
            image.clone()
        };
        if self.noise_std > 0.0 {
            blurred.with_noise(self.noise_std, rng)
        } else {
            blurred
        }
    }
}

/// The scorer's accuracy on rendered scenes with known prompts.
#[derive(Debug, Clone, PartialEq)]
pub struct Accuracy {
    /// Scenes scored.
    pub scenes: usize,
    /// Scenes whose prompt the scorer judged correct.
    pub correct: usize,
    /// The wrong ones: each scene's prompt and the detections, for a person to look at.
    pub failures: Vec<(String, Vec<Detection>)>,
}

impl Accuracy {
    /// `correct / scenes`.
    pub fn fraction(&self) -> f64 {
        self.correct as f64 / self.scenes.max(1) as f64
    }
}

/// Renders `scenes` random scenes from `seed`, corrupts them, and counts how often the
/// scorer finds each scene's own prompt correct.
pub fn measure_accuracy(
    scorer: &Scorer,
    scenes: usize,
    seed: u64,
    corruption: Corruption,
) -> Accuracy {
    let mut rng = Rng::seed_from(seed);
    let mut accuracy = Accuracy {
        scenes,
        correct: 0,
        failures: Vec::new(),
    };
    for _ in 0..scenes {
        let scene = Scene::sample(&mut rng);
        let prompt = Prompt::of_scene(&scene);
        let image = corruption.apply(&scene.render(), &mut rng);
        let verdict = scorer.score(&image, &prompt);
        if verdict.correct {
            accuracy.correct += 1;
        } else {
            accuracy
                .failures
                .push((prompt.to_string(), verdict.detections));
        }
    }
    accuracy
}
