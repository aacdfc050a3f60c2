//! The CLIP vision transformer and its outputs.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::DType;

use super::attention::AttentionMask;
use super::block::{ClipEncoderLayer, layer_norm};
use super::vision_config::ClipVisionConfig;
use crate::error::{Error, Result};
use crate::models::mmdit::layers::project;

/// What [`ClipVisionModel::forward`] returns, in f32 whatever the weights' dtype.
#[derive(Debug, Clone)]
pub struct ClipVisionOutput {
    /// The class token after the last layer and `post_layernorm` `[B, width]`
    /// (transformers' `pooler_output`).
    pub pooled: Tensor<2>,
    /// `pooled` through `visual_projection` `[B, projection]` (transformers' `image_embeds`,
    /// OpenCLIP's `encode_image`), not normalised.
    pub projected: Tensor<2>,
}

/// A CLIP vision transformer (transformers' `CLIPVisionModelWithProjection`).
///
/// ```
/// use burn::prelude::*;
/// use flow_rl::models::clip::{ClipActivation, ClipVisionConfig};
///
/// let device = Device::default();
/// let config = ClipVisionConfig::new(8, 16, 2, 2, 32, ClipActivation::Gelu, 12).with_image_size(32);
/// let model = config.init(&device)?;
/// let pixels = Tensor::<4>::zeros([2, 3, 32, 32], &device);
/// let output = model.forward(pixels)?;
/// assert_eq!(output.pooled.dims(), [2, 16]);
/// assert_eq!(output.projected.dims(), [2, 12]);
/// # Ok::<(), flow_rl::Error>(())
/// ```
#[derive(Module, Debug)]
pub struct ClipVisionModel {
    /// The patch embedding `[width, channels, patch, patch]`, a stride-`patch` convolution
    /// without bias.
    pub patch_embedding: Conv2d,
    /// The class token `[width]`.
    pub class_embedding: Param<Tensor<1>>,
    /// Positional embeddings `[1 + grid², width]`, the class token's first.
    pub position_embedding: Embedding,
    /// The LayerNorm before the first layer (transformers' spelling).
    pub pre_layrnorm: LayerNorm,
    /// The encoder layers.
    pub layers: Vec<ClipEncoderLayer>,
    /// The LayerNorm on the class token after the last layer.
    pub post_layernorm: LayerNorm,
    /// `width → projection`, without bias.
    pub visual_projection: Linear,
    /// The architecture.
    #[module(skip)]
    config: ClipVisionConfig,
}

impl ClipVisionModel {
    pub(crate) fn new(config: ClipVisionConfig, device: &Device) -> Self {
        let patch = config.patch_size;
        let norm = || {
            LayerNormConfig::new(config.width)
                .with_epsilon(config.layer_norm_eps)
                .init(device)
        };
        let layers = (0..config.layers)
            .map(|_| {
                ClipEncoderLayer::new(
                    config.width,
                    config.heads,
                    config.mlp_width,
                    config.activation,
                    config.layer_norm_eps,
                    device,
                )
            })
            .collect();
        Self {
            patch_embedding: Conv2dConfig::new([config.channels, config.width], [patch, patch])
                .with_stride([patch, patch])
                .with_bias(false)
                .init(device),
            class_embedding: Param::from_tensor(Tensor::random(
                [config.width],
                burn::tensor::Distribution::Normal(0.0, 0.02),
                device,
            )),
            position_embedding: EmbeddingConfig::new(config.positions(), config.width).init(device),
            pre_layrnorm: norm(),
            layers,
            post_layernorm: norm(),
            visual_projection: LinearConfig::new(config.width, config.projection)
                .with_bias(false)
                .init(device),
            config,
        }
    }

    /// The architecture.
    pub fn config(&self) -> &ClipVisionConfig {
        &self.config
    }

    /// Encodes preprocessed pixels `[B, channels, image_size, image_size]` (CLIP-normalised,
    /// as `CLIPImageProcessor` returns them) into the pooled class token and its projection.
    ///
    /// Fails with [`Error::ShapeMismatch`] for an empty batch, a channel count other than
    /// `channels` or a side other than `image_size`.
    pub fn forward(&self, pixels: Tensor<4>) -> Result<ClipVisionOutput> {
        let ClipVisionConfig {
            image_size,
            channels,
            width,
            ..
        } = self.config;
        let dims = pixels.dims();
        let [batch, found_channels, height, found_width] = dims;
        if batch == 0 {
            return Err(Error::shape("pixels", "[B, C, H, W] with B >= 1", dims));
        }
        if found_channels != channels {
            return Err(Error::shape(
                "pixels",
                format!(
                    "{channels} channels (RGB, channels first: [B, {channels}, {image_size}, \
                     {image_size}]), not {found_channels}"
                ),
                dims,
            ));
        }
        if height != image_size || found_width != image_size {
            return Err(Error::shape(
                "pixels",
                format!(
                    "images of {image_size} × {image_size} pixels ([B, {channels}, \
                     {image_size}, {image_size}]), not {height} × {found_width}: resize and \
                     crop them first"
                ),
                dims,
            ));
        }

        let grid = self.config.grid();
        // The embeddings are summed in f32, the residual stream's dtype.
        let patches = self.embed_patches(pixels, batch, grid).cast(DType::F32);
        let class = self
            .class_embedding
            .val()
            .cast(DType::F32)
            .reshape([1, 1, width])
            .expand([batch, 1, width]);
        let tokens = Tensor::cat(vec![class, patches], 1);
        let positions = self.position_embedding.weight.val().cast(DType::F32);
        let embedded = tokens + positions.unsqueeze::<3>();
        let mut hidden = layer_norm(&self.pre_layrnorm, embedded, self.config.layer_norm_eps);
        for layer in &self.layers {
            hidden = layer.forward(hidden, AttentionMask::Bidirectional);
        }
        let class_token = hidden.narrow(1, 0, 1);
        let pooled = layer_norm(
            &self.post_layernorm,
            class_token,
            self.config.layer_norm_eps,
        )
        .reshape([batch, width]);
        let projected = project(&self.visual_projection, pooled.clone());
        Ok(ClipVisionOutput { pooled, projected })
    }

    /// `[B, C, S, S] → [B, grid², width]` in the weights' dtype. A convolution whose stride is
    /// its kernel is one matrix product over the flattened, non-overlapping patches; written
    /// so, it runs as a single GEMM in any dtype.
    fn embed_patches(&self, pixels: Tensor<4>, batch: usize, grid: usize) -> Tensor<3> {
        let patch = self.config.patch_size;
        let channels = self.config.channels;
        let weight = self.patch_embedding.weight.val();
        let dtype = weight.dtype();
        let features = channels * patch * patch;
        let patches = pixels
            .cast(dtype)
            .reshape([batch, channels, grid, patch, grid, patch])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([batch, grid * grid, features]);
        let kernel = weight.reshape([self.config.width, features]).transpose();
        burn::tensor::module::linear(patches, kernel, None)
    }
}

impl ClipVisionConfig {
    /// A model with this architecture and freshly initialised f32 weights (load real ones
    /// with [`ClipModelWeights`](super::ClipModelWeights)).
    pub fn init(&self, device: &Device) -> Result<ClipVisionModel> {
        self.validate()?;
        Ok(ClipVisionModel::new(self.clone(), device))
    }
}
