//! Prompts: a small grammar over a closed vocabulary, the prompt of a scene, parsing a prompt
//! back into its atoms, and the prompt families of the experiments.
//!
//! A prompt is one to three clauses `COUNT COLOUR SHAPE` joined by `and`: `a red circle`,
//! `two blue squares`, `a green triangle and a red square`. Objects of one kind are counted
//! in one clause (`two red circles`, never `a red circle and a red circle`); the clauses of
//! a prompt name distinct kinds, in the canonical order (colour red, green, blue; then shape
//! circle, square, triangle), so that each set of objects has exactly one prompt.

use std::fmt;

use flow_rl::{Error, Result, Rng};

use crate::world::{Colour, Kind, MAX_OBJECTS, Scene, Shape};

/// The counting words, for counts 1, 2 and 3.
const COUNT_WORDS: [&str; MAX_OBJECTS] = ["a", "two", "three"];
/// The word joining clauses.
const AND: &str = "and";

/// Every word a prompt may hold, in a fixed order (the tokenizer's ids follow it).
pub fn vocabulary() -> Vec<&'static str> {
    let mut words: Vec<&'static str> = COUNT_WORDS.to_vec();
    words.extend(Colour::ALL.map(Colour::word));
    for shape in Shape::ALL {
        words.push(shape.noun());
        words.push(shape.plural());
    }
    words.push(AND);
    words
}

/// The error for a word outside the vocabulary: it names the word and lists the vocabulary.
pub fn unknown_word(word: &str, prompt: &str) -> Error {
    Error::InvalidArgument {
        name: format!("word in prompt {prompt:?}"),
        value: format!("{word:?}"),
        expected: format!("a word of the vocabulary: {}", vocabulary().join(", ")),
    }
}

/// The words of a prompt: split on whitespace, lower-cased, each checked against the
/// vocabulary.
pub fn words(prompt: &str) -> Result<Vec<String>> {
    let vocabulary = vocabulary();
    prompt
        .split_whitespace()
        .map(|word| {
            let word = word.to_lowercase();
            if vocabulary.contains(&word.as_str()) {
                Ok(word)
            } else {
                Err(unknown_word(&word, prompt))
            }
        })
        .collect()
}

/// One atom of a prompt: `count` objects of one colour and shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Clause {
    /// The colour and shape (first, so that clauses sort in the canonical order).
    pub kind: Kind,
    /// How many, 1 to 3.
    pub count: usize,
}

impl fmt::Display for Clause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let noun = if self.count == 1 {
            self.kind.shape.noun()
        } else {
            self.kind.shape.plural()
        };
        write!(
            f,
            "{} {} {noun}",
            COUNT_WORDS[self.count - 1],
            self.kind.colour.word()
        )
    }
}

/// A prompt: clauses of distinct kinds in the canonical order, 1 to 3 objects in all.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prompt {
    clauses: Vec<Clause>,
}

impl Prompt {
    /// The prompt of these clauses, sorted into the canonical order. Fails when two clauses
    /// name one kind, a count is 0, or the objects number more than 3 (or none).
    pub fn new(mut clauses: Vec<Clause>) -> Result<Prompt> {
        let total: usize = clauses.iter().map(|clause| clause.count).sum();
        if clauses.iter().any(|clause| clause.count == 0) || total == 0 || total > MAX_OBJECTS {
            return Err(Error::InvalidArgument {
                name: "objects in a prompt".into(),
                value: format!("{total} in {clauses:?}"),
                expected: format!("1 to {MAX_OBJECTS} objects, every count at least 1"),
            });
        }
        clauses.sort();
        if let Some(pair) = clauses.windows(2).find(|pair| pair[0].kind == pair[1].kind) {
            return Err(Error::InvalidArgument {
                name: "clauses of a prompt".into(),
                value: format!("{} and {}", pair[0], pair[1]),
                expected: "each colour and shape in one clause, with its count".into(),
            });
        }
        Ok(Prompt { clauses })
    }

