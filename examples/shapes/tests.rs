//! The world's, the prompts', the text encoder's and the scorer's tests.

use burn::prelude::*;
use flow_rl::models::mmdit::Mmdit;
use flow_rl::{Error, Rng};

use crate::prompt::{Clause, Prompt, PromptFamily, PromptSplit, vocabulary};
use crate::scorer::{Corruption, Scorer, measure_accuracy};
use crate::text::{CONTEXT_DIM, CONTEXT_LENGTH, POOLED_DIM, TextEncoder, mmdit_config, tokenize};
use crate::world::{
    BORDER, Colour, GAP, IMAGE_SIZE, Image, Kind, MAX_OBJECT_SIZE, MIN_OBJECT_SIZE, Object, Scene,
    Shape,
};

fn host(tensor: Tensor<3>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap()
}

/// Whether any two objects are closer than [`GAP`] or any leaves the [`BORDER`].
fn is_crowded(scene: &Scene) -> bool {
    let outside = scene.objects.iter().any(|object| {
        object.x < BORDER
            || object.y < BORDER
            || object.x + object.size + BORDER > IMAGE_SIZE
            || object.y + object.size + BORDER > IMAGE_SIZE
    });
    let close = scene.objects.iter().enumerate().any(|(index, object)| {
        scene.objects[index + 1..].iter().any(|other| {
            let apart = |a0: usize, a_len: usize, b0: usize, b_len: usize| {
                a0 + a_len + GAP <= b0 || b0 + b_len + GAP <= a0
            };
            !(apart(object.x, object.size, other.x, other.size)
                || apart(object.y, object.size, other.y, other.size))
        })
    });
    outside || close
}

#[test]
fn scenes_never_crowd_and_stay_in_bounds() {
    let mut rng = Rng::seed_from(1);
    for _ in 0..5000 {
        let scene = Scene::sample(&mut rng);
        assert!((1..=3).contains(&scene.objects.len()));
        assert!(!is_crowded(&scene), "{scene:?}");
        for object in &scene.objects {
            assert!((MIN_OBJECT_SIZE..=MAX_OBJECT_SIZE).contains(&object.size));
        }
    }
}

#[test]
fn rendered_pixels_lie_inside_their_boxes_and_no_two_objects_share_a_pixel() {
    let mut rng = Rng::seed_from(2);
    for _ in 0..200 {
        let scene = Scene::sample(&mut rng);
        let image = scene.render();
        for row in 0..IMAGE_SIZE {
            for column in 0..IMAGE_SIZE {
                let lit = image.rgb(row, column).iter().filter(|&&v| v > 0.0).count();
                let owners = scene
                    .objects
                    .iter()
                    .filter(|o| {
                        (o.y..o.y + o.size).contains(&row) && (o.x..o.x + o.size).contains(&column)
                    })
                    .count();
                assert!(lit <= owners && owners <= 1, "{scene:?} at {row},{column}");
            }
        }
    }
}

#[test]
fn shapes_cover_their_expected_fraction_of_the_box() {
    let mut rng = Rng::seed_from(3);
    for (shape, expected) in [
        (Shape::Circle, std::f64::consts::FRAC_PI_4),
        (Shape::Square, 1.0),
        (Shape::Triangle, 0.5),
    ] {
        let scene = Scene::place(
            &[Kind {
                colour: Colour::Green,
                shape,
            }],
            &mut rng,
        )
        .unwrap();
        let size = scene.objects[0].size as f64;
        let coverage: f64 = scene.render().pixels.iter().map(|&v| f64::from(v)).sum();
        let fraction = coverage / (size * size);
        assert!((fraction - expected).abs() < 0.03, "{shape:?}: {fraction}");
    }
}

#[test]
fn sampling_is_deterministic_per_seed() {
    let draw = |seed| {
        let mut rng = Rng::seed_from(seed);
        (0..20).map(|_| Scene::sample(&mut rng)).collect::<Vec<_>>()
    };
    assert_eq!(draw(5), draw(5));
    assert_ne!(draw(5), draw(6));
    let prompt = Prompt::parse("two red circles and a blue square").unwrap();
    let place = |seed| prompt.sample_scene(&mut Rng::seed_from(seed));
    assert_eq!(place(9), place(9));
    assert_eq!(Prompt::of_scene(&place(9)), prompt);
}

