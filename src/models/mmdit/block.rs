//! The joint transformer block: an image stream and a context stream with their own
//! weights, adaLN modulation, and attention over both streams' tokens.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;

use super::attention::{AttentionProjections, joint_attention};
use super::config::MmditConfig;
use super::layers::{Mlp, gate, layer_norm, modulate, modulation};

/// One stream's half of a joint block.
///
/// The modulation yields, in order, `shift, scale, gate` of the attention and `shift, scale,
/// gate` of the MLP (6 chunks); with MMDiT-X's second self-attention, `shift, scale, gate` of
/// that attention follow (9 chunks). The last block's context side yields only `shift, scale`
/// and has neither attention output nor MLP.
#[derive(Module, Debug)]
pub struct StreamBlock {
    /// adaLN: `Linear(SiLU(c))`, `hidden → chunks·hidden`.
    pub modulation: Linear,
    /// The stream's part of the joint attention.
    pub attention: AttentionProjections,
    /// MMDiT-X's image-only self-attention (SD3.5-medium's first 13 blocks).
    pub self_attention: Option<AttentionProjections>,
    /// The feed-forward network; absent on the last block's context side.
    pub mlp: Option<Mlp>,
}

impl StreamBlock {
    fn new(config: &MmditConfig, pre_only: bool, dual: bool, device: &Device) -> Self {
        let hidden = config.hidden();
        let chunks = match (pre_only, dual) {
            (true, _) => 2,
            (false, false) => 6,
            (false, true) => 9,
        };
        let attention = |with_output| {
            AttentionProjections::new(
                config.heads,
                config.head_dim,
                config.qk_norm,
                with_output,
                device,
            )
        };
        Self {
            modulation: LinearConfig::new(hidden, chunks * hidden).init(device),
            attention: attention(!pre_only),
            self_attention: dual.then(|| attention(true)),
            mlp: (!pre_only).then(|| Mlp::new(hidden, config.mlp_ratio, device)),
        }
    }

    fn chunks(&self) -> usize {
        match (&self.mlp, &self.self_attention) {
            (None, _) => 2,
            (Some(_), None) => 6,
            (Some(_), Some(_)) => 9,
        }
    }

    /// The rest of the block after attention: gated residuals of the attention output, the
    /// second self-attention and the MLP.
    fn finish(
        &self,
        tokens: Tensor<3>,
        normed: Tensor<3>,
        attended: Tensor<3>,
        chunks: &[Tensor<2>],
    ) -> Tensor<3> {
        let mut tokens = tokens + gate(self.attention.project_output(attended), &chunks[2]);
        if let Some(self_attention) = &self.self_attention {
            let input = modulate(normed, chunks[6].clone(), chunks[7].clone());
            tokens = tokens + gate(self_attention.self_attention(input), &chunks[8]);
        }
        let Some(mlp) = &self.mlp else {
            return tokens;
        };
        let input = modulate(
            layer_norm(tokens.clone()),
            chunks[3].clone(),
            chunks[4].clone(),
        );
        tokens + gate(mlp.forward(input), &chunks[5])
    }
}

/// A joint block: the image stream `[B, T, hidden]` and the context stream `[B, L, hidden]`
/// each modulated by the conditioning vector `[B, hidden]`, attending jointly.
#[derive(Module, Debug)]
pub struct JointBlock {
    /// The context (text-token) stream.
    pub context: StreamBlock,
    /// The image (latent-patch) stream.
    pub image: StreamBlock,
}

impl JointBlock {
    pub(crate) fn new(config: &MmditConfig, index: usize, device: &Device) -> Self {
        let last = index + 1 == config.depth;
        Self {
            context: StreamBlock::new(config, last, false, device),
            image: StreamBlock::new(config, false, config.is_dual(index), device),
        }
    }

    /// Whether the context stream ends here (the model's last block).
    pub fn is_last(&self) -> bool {
        self.context.mlp.is_none()
    }

    /// Updated `(context, image)` tokens; the context is `None` after the last block.
    pub(crate) fn forward(
        &self,
        context: Tensor<3>,
        image: Tensor<3>,
        conditioning: &Tensor<2>,
    ) -> (Option<Tensor<3>>, Tensor<3>) {
        let image_chunks = modulation(&self.image.modulation, conditioning, self.image.chunks());
        let image_normed = layer_norm(image.clone());
        let image_input = modulate(
            image_normed.clone(),
            image_chunks[0].clone(),
            image_chunks[1].clone(),
        );
        let context_chunks = modulation(
            &self.context.modulation,
            conditioning,
            self.context.chunks(),
        );
        let context_normed = layer_norm(context.clone());
        let context_input = modulate(
            context_normed.clone(),
            context_chunks[0].clone(),
            context_chunks[1].clone(),
        );
        let [context_attended, image_attended] = joint_attention(
            self.context.attention.qkv(context_input),
            self.image.attention.qkv(image_input),
        );
        let image = self
            .image
            .finish(image, image_normed, image_attended, &image_chunks);
        let context = (!self.is_last()).then(|| {
            self.context
                .finish(context, context_normed, context_attended, &context_chunks)
        });
        (context, image)
    }
}
