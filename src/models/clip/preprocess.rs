//! CLIP's image preprocessing on 8-bit RGB images: the short side resized to 224 with PIL's
//! bicubic filter, a centre crop, then CLIP's mean and std.

use burn::config::Config;
use burn::prelude::*;
use image::RgbImage;

use crate::error::{Error, Result};

/// OpenAI CLIP's per-channel pixel mean (RGB, on `[0, 1]` pixels), which OpenCLIP and
/// transformers' `CLIPImageProcessor` use for every CLIP model here.
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// OpenAI CLIP's per-channel pixel std.
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// Bits after the binary point of PIL's fixed-point resampling weights (`32 - 8 - 2`).
const PRECISION_BITS: u32 = 22;
/// The bicubic filter's reach in input pixels at scale 1.
const BICUBIC_SUPPORT: f64 = 2.0;

/// transformers' `CLIPImageProcessor` (and OpenCLIP's validation transform) on 8-bit RGB
/// images: the short side resized to `size` with PIL's bicubic filter (the long side to
/// `floor(size · long / short)`), a centre crop of `crop_size` (offsets rounded down), then
/// `(pixel / 255 − mean) / std`.
///
/// The resize reproduces Pillow's `Image.resize(..., BICUBIC)` exactly (its fixed-point
/// weights and its rounding to 8 bits after the horizontal and after the vertical pass), so
/// the pixels equal those of transformers' PIL backend and of OpenCLIP; docs/rewards.md
/// gives the measured difference to transformers' default torchvision backend.
///
/// ```
/// use burn::prelude::*;
/// use flow_rl::models::clip::ClipImageProcessor;
///
/// let processor = ClipImageProcessor::new();
/// let images = vec![image::RgbImage::new(512, 512), image::RgbImage::new(320, 240)];
/// let pixels = processor.preprocess(&images, &Device::default())?;
/// assert_eq!(pixels.dims(), [2, 3, 224, 224]);
/// # Ok::<(), flow_rl::Error>(())
/// ```
#[derive(Config, Debug, PartialEq)]
pub struct ClipImageProcessor {
    /// The short side after resizing.
    #[config(default = 224)]
    pub size: usize,
    /// The side of the square centre crop; at most `size`.
    #[config(default = 224)]
    pub crop_size: usize,
    /// The per-channel mean subtracted from `[0, 1]` pixels.
    #[config(default = "CLIP_MEAN")]
    pub mean: [f32; 3],
    /// The per-channel std they are divided by.
    #[config(default = "CLIP_STD")]
    pub std: [f32; 3],
}

impl ClipImageProcessor {
    /// Pixels `[B, 3, crop_size, crop_size]` (f32) of `images`, on `device`.
    ///
    /// Fails on an empty batch, an empty image, a crop larger than the resized short side,
    /// or a std that is not positive.
    pub fn preprocess(&self, images: &[RgbImage], device: &Device) -> Result<Tensor<4>> {
        self.validate()?;
        if images.is_empty() {
            return Err(Error::invalid("images", "[]", "at least one image"));
        }
        let crop = self.crop_size;
        let mut values = Vec::with_capacity(images.len() * 3 * crop * crop);
        for (index, image) in images.iter().enumerate() {
            if image.width() == 0 || image.height() == 0 {
                return Err(Error::invalid(
                    "image size",
                    format!("{}×{} (image {index})", image.width(), image.height()),
                    "a non-empty image",
                ));
            }
            let cropped = self.resize_and_crop(image);
            self.normalise_into(&cropped, &mut values);
        }
        let data = TensorData::new(values, [images.len(), 3, crop, crop]);
        Ok(Tensor::from_data(data, device))
    }

    /// The image resized (short side to `size`) and centre-cropped, still 8-bit.
    pub fn resize_and_crop(&self, image: &RgbImage) -> RgbImage {
        let (width, height) = (image.width() as usize, image.height() as usize);
        let [out_width, out_height] = self.resized_size(width, height);
        let resized = resize_bicubic(image, out_width, out_height);
        let left = (out_width - self.crop_size) / 2;
        let top = (out_height - self.crop_size) / 2;
        image::imageops::crop_imm(
            &resized,
            left as u32,
            top as u32,
            self.crop_size as u32,
            self.crop_size as u32,
        )
        .to_image()
    }

    /// `[width, height]` with the short side `size`, as transformers'
    /// `get_resize_output_image_size(default_to_square=False)` rounds (down).
    fn resized_size(&self, width: usize, height: usize) -> [usize; 2] {
        if width <= height {
            [self.size, self.size * height / width]
        } else {
            [self.size * width / height, self.size]
        }
    }

    /// Appends the image's channels, plane by plane, as `(pixel / 255 − mean) / std`.
    fn normalise_into(&self, image: &RgbImage, values: &mut Vec<f32>) {
        for channel in 0..3 {
            let (mean, std) = (self.mean[channel], self.std[channel]);
            values.extend(
                image
                    .pixels()
                    .map(|pixel| (f32::from(pixel[channel]) / 255.0 - mean) / std),
            );
        }
    }

    fn validate(&self) -> Result<()> {
        if self.crop_size == 0 || self.crop_size > self.size {
            return Err(Error::invalid(
                "crop_size",
                self.crop_size,
                format!("1 to size = {}", self.size),
            ));
        }
        if let Some(std) = self.std.iter().find(|std| !std.is_finite() || **std <= 0.0) {
            return Err(Error::invalid("std", std, "positive values"));
        }
        Ok(())
    }
}

