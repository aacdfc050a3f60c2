//! The MMDiT module, its forward pass, its input checks, and its [`FlowPolicy`] impl.

use burn::module::{Module, ModuleMapper, Param};
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::{DType, FloatDType};

use super::block::JointBlock;
use super::condition::MmditCondition;
use super::config::MmditConfig;
use super::embed::{FinalLayer, PatchEmbed, timestep_features};
use super::layers::{EmbedderMlp, project};
use super::lora::LoraState;
use crate::error::{Error, Result};
use crate::policy::FlowPolicy;

/// An SD3-family MMDiT: latents `[B, C, H, W]`, timesteps `[B]` (`1000·σ`), context tokens
/// `[B, L, context_dim]` and pooled text `[B, pooled_dim]` → velocity `[B, C_out, H, W]`.
///
/// Built by [`MmditConfig::init`]; loads official or diffusers weights through
/// [`MmditCheckpoint`](super::MmditCheckpoint). The weights may be bf16 (they are kept as
/// stored unless a cast is asked for): activations then run in bf16, with LayerNorm, RMSNorm
/// and the timestep features in f32, and every output is returned in f32.
#[derive(Module, Debug)]
pub struct Mmdit {
    /// Patchify and positional embedding.
    pub patch_embed: PatchEmbed,
    /// The timestep's sinusoidal features → hidden.
    pub time_embed: EmbedderMlp,
    /// The pooled text embedding → hidden.
    pub pooled_embed: EmbedderMlp,
    /// Context tokens → hidden.
    pub context_embed: Linear,
    /// The joint blocks.
    pub blocks: Vec<JointBlock>,
    /// Final adaLN and projection to patches.
    pub final_layer: FinalLayer,
    /// The architecture.
    #[module(skip)]
    config: MmditConfig,
    /// The latent `(height, width)` a flattened policy input unflattens to; `None` means
    /// square.
    #[module(skip)]
    latent_size: Option<[usize; 2]>,
    /// The LoRA adapters attached, if any.
    #[module(skip)]
    pub(crate) lora: Option<LoraState>,
}

impl MmditConfig {
    /// Builds the model on `device`. Parameters are initialised lazily, so building the
    /// full-size presets before loading weights costs no memory for random values.
    pub fn init(&self, device: &Device) -> Result<Mmdit> {
        self.validate()?;
        Ok(Mmdit::new(self, device))
    }
}

impl Mmdit {
    fn new(config: &MmditConfig, device: &Device) -> Self {
        let hidden = config.hidden();
        let patch = config.patch_size;
        Self {
            patch_embed: PatchEmbed::new(
                config.in_channels,
                hidden,
                patch,
                config.pos_embed_max_size,
                device,
            ),
            time_embed: EmbedderMlp::new(config.timestep_channels, hidden, device),
            pooled_embed: EmbedderMlp::new(config.pooled_dim, hidden, device),
            context_embed: LinearConfig::new(config.context_dim, hidden).init(device),
            blocks: (0..config.depth)
                .map(|index| JointBlock::new(config, index, device))
                .collect(),
            final_layer: FinalLayer::new(hidden, patch * patch * config.out_channels, device),
            config: config.clone(),
            latent_size: None,
            lora: None,
        }
    }

    /// The architecture.
    pub fn config(&self) -> &MmditConfig {
        &self.config
    }

    /// Sets the latent `(height, width)` that the [`FlowPolicy`] interface's flattened
    /// latents `[B, C·H·W]` unflatten to. Without it, latents must be square.
    pub fn with_latent_size(mut self, height: usize, width: usize) -> Self {
        self.latent_size = Some([height, width]);
        self
    }

    /// The model with every parameter (LoRA factors included) cast to `dtype`, e.g. bf16
    /// for a model built with random weights. Activations follow the weights' dtype. This
    /// initialises lazily built parameters; to load weights in another dtype, pass the cast
    /// to [`MmditCheckpoint::load_into`](super::MmditCheckpoint::load_into) instead.
    pub fn with_dtype(self, dtype: FloatDType) -> Self {
        self.map(&mut CastFloats { dtype })
    }

    /// The dtype activations run in: that of the (never adapted) patch convolution.
    pub fn activation_dtype(&self) -> DType {
        self.patch_embed.proj.weight.val().dtype()
    }

    /// The velocity `[B, C_out, H, W]` (f32) for latents `[B, C_in, H, W]`, timesteps `[B]`
    /// (`1000·σ`), context `[B, L, context_dim]` and pooled embeddings `[B, pooled_dim]`.
    ///
    /// Fails with [`Error::ShapeMismatch`] when a shape disagrees with the configuration, a
    /// spatial size is not a multiple of the patch size, or the latent is larger than the
    /// positional table.
    pub fn forward(
        &self,
        latents: Tensor<4>,
        timestep: Tensor<1>,
        context: Tensor<3>,
        pooled: Tensor<2>,
    ) -> Result<Tensor<4>> {
        self.check_latents(latents.dims())?;
        let batch = latents.dims()[0];
        if timestep.dims() != [batch] {
            return Err(Error::shape(
                "timestep",
                format!("[{batch}] (one per latent)"),
                timestep.dims(),
            ));
        }
        self.check_condition(batch, &context, &pooled)?;
        Ok(self.forward_checked(latents, timestep, context, pooled))
    }