#[test]
fn tensor_layout_is_channels_first_in_minus_one_to_one_and_round_trips() {
    let device = Device::default();
    let scene = Scene::place(
        &[Kind {
            colour: Colour::Blue,
            shape: Shape::Square,
        }],
        &mut Rng::seed_from(4),
    )
    .unwrap();
    let object = scene.objects[0];
    let image = scene.render();
    let tensor = image.to_tensor(&device);
    assert_eq!(tensor.dims(), [3, IMAGE_SIZE, IMAGE_SIZE]);
    let values = host(tensor.clone());
    let at = |channel: usize, row: usize, column: usize| {
        values[(channel * IMAGE_SIZE + row) * IMAGE_SIZE + column]
    };
    let (row, column) = (object.y + 1, object.x + 1);
    assert_eq!(
        (at(0, row, column), at(1, row, column), at(2, row, column)),
        (-1.0, -1.0, 1.0)
    );
    assert_eq!(at(2, 0, 0), -1.0);
    let batch = Image::batch_to_tensor(&[image.clone(), Image::black()], &device).unwrap();
    assert_eq!(batch.dims(), [2, 3, IMAGE_SIZE, IMAGE_SIZE]);
    let back = Image::batch_from_tensor(batch).unwrap();
    assert_eq!(back, vec![image, Image::black()]);
    let wrong = Tensor::<4>::zeros([1, 3, 16, 16], &device);
    assert!(matches!(
        Image::batch_from_tensor(wrong),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn prompts_read_as_the_grammar_says() {
    let cases = [
        "a red circle",
        "two blue squares",
        "a red square and a green triangle",
        "three red circles",
        "a red circle and a green circle and a blue triangle",
    ];
    for text in cases {
        assert_eq!(Prompt::parse(text).unwrap().to_string(), text);
    }
    let prompt = Prompt::parse("A  green triangle and a RED square").unwrap();
    assert_eq!(prompt.to_string(), "a red square and a green triangle");
    assert_eq!(
        prompt.clauses(),
        [
            Clause {
                kind: Kind {
                    colour: Colour::Red,
                    shape: Shape::Square
                },
                count: 1
            },
            Clause {
                kind: Kind {
                    colour: Colour::Green,
                    shape: Shape::Triangle
                },
                count: 1
            },
        ]
    );
    let counted = Prompt::of_kinds(&[
        Kind {
            colour: Colour::Red,
            shape: Shape::Circle,
        },
        Kind {
            colour: Colour::Blue,
            shape: Shape::Square,
        },
        Kind {
            colour: Colour::Red,
            shape: Shape::Circle,
        },
    ])
    .unwrap();
    assert_eq!(counted.to_string(), "two red circles and a blue square");
}

#[test]
fn scene_to_prompt_to_atoms_round_trips() {
    let mut rng = Rng::seed_from(7);
    for _ in 0..500 {
        let scene = Scene::sample(&mut rng);
        let prompt = Prompt::of_scene(&scene);
        let parsed = Prompt::parse(&prompt.to_string()).unwrap();
        assert_eq!(parsed, prompt);
        let mut asked = parsed.kinds();
        let mut present = scene.kinds();
        asked.sort();
        present.sort();
        assert_eq!(asked, present);
    }
}

#[test]
fn an_unknown_word_is_an_error_naming_it_and_the_vocabulary() {
    let err = Prompt::parse("a purple circle").unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::InvalidArgument { .. }));
    assert!(message.contains("\"purple\""), "{message}");
    for word in vocabulary() {
        assert!(message.contains(word), "{word} missing from {message}");
    }
    let err = tokenize("two red hexagons").unwrap_err().to_string();
    assert!(
        err.contains("\"hexagons\"") && err.contains("triangles"),
        "{err}"
    );
}

#[test]
fn ungrammatical_prompts_are_errors() {
    for text in [
        "",
        "red circle",
        "a red circles",
        "two red circle",
        "a circle red",
        "a red circle and",
        "a red circle and a red circle",
        "two red circles and two blue squares",
        "and",
    ] {
        let err = Prompt::parse(text).unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument { .. }),
            "{text}: {err}"
        );
    }
}

#[test]
fn families_have_their_sizes_and_shapes() {
    let counting = PromptFamily::Counting.prompts();
    let binding = PromptFamily::ColourBinding.prompts();
    let all = PromptFamily::All.prompts();
    assert_eq!((counting.len(), binding.len(), all.len()), (27, 18, 219));
    assert!(counting.iter().all(|p| p.clauses().len() == 1));
    for prompt in &binding {
        let [first, second] = prompt.clauses() else {
            panic!("{prompt}")
        };
        assert_eq!((first.count, second.count), (1, 1));
        assert!(first.kind.colour != second.kind.colour && first.kind.shape != second.kind.shape);
    }
    let mut distinct = all.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), all.len());
    assert!(counting.iter().chain(&binding).all(|p| all.contains(p)));
    assert!(
        all.iter()
            .all(|p| Prompt::parse(&p.to_string()).unwrap() == *p)
    );
}

