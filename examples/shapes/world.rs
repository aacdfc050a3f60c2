//! The world: scenes of one to three coloured shapes on a black background, rendered to
//! 32×32 RGB images.
//!
//! Each object is a circle, a square or a triangle, red, green or blue, inside a square box
//! of 8 to 12 pixels (a circle of that diameter, a square of that side, a triangle with that
//! base and height, apex up): large enough that a 4-connected component of the smallest
//! triangle still has a clear shape, small enough that three of the largest fit with room
//! to spare. Boxes keep [`GAP`] pixels between each other and [`BORDER`] pixels from the
//! edge, so objects never touch even after a slight blur. Edges are anti-aliased by 4×4
//! supersampling, as a generator's output would be soft rather than aliased.

use burn::prelude::*;
use flow_rl::{Error, Result, Rng};

/// The side of a rendered image, in pixels.
pub const IMAGE_SIZE: usize = 32;
/// The smallest object box side, in pixels.
pub const MIN_OBJECT_SIZE: usize = 8;
/// The largest object box side, in pixels.
pub const MAX_OBJECT_SIZE: usize = 12;
/// The least number of background pixels between two object boxes.
pub const GAP: usize = 2;
/// The least number of background pixels between an object box and the image's edge.
pub const BORDER: usize = 1;
/// The most objects a scene holds.
pub const MAX_OBJECTS: usize = 3;

/// Subsamples per pixel side when rendering (coverage of 16 points per pixel).
const SUPERSAMPLING: usize = 4;
/// Random placements tried before falling back to the fixed layout.
const PLACEMENT_TRIES: usize = 1000;

/// An object's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Shape {
    /// A disc filling its box.
    Circle,
    /// A square filling its box.
    Square,
    /// An isosceles triangle, apex at the top centre of its box, base along its bottom.
    Triangle,
}

impl Shape {
    /// Every shape, in the canonical order.
    pub const ALL: [Shape; 3] = [Shape::Circle, Shape::Square, Shape::Triangle];

    /// The singular noun: `circle`, `square`, `triangle`.
    pub fn noun(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
        }
    }

    /// The plural noun: `circles`, `squares`, `triangles`.
    pub fn plural(self) -> &'static str {
        match self {
            Shape::Circle => "circles",
            Shape::Square => "squares",
            Shape::Triangle => "triangles",
        }
    }

    /// The fraction of pixel `(row, column)` of a box of side `size` (box coordinates) that
    /// this shape covers, from 4×4 subsamples.
    pub fn coverage(self, size: usize, row: usize, column: usize) -> f32 {
        let step = 1.0 / SUPERSAMPLING as f32;
        let mut covered = 0usize;
        for sub_row in 0..SUPERSAMPLING {
            for sub_column in 0..SUPERSAMPLING {
                let point = (
                    column as f32 + (sub_column as f32 + 0.5) * step,
                    row as f32 + (sub_row as f32 + 0.5) * step,
                );
                covered += usize::from(self.contains(size as f32, point));
            }
        }
        covered as f32 / (SUPERSAMPLING * SUPERSAMPLING) as f32
    }

    /// Whether the point `(px, py)` (box coordinates, y down) lies in this shape drawn in a
    /// box of side `size`.
    fn contains(self, size: f32, (px, py): (f32, f32)) -> bool {
        let inside_box = px >= 0.0 && px < size && py >= 0.0 && py < size;
        match self {
            Shape::Square => inside_box,
            Shape::Circle => {
                let radius = size / 2.0;
                let (dx, dy) = (px - radius, py - radius);
                dx * dx + dy * dy <= radius * radius
            }
            // Half the width at depth d below the apex is d/2 (base = height = size).
            Shape::Triangle => inside_box && (px - size / 2.0).abs() <= py / 2.0,
        }
    }
}

/// An object's colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Colour {
    /// Pure red, RGB (1, 0, 0).
    Red,
    /// Pure green, RGB (0, 1, 0).
    Green,
    /// Pure blue, RGB (0, 0, 1).
    Blue,
}

impl Colour {
    /// Every colour, in the canonical order.
    pub const ALL: [Colour; 3] = [Colour::Red, Colour::Green, Colour::Blue];

    /// The adjective: `red`, `green`, `blue`.
    pub fn word(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Green => "green",
            Colour::Blue => "blue",
        }
    }

    /// The RGB channel this colour lights (0 red, 1 green, 2 blue).
    pub fn channel(self) -> usize {
        match self {
            Colour::Red => 0,
            Colour::Green => 1,
            Colour::Blue => 2,
        }
    }
}

/// What an object is, without where: a colour and a shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kind {
    /// The colour.
    pub colour: Colour,
    /// The shape.
    pub shape: Shape,
}

impl Kind {
    /// The nine kinds, colour-major in the canonical order.
    pub fn all() -> impl Iterator<Item = Kind> {
        Colour::ALL.into_iter().flat_map(|colour| {
            Shape::ALL
                .into_iter()
                .map(move |shape| Kind { colour, shape })
        })
    }
}