    /// The prompt describing a scene: its objects counted by kind.
    pub fn of_kinds(kinds: &[Kind]) -> Result<Prompt> {
        let mut sorted = kinds.to_vec();
        sorted.sort();
        let mut clauses: Vec<Clause> = Vec::new();
        for kind in sorted {
            match clauses.last_mut() {
                Some(last) if last.kind == kind => last.count += 1,
                _ => clauses.push(Clause { kind, count: 1 }),
            }
        }
        Self::new(clauses)
    }

    /// The prompt of a scene.
    pub fn of_scene(scene: &Scene) -> Prompt {
        Self::of_kinds(&scene.kinds()).expect("a scene holds 1 to MAX_OBJECTS objects")
    }

    /// Parses a prompt of the grammar (any case, any whitespace). Fails with an
    /// [`Error::InvalidArgument`] naming an unknown word and listing the vocabulary, or
    /// saying what the grammar expected where the words are known but out of place.
    pub fn parse(text: &str) -> Result<Prompt> {
        let words = words(text)?;
        let grammar_error = |problem: String| Error::InvalidArgument {
            name: "prompt".into(),
            value: format!("{text:?}"),
            expected: format!(
                "clauses `COUNT COLOUR SHAPE` joined by `and`, COUNT one of {}, the shape \
                 plural after two or three ({problem})",
                COUNT_WORDS.join("/")
            ),
        };
        let mut clauses = Vec::new();
        for (index, clause) in words.split(|word| word == AND).enumerate() {
            let [count, colour, shape] = clause else {
                return Err(grammar_error(format!(
                    "clause {} has {} words",
                    index + 1,
                    clause.len()
                )));
            };
            let count = COUNT_WORDS
                .iter()
                .position(|word| word == count)
                .map(|position| position + 1)
                .ok_or_else(|| grammar_error(format!("{count:?} is not a count")))?;
            let colour = Colour::ALL
                .into_iter()
                .find(|candidate| candidate.word() == colour)
                .ok_or_else(|| grammar_error(format!("{colour:?} is not a colour")))?;
            let shape = Shape::ALL
                .into_iter()
                .find(|candidate| {
                    let expected = if count == 1 {
                        candidate.noun()
                    } else {
                        candidate.plural()
                    };
                    expected == shape
                })
                .ok_or_else(|| {
                    grammar_error(format!("{shape:?} is not a shape agreeing with the count"))
                })?;
            clauses.push(Clause {
                kind: Kind { colour, shape },
                count,
            });
        }
        Self::new(clauses)
    }

    /// The clauses (atoms), in the canonical order.
    pub fn clauses(&self) -> &[Clause] {
        &self.clauses
    }

    /// The objects the prompt asks for, one entry per object.
    pub fn kinds(&self) -> Vec<Kind> {
        self.clauses
            .iter()
            .flat_map(|clause| std::iter::repeat_n(clause.kind, clause.count))
            .collect()
    }

    /// The number of objects.
    pub fn object_count(&self) -> usize {
        self.clauses.iter().map(|clause| clause.count).sum()
    }

    /// A scene of this prompt's objects at random sizes and places.
    pub fn sample_scene(&self, rng: &mut Rng) -> Scene {
        Scene::place(&self.kinds(), rng).expect("a prompt holds 1 to MAX_OBJECTS objects")
    }
}

impl fmt::Display for Prompt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, clause) in self.clauses.iter().enumerate() {
            if index > 0 {
                write!(f, " {AND} ")?;
            }
            write!(f, "{clause}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Prompt {
    type Err = Error;

    fn from_str(text: &str) -> Result<Prompt> {
        Prompt::parse(text)
    }
}

/// The prompt families of the experiments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PromptFamily {
    /// One kind, 1 to 3 of it: `a red circle`, `three blue triangles` (27 prompts).
    Counting,
    /// Colour binding: one object each of two kinds differing in both colour and shape,
    /// `a red circle and a blue square` (18 prompts).
    ColourBinding,
    /// Every prompt of the world: every multiset of 1 to 3 objects (219 prompts).
    All,
}