#[test]
fn the_train_eval_split_is_disjoint_complete_and_seeded() {
    let all = PromptFamily::All.prompts();
    let split = PromptSplit::new(&all, 0.25, 3).unwrap();
    assert_eq!(split.eval.len(), 55);
    assert_eq!(split.train.len() + split.eval.len(), all.len());
    assert!(split.eval.iter().all(|p| !split.train.contains(p)));
    assert_eq!(split, PromptSplit::new(&all, 0.25, 3).unwrap());
    assert_ne!(split, PromptSplit::new(&all, 0.25, 4).unwrap());
    assert!(PromptSplit::new(&all, 1.0, 0).is_err());
    assert!(PromptSplit::new(&all[..1], 0.5, 0).is_err());
    assert!(PromptSplit::new(&[all[0].clone(), all[0].clone()], 0.5, 0).is_err());
}

#[test]
fn scenes_and_encodings_of_bad_sizes_are_errors() {
    let red_circle = Kind {
        colour: Colour::Red,
        shape: Shape::Circle,
    };
    let mut rng = Rng::seed_from(0);
    assert!(matches!(
        Scene::place(&[], &mut rng),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        Scene::place(&[red_circle; 4], &mut rng),
        Err(Error::InvalidArgument { .. })
    ));
    let encoder = TextEncoder::new(0, &Device::default()).unwrap();
    assert!(encoder.encode(&[]).is_err());
    let unknown = encoder.encode(&["a red circle".into(), "a red dodecahedron".into()]);
    assert!(
        unknown
            .unwrap_err()
            .to_string()
            .contains("\"dodecahedron\"")
    );
    let long = vec!["a"; CONTEXT_LENGTH - 1].join(" ");
    assert!(tokenize(&long).is_err() && tokenize(&long[2..]).is_ok());
}

#[test]
fn tokens_are_bos_words_eos_then_padding() {
    let ids = tokenize("two red circles").unwrap();
    assert_eq!(ids.len(), CONTEXT_LENGTH);
    assert_eq!(ids[0], crate::text::BOS_ID);
    assert_eq!(ids[4], crate::text::EOS_ID);
    assert!(ids[5..].iter().all(|&id| id == crate::text::PAD_ID));
    let words: std::collections::HashSet<u32> = ids[1..4].iter().copied().collect();
    assert_eq!(words.len(), 3);
    assert!(tokenize("").is_err());
}

#[test]
fn embeddings_are_seeded_bit_for_bit_and_fit_the_proposed_mmdit() {
    let device = Device::default();
    let prompts: Vec<String> = [
        "a red circle",
        "a blue circle",
        "two red circles and a green square",
    ]
    .map(String::from)
    .to_vec();
    let first = TextEncoder::new(11, &device)
        .unwrap()
        .encode(&prompts)
        .unwrap();
    let again = TextEncoder::new(11, &device)
        .unwrap()
        .encode(&prompts)
        .unwrap();
    let other = TextEncoder::new(12, &device)
        .unwrap()
        .encode(&prompts)
        .unwrap();
    assert_eq!(first.context.dims(), [3, CONTEXT_LENGTH, CONTEXT_DIM]);
    assert_eq!(first.pooled.dims(), [3, POOLED_DIM]);
    assert_eq!(host(first.context.clone()), host(again.context.clone()));
    assert_eq!(
        host(first.pooled.clone().unsqueeze()),
        host(again.pooled.clone().unsqueeze())
    );
    assert_ne!(host(first.context.clone()), host(other.context));
    // Prompts differing in one word get clearly different pooled embeddings.
    let pooled = host(first.pooled.clone().unsqueeze());
    let distance: f32 = (0..POOLED_DIM)
        .map(|i| (pooled[i] - pooled[POOLED_DIM + i]).powi(2))
        .sum::<f32>()
        .sqrt();
    let norm: f32 = pooled[..POOLED_DIM]
        .iter()
        .map(|v| v * v)
        .sum::<f32>()
        .sqrt();
    assert!(distance > 0.1 * norm, "{distance} vs {norm}");

    let config = mmdit_config();
    assert_eq!(config.num_params(), 579_248);
    first.check_widths(&config).unwrap();
    let model: Mmdit = config.init(&device).unwrap();
    let images = Image::batch_to_tensor(&vec![Image::black(); 3], &device).unwrap();
    let velocity = model
        .forward(
            images,
            Tensor::full([3], 500.0, &device),
            first.context,
            first.pooled,
        )
        .unwrap();
    assert_eq!(velocity.dims(), [3, 3, IMAGE_SIZE, IMAGE_SIZE]);
}