/// One placed object: its kind and its box (top-left corner and side, in pixels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Object {
    /// The colour and shape.
    pub kind: Kind,
    /// The box's left column.
    pub x: usize,
    /// The box's top row.
    pub y: usize,
    /// The box's side, `MIN_OBJECT_SIZE..=MAX_OBJECT_SIZE`.
    pub size: usize,
}

impl Object {
    /// Whether the two boxes are closer than [`GAP`] pixels (or overlap).
    pub fn too_close(&self, other: &Object) -> bool {
        let apart = |a0: usize, a_len: usize, b0: usize, b_len: usize| {
            a0 + a_len + GAP <= b0 || b0 + b_len + GAP <= a0
        };
        !(apart(self.x, self.size, other.x, other.size)
            || apart(self.y, self.size, other.y, other.size))
    }
}

/// A scene: 1 to [`MAX_OBJECTS`] objects, no two closer than [`GAP`] pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scene {
    /// The objects, in placement order.
    pub objects: Vec<Object>,
}

impl Scene {
    /// A random scene: 1 to 3 objects (uniformly many), each of a uniformly random kind and
    /// size, placed uniformly at random without crowding. The same `rng` state gives the
    /// same scene.
    pub fn sample(rng: &mut Rng) -> Scene {
        let count = 1 + rng.below(MAX_OBJECTS);
        let kinds: Vec<Kind> = (0..count)
            .map(|_| Kind {
                colour: Colour::ALL[rng.below(Colour::ALL.len())],
                shape: Shape::ALL[rng.below(Shape::ALL.len())],
            })
            .collect();
        Self::place(&kinds, rng).expect("at most MAX_OBJECTS kinds were drawn")
    }

    /// A scene holding exactly these objects (1 to 3 kinds, repeats allowed), at random
    /// sizes and places. Fails for an empty list or more than [`MAX_OBJECTS`].
    pub fn place(kinds: &[Kind], rng: &mut Rng) -> Result<Scene> {
        if kinds.is_empty() || kinds.len() > MAX_OBJECTS {
            return Err(Error::InvalidArgument {
                name: "objects in a scene".into(),
                value: kinds.len().to_string(),
                expected: format!("1 to {MAX_OBJECTS}"),
            });
        }
        let sizes = MAX_OBJECT_SIZE - MIN_OBJECT_SIZE + 1;
        for _ in 0..PLACEMENT_TRIES {
            let mut objects: Vec<Object> = Vec::with_capacity(kinds.len());
            for &kind in kinds {
                let size = MIN_OBJECT_SIZE + rng.below(sizes);
                let positions = IMAGE_SIZE - 2 * BORDER - size + 1;
                let object = Object {
                    kind,
                    x: BORDER + rng.below(positions),
                    y: BORDER + rng.below(positions),
                    size,
                };
                if objects.iter().any(|placed| placed.too_close(&object)) {
                    break;
                }
                objects.push(object);
            }
            if objects.len() == kinds.len() {
                return Ok(Scene { objects });
            }
        }
        // Practically unreachable (a random layout fits far more often than 1 in 1000), but
        // it keeps sampling total: three boxes of the largest size in an L.
        let far = BORDER + MAX_OBJECT_SIZE + 2 * GAP;
        let corners = [(BORDER, BORDER), (far, BORDER), (BORDER, far)];
        Ok(Scene {
            objects: kinds
                .iter()
                .zip(corners)
                .map(|(&kind, (x, y))| Object {
                    kind,
                    x,
                    y,
                    size: MAX_OBJECT_SIZE,
                })
                .collect(),
        })
    }

    /// The objects' kinds, in placement order.
    pub fn kinds(&self) -> Vec<Kind> {
        self.objects.iter().map(|object| object.kind).collect()
    }

    /// The scene drawn on black: each pixel is its objects' colour weighted by the fraction
    /// of its 4×4 subsamples they cover.
    pub fn render(&self) -> Image {
        let mut image = Image::black();
        for object in &self.objects {
            let channel = object.kind.colour.channel();
            for row in 0..object.size {
                for column in 0..object.size {
                    let pixel = (object.y + row) * IMAGE_SIZE + object.x + column;
                    image.pixels[pixel * 3 + channel] =
                        object.kind.shape.coverage(object.size, row, column);
                }
            }
        }
        image
    }
}

/// A 32×32 RGB image, values in `[0, 1]`, stored row-major with interleaved channels
/// (`[H, W, 3]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// `IMAGE_SIZE · IMAGE_SIZE · 3` values, `(row · IMAGE_SIZE + column) · 3 + channel`.
    pub pixels: Vec<f32>,
}

impl Image {
    /// An all-black image.
    pub fn black() -> Image {
        Image {
            pixels: vec![0.0; IMAGE_SIZE * IMAGE_SIZE * 3],
        }
    }

    /// The RGB value at `(row, column)`.
    pub fn rgb(&self, row: usize, column: usize) -> [f32; 3] {
        let start = (row * IMAGE_SIZE + column) * 3;
        [
            self.pixels[start],
            self.pixels[start + 1],
            self.pixels[start + 2],
        ]
    }