impl PromptFamily {
    /// The family's prompts, sorted.
    pub fn prompts(self) -> Vec<Prompt> {
        let kinds: Vec<Kind> = Kind::all().collect();
        let mut prompts: Vec<Prompt> = match self {
            PromptFamily::Counting => kinds
                .iter()
                .flat_map(|&kind| {
                    (1..=MAX_OBJECTS).map(move |count| Prompt {
                        clauses: vec![Clause { kind, count }],
                    })
                })
                .collect(),
            PromptFamily::ColourBinding => kinds
                .iter()
                .enumerate()
                .flat_map(|(index, &first)| {
                    kinds[index + 1..]
                        .iter()
                        .filter(move |second| {
                            second.colour != first.colour && second.shape != first.shape
                        })
                        .map(move |&second| {
                            Prompt::of_kinds(&[first, second]).expect("two objects")
                        })
                })
                .collect(),
            PromptFamily::All => {
                // Multisets as non-decreasing index sequences of length 1 to 3.
                let mut all = Vec::new();
                let mut stack: Vec<Vec<usize>> = (0..kinds.len()).map(|i| vec![i]).collect();
                while let Some(indices) = stack.pop() {
                    let chosen: Vec<Kind> = indices.iter().map(|&i| kinds[i]).collect();
                    all.push(Prompt::of_kinds(&chosen).expect("1 to 3 objects"));
                    if indices.len() < MAX_OBJECTS {
                        let last = *indices.last().expect("never empty");
                        for next in last..kinds.len() {
                            let mut longer = indices.clone();
                            longer.push(next);
                            stack.push(longer);
                        }
                    }
                }
                all
            }
        };
        prompts.sort();
        prompts
    }
}

/// Prompts split into disjoint training and evaluation sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptSplit {
    /// The training prompts, sorted.
    pub train: Vec<Prompt>,
    /// The evaluation prompts, sorted; none of them is a training prompt.
    pub eval: Vec<Prompt>,
}

impl PromptSplit {
    /// Splits distinct prompts at random by `seed`: `round(eval_fraction · n)` of them (at
    /// least 1, at most n − 1) go to evaluation. The same prompts, fraction and seed give the
    /// same split. Fails for fewer than 2 prompts, a repeated prompt, or a fraction outside
    /// (0, 1).
    pub fn new(prompts: &[Prompt], eval_fraction: f64, seed: u64) -> Result<PromptSplit> {
        if !(eval_fraction > 0.0 && eval_fraction < 1.0) {
            return Err(Error::InvalidArgument {
                name: "eval_fraction".into(),
                value: eval_fraction.to_string(),
                expected: "a fraction strictly between 0 and 1".into(),
            });
        }
        let mut sorted = prompts.to_vec();
        sorted.sort();
        if let Some(pair) = sorted.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(Error::InvalidArgument {
                name: "prompts to split".into(),
                value: format!("{:?} twice", pair[0].to_string()),
                expected: "distinct prompts".into(),
            });
        }
        if sorted.len() < 2 {
            return Err(Error::InvalidArgument {
                name: "prompts to split".into(),
                value: sorted.len().to_string(),
                expected: "at least 2 prompts".into(),
            });
        }
        let count = sorted.len();
        let eval_count = ((eval_fraction * count as f64).round() as usize).clamp(1, count - 1);
        let eval_indices = Rng::seed_from(seed).distinct_below(count, eval_count);
        let (mut train, mut eval) = (Vec::new(), Vec::new());
        for (index, prompt) in sorted.into_iter().enumerate() {
            if eval_indices.binary_search(&index).is_ok() {
                eval.push(prompt);
            } else {
                train.push(prompt);
            }
        }
        Ok(PromptSplit { train, eval })
    }
}