    fn forward_checked(
        &self,
        latents: Tensor<4>,
        timestep: Tensor<1>,
        context: Tensor<3>,
        pooled: Tensor<2>,
    ) -> Tensor<4> {
        let [batch, _, height, width] = latents.dims();
        let dtype = self.activation_dtype();
        let patch = self.config.patch_size;
        let mut image = self.patch_embed.forward(latents, dtype);
        let conditioning = self
            .time_embed
            .forward(timestep_features(timestep, self.config.timestep_channels).cast(dtype))
            + self.pooled_embed.forward(pooled.cast(dtype));
        let mut context = Some(project(&self.context_embed, context.cast(dtype)));
        for block in &self.blocks {
            let tokens = context
                .take()
                .expect("only the last block ends the context stream");
            (context, image) = block.forward(tokens, image, &conditioning);
        }
        let patches = self.final_layer.forward(image, &conditioning);
        let channels = self.config.out_channels;
        let (rows, columns) = (height / patch, width / patch);
        patches
            .reshape([batch, rows, columns, patch, patch, channels])
            .permute([0, 5, 1, 3, 2, 4])
            .reshape([batch, channels, height, width])
            .cast(DType::F32)
    }

    fn check_latents(&self, shape: [usize; 4]) -> Result<()> {
        let config = &self.config;
        let [_, channels, height, width] = shape;
        let patch = config.patch_size;
        let limit = config.pos_embed_max_size * patch;
        if channels != config.in_channels
            || height == 0
            || width == 0
            || !height.is_multiple_of(patch)
            || !width.is_multiple_of(patch)
            || height > limit
            || width > limit
        {
            return Err(Error::shape(
                "latents",
                format!(
                    "[B, {}, H, W] with H and W positive multiples of the patch size {patch} \
                     and at most {limit} (the {}² positional table × patch {patch})",
                    config.in_channels, config.pos_embed_max_size
                ),
                shape,
            ));
        }
        Ok(())
    }

    fn check_condition(&self, batch: usize, context: &Tensor<3>, pooled: &Tensor<2>) -> Result<()> {
        let [context_batch, tokens, width] = context.dims();
        if context_batch != batch || tokens == 0 || width != self.config.context_dim {
            return Err(Error::shape(
                "context",
                format!(
                    "[{batch}, L, {}] (one row of L ≥ 1 tokens per latent)",
                    self.config.context_dim
                ),
                context.dims(),
            ));
        }
        if pooled.dims() != [batch, self.config.pooled_dim] {
            return Err(Error::shape(
                "pooled",
                format!("[{batch}, {}] (one per latent)", self.config.pooled_dim),
                pooled.dims(),
            ));
        }
        Ok(())
    }

    /// The `[height, width]` of flattened latents of `dims` values per sample.
    fn latent_size_of(&self, dims: usize) -> Result<[usize; 2]> {
        let channels = self.config.in_channels;
        let size = match self.latent_size {
            Some(size) => Some(size).filter(|[h, w]| h * w * channels == dims),
            None => {
                let area = dims / channels;
                let side = (area as f64).sqrt().round() as usize;
                (side * side * channels == dims).then_some([side, side])
            }
        };
        size.ok_or_else(|| {
            let expected = match self.latent_size {
                Some([h, w]) => format!("{} = {channels}·{h}·{w} (C·H·W)", channels * h * w),
                None => format!(
                    "{channels}·S² for a square latent of side S; set \
                     Mmdit::with_latent_size for other shapes"
                ),
            };
            Error::shape("flattened latents", expected, [dims])
        })
    }
}

impl FlowPolicy for Mmdit {
    type Condition = MmditCondition;

    fn velocity(
        &self,
        latents: Tensor<2>,
        sigma: Tensor<1>,
        condition: &Self::Condition,
    ) -> Tensor<2> {
        let [batch, dims] = latents.dims();
        let [height, width] = self
            .latent_size_of(dims)
            .expect("checked by validate_input");
        let latents = latents.reshape([batch, self.config.in_channels, height, width]);
        self.forward_checked(
            latents,
            sigma.mul_scalar(1000.0),
            condition.context.clone(),
            condition.pooled.clone(),
        )
        .reshape([batch, dims])
    }

    fn validate_input(&self, latents: [usize; 2], condition: &Self::Condition) -> Result<()> {
        let [batch, dims] = latents;
        let [height, width] = self.latent_size_of(dims)?;
        self.check_latents([batch, self.config.in_channels, height, width])?;
        if self.config.in_channels != self.config.out_channels {
            return Err(Error::invalid(
                "out_channels",
                self.config.out_channels,
                format!(
                    "in_channels = {} for a velocity of the latents' shape",
                    self.config.in_channels
                ),
            ));
        }
        self.check_condition(batch, &condition.context, &condition.pooled)
    }
}

/// Casts every float parameter to one dtype.
struct CastFloats {
    dtype: FloatDType,
}

impl ModuleMapper for CastFloats {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let dtype = self.dtype;
        param.map(|tensor| tensor.cast(dtype))
    }
}