#[test]
fn the_scorer_is_right_on_at_least_99_percent_of_rendered_scenes() {
    let scorer = Scorer::default();
    for (corruption, seed) in [(Corruption::CLEAN, 100), (Corruption::MILD, 200)] {
        let accuracy = measure_accuracy(&scorer, 1000, seed, corruption);
        println!("{corruption:?}: {}/{}", accuracy.correct, accuracy.scenes);
        assert!(
            accuracy.fraction() >= 0.99,
            "{corruption:?}: {:.4}, failures {:?}",
            accuracy.fraction(),
            &accuracy.failures[..accuracy.failures.len().min(5)]
        );
    }
}

#[test]
fn the_scorer_answers_per_clause_and_scores_count_and_colour() {
    let scorer = Scorer::default();
    let mut rng = Rng::seed_from(8);
    let scene = Prompt::parse("two red circles and a blue square")
        .unwrap()
        .sample_scene(&mut rng);
    let image = scene.render();
    let asked = |text: &str| scorer.score(&image, &Prompt::parse(text).unwrap());

    let right = asked("two red circles and a blue square");
    assert!(right.correct);
    assert_eq!((right.count_score, right.colour_score), (1.0, 1.0));

    // Wrong colours on the right shapes: counts perfect, colour binding 1 of 3.
    let recoloured = asked("two blue circles and a red square");
    assert!(!recoloured.correct);
    assert_eq!(recoloured.count_score, 1.0);
    assert!((recoloured.colour_score - 0.0).abs() < 1e-12);
    assert_eq!(recoloured.clauses[0].found_shape, 1);

    // One circle asked where two are: the clause is wrong, the count half right.
    let fewer = asked("a red circle and a blue square");
    assert!(!fewer.correct);
    assert!(!fewer.clauses[0].is_correct() && fewer.clauses[1].is_correct());
    assert!((fewer.count_score - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(fewer.colour_score, 1.0);

    // Nothing drawn: no detections, both scores 0.
    let blank = scorer.score(&Image::black(), &Prompt::parse("a red circle").unwrap());
    assert!(blank.detections.is_empty() && !blank.correct);
    assert_eq!((blank.count_score, blank.colour_score), (0.0, 0.0));
}

/// Paints a rectangle of one RGB value.
fn paint(
    image: &mut Image,
    rows: std::ops::Range<usize>,
    columns: std::ops::Range<usize>,
    rgb: [f32; 3],
) {
    for row in rows {
        for column in columns.clone() {
            let start = (row * IMAGE_SIZE + column) * 3;
            image.pixels[start..start + 3].copy_from_slice(&rgb);
        }
    }
}

#[test]
fn the_scorer_ignores_off_colours_and_rejects_shapeless_blobs() {
    let scorer = Scorer::default();
    let square = Prompt::parse("a red square").unwrap();
    let scene = Scene {
        objects: vec![Object {
            kind: Kind {
                colour: Colour::Red,
                shape: Shape::Square,
            },
            x: 1,
            y: 1,
            size: 10,
        }],
    };
    let mut image = scene.render();
    // Purple, grey and dim red patches are no object of the world.
    paint(&mut image, 20..26, 20..26, [0.6, 0.0, 0.6]);
    paint(&mut image, 20..26, 2..8, [0.7, 0.7, 0.7]);
    paint(&mut image, 2..8, 20..26, [0.3, 0.0, 0.0]);
    let verdict = scorer.score(&image, &square);
    assert!(verdict.correct, "{verdict:?}");
    assert_eq!(verdict.detections.len(), 1);
    assert!(verdict.detections[0].recognised && verdict.detections[0].iou > 0.99);

    // A thin red bar is red, but no shape: an unrecognised extra object.
    paint(&mut image, 14..15, 14..30, [1.0, 0.0, 0.0]);
    let verdict = scorer.score(&image, &square);
    assert_eq!(verdict.detections.len(), 2);
    assert!(!verdict.detections[1].recognised, "{verdict:?}");
    assert!(!verdict.correct);
}