    /// The image with independent Gaussian noise of this std added to every value, clamped
    /// to `[0, 1]`.
    pub fn with_noise(&self, std: f32, rng: &mut Rng) -> Image {
        Image {
            pixels: self
                .pixels
                .iter()
                .map(|&value| (value + std * rng.normal() as f32).clamp(0.0, 1.0))
                .collect(),
        }
    }

    /// The image convolved with a 3×3 Gaussian kernel of std `sigma` pixels, each channel
    /// separately (see [`Image::convolved`]).
    pub fn blurred(&self, sigma: f32) -> Image {
        let side = (-1.0 / (2.0 * sigma * sigma)).exp();
        self.convolved([side, 1.0, side])
    }

    /// The image convolved with the separable 3×3 kernel `taps ⊗ taps` (taps for offsets
    /// −1, 0, +1), each channel separately; at the edges the kernel is renormalised over the
    /// pixels inside the image.
    pub fn convolved(&self, taps: [f32; 3]) -> Image {
        // Along rows (stride 3 values), then along columns (stride one row).
        let along_rows = self.pass(taps, 3);
        along_rows.pass(taps, IMAGE_SIZE * 3)
    }

    /// One 1-D pass of [`Image::convolved`] along the axis whose neighbours are `stride`
    /// values apart.
    fn pass(&self, taps: [f32; 3], stride: usize) -> Image {
        let mut out = Image::black();
        let line = IMAGE_SIZE * 3;
        for (index, value) in out.pixels.iter_mut().enumerate() {
            let position = if stride == 3 {
                (index % line) / 3
            } else {
                index / line
            };
            let (mut total, mut weight) = (taps[1] * self.pixels[index], taps[1]);
            if position > 0 {
                total += taps[0] * self.pixels[index - stride];
                weight += taps[0];
            }
            if position + 1 < IMAGE_SIZE {
                total += taps[2] * self.pixels[index + stride];
                weight += taps[2];
            }
            *value = total / weight;
        }
        out
    }

    /// The image as the MMDiT sees it: `[3, 32, 32]` channels first, values mapped from
    /// `[0, 1]` to `[-1, 1]`.
    pub fn to_tensor(&self, device: &Device) -> Tensor<3> {
        let mut planar = vec![0.0f32; self.pixels.len()];
        for (index, &value) in self.pixels.iter().enumerate() {
            let (pixel, channel) = (index / 3, index % 3);
            planar[channel * IMAGE_SIZE * IMAGE_SIZE + pixel] = 2.0 * value - 1.0;
        }
        Tensor::from_data(TensorData::new(planar, [3, IMAGE_SIZE, IMAGE_SIZE]), device)
    }

    /// A batch of images as `[B, 3, 32, 32]` in `[-1, 1]` (B ≥ 1).
    pub fn batch_to_tensor(images: &[Image], device: &Device) -> Result<Tensor<4>> {
        if images.is_empty() {
            return Err(Error::InvalidArgument {
                name: "images".into(),
                value: "an empty list".into(),
                expected: "at least one image".into(),
            });
        }
        let planes: Vec<Tensor<3>> = images.iter().map(|image| image.to_tensor(device)).collect();
        Ok(Tensor::stack(planes, 0))
    }

    /// Images back from a generator's `[B, 3, 32, 32]` output in `[-1, 1]` (values outside
    /// are clamped). Fails for another shape or a non-finite value.
    pub fn batch_from_tensor(pixels: Tensor<4>) -> Result<Vec<Image>> {
        let dims = pixels.dims();
        if dims[1..] != [3, IMAGE_SIZE, IMAGE_SIZE] {
            return Err(Error::ShapeMismatch {
                name: "pixels".into(),
                expected: format!("[B, 3, {IMAGE_SIZE}, {IMAGE_SIZE}]"),
                found: format!("{dims:?}"),
            });
        }
        let values: Vec<f32> = pixels
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|err| Error::TensorRead(format!("{err:?}")))?;
        if let Some(index) = values.iter().position(|value| !value.is_finite()) {
            return Err(Error::NonFinite {
                what: "pixel".into(),
                index,
                value: f64::from(values[index]),
            });
        }
        let plane = IMAGE_SIZE * IMAGE_SIZE;
        Ok(values
            .chunks(3 * plane)
            .map(|planar| {
                let mut image = Image::black();
                for pixel in 0..plane {
                    for channel in 0..3 {
                        image.pixels[pixel * 3 + channel] =
                            ((planar[channel * plane + pixel] + 1.0) / 2.0).clamp(0.0, 1.0);
                    }
                }
                image
            })
            .collect())
    }

    /// The image as 8-bit RGB, each pixel repeated `scale × scale` times.
    pub fn to_rgb8(&self, scale: u32) -> image::RgbImage {
        let side = IMAGE_SIZE as u32 * scale;
        image::RgbImage::from_fn(side, side, |x, y| {
            let [r, g, b] = self.rgb((y / scale) as usize, (x / scale) as usize);
            let byte = |value: f32| (value * 255.0).round() as u8;
            image::Rgb([byte(r), byte(g), byte(b)])
        })
    }
}