/// Pillow's bicubic resize (`a = −0.5`, antialiased when shrinking): a horizontal pass then a
/// vertical one, each rounding to 8 bits, with fixed-point weights of [`PRECISION_BITS`].
fn resize_bicubic(image: &RgbImage, out_width: usize, out_height: usize) -> RgbImage {
    let (width, height) = (image.width() as usize, image.height() as usize);
    let mut pixels: Vec<[u8; 3]> = image.pixels().map(|pixel| pixel.0).collect();
    let mut current_width = width;
    if out_width != width {
        let weights = ResampleWeights::new(width, out_width);
        pixels = (0..height)
            .flat_map(|row| {
                let line = &pixels[row * width..(row + 1) * width];
                (0..out_width)
                    .map(|x| weights.apply(x, |i| line[i]))
                    .collect::<Vec<_>>()
            })
            .collect();
        current_width = out_width;
    }
    if out_height != height {
        let weights = ResampleWeights::new(height, out_height);
        let source = pixels;
        pixels = (0..out_height)
            .flat_map(|y| {
                let (source, weights) = (&source, &weights);
                (0..current_width)
                    .map(move |x| weights.apply(y, |i| source[i * current_width + x]))
                    .collect::<Vec<_>>()
            })
            .collect();
    }
    RgbImage::from_fn(out_width as u32, out_height as u32, |x, y| {
        image::Rgb(pixels[y as usize * out_width + x as usize])
    })
}

/// The fixed-point weights of one resampling pass, per output position: the first input
/// index and the weights from there (Pillow's `precompute_coeffs` and
/// `normalize_coeffs_8bpc`).
struct ResampleWeights {
    /// `(first input index, weights)` per output position.
    taps: Vec<(usize, Vec<i64>)>,
}

impl ResampleWeights {
    fn new(in_size: usize, out_size: usize) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filter_scale = scale.max(1.0);
        let support = BICUBIC_SUPPORT * filter_scale;
        let taps = (0..out_size)
            .map(|out| {
                let center = (out as f64 + 0.5) * scale;
                // Pillow truncates toward zero after adding 0.5; both bounds are ≥ 0 here
                // once clamped, so `floor` of the clamped value is the same.
                let first = ((center - support + 0.5).max(0.0)) as usize;
                let last = ((center + support + 0.5) as usize).min(in_size);
                let raw: Vec<f64> = (first..last)
                    .map(|i| bicubic((i as f64 - center + 0.5) / filter_scale))
                    .collect();
                let total: f64 = raw.iter().sum();
                let fixed = raw
                    .iter()
                    .map(|weight| {
                        let weight = if total != 0.0 {
                            weight / total
                        } else {
                            *weight
                        };
                        let scaled = weight * f64::from(1u32 << PRECISION_BITS);
                        // Pillow rounds half away from zero, then truncates.
                        (if scaled < 0.0 {
                            scaled - 0.5
                        } else {
                            scaled + 0.5
                        }) as i64
                    })
                    .collect();
                (first, fixed)
            })
            .collect();
        Self { taps }
    }

    /// The output pixel at `out`, reading input pixel `i` with `pixel(i)`.
    fn apply(&self, out: usize, pixel: impl Fn(usize) -> [u8; 3]) -> [u8; 3] {
        let (first, weights) = &self.taps[out];
        let mut sums = [1i64 << (PRECISION_BITS - 1); 3];
        for (offset, weight) in weights.iter().enumerate() {
            let value = pixel(first + offset);
            for (sum, channel) in sums.iter_mut().zip(value) {
                *sum += i64::from(channel) * weight;
            }
        }
        sums.map(|sum| (sum >> PRECISION_BITS).clamp(0, 255) as u8)
    }
}

/// Keys's cubic convolution kernel with `a = −0.5`, as Pillow's `bicubic_filter`.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bicubic_weights_of_each_output_sum_to_one_in_fixed_point() {
        for (input, output) in [(512, 224), (224, 224), (32, 224), (300, 7)] {
            let weights = ResampleWeights::new(input, output);
            for (first, taps) in &weights.taps {
                let sum: i64 = taps.iter().sum();
                assert!(
                    (sum - (1 << PRECISION_BITS)).abs() <= taps.len() as i64,
                    "{input} → {output}: {sum}"
                );
                assert!(first + taps.len() <= input);
            }
        }
    }

    #[test]
    fn a_flat_image_stays_flat_and_an_unchanged_size_is_the_identity() {
        let flat = RgbImage::from_pixel(300, 200, image::Rgb([10, 128, 250]));
        let resized = resize_bicubic(&flat, 336, 224);
        assert!(resized.pixels().all(|pixel| pixel.0 == [10, 128, 250]));
        let noise = RgbImage::from_fn(224, 224, |x, y| {
            image::Rgb([(x * 7 + y * 13) as u8, (x * y) as u8, (x ^ y) as u8])
        });
        assert_eq!(resize_bicubic(&noise, 224, 224), noise);
    }

    #[test]
    fn bad_settings_and_inputs_are_named() {
        let device = Device::default();
        let image = vec![RgbImage::new(8, 8)];
        let error = ClipImageProcessor::new()
            .with_crop_size(300)
            .preprocess(&image, &device)
            .unwrap_err();
        assert!(error.to_string().contains("crop_size"), "{error}");
        let error = ClipImageProcessor::new()
            .preprocess(&[], &device)
            .unwrap_err();
        assert!(error.to_string().contains("at least one image"), "{error}");
        let error = ClipImageProcessor::new()
            .preprocess(&[RgbImage::new(0, 4)], &device)
            .unwrap_err();
        assert!(error.to_string().contains("image 0"), "{error}");
    }
}
