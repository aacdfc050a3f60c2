//! The joint transformer block: an image stream and a context stream with their own
//! weights, adaLN modulation, and attention over both streams' tokens.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;

use super::attention::{AttentionProjections, joint_attention};
use super::config::MmditConfig;
use super::layers::{Mlp, gate, modulation};
use super::surrogate::{NormalizedTokens, layer_norm};

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

    /// The stream's modulation vectors for the conditioning `[B, hidden]`.
    fn modulation(&self, conditioning: &Tensor<2>) -> Modulation {
        let mut chunks = modulation(&self.modulation, conditioning, self.chunks()).into_iter();
        let mut next = || chunks.next().expect("one chunk per modulation vector");
        let (shift_msa, scale_msa) = (next(), next());
        let residual = self.mlp.as_ref().map(|_| ResidualModulation {
            gate_msa: next(),
            shift_mlp: next(),
            scale_mlp: next(),
            gate_mlp: next(),
            second_attention: self
                .self_attention
                .as_ref()
                .map(|_| SecondAttentionModulation {
                    shift_msa2: next(),
                    scale_msa2: next(),
                    gate_msa2: next(),
                }),
        });
        Modulation {
            shift_msa,
            scale_msa,
            residual,
        }
    }

    /// The rest of the block after attention: gated residuals of the attention output, the
    /// second self-attention and the MLP.
    fn finish(
        &self,
        tokens: Tensor<3>,
        normed: NormalizedTokens,
        attended: Tensor<3>,
        modulation: ResidualModulation,
    ) -> Tensor<3> {
        let ResidualModulation {
            gate_msa,
            shift_mlp,
            scale_mlp,
            gate_mlp,
            second_attention,
        } = modulation;
        let mut tokens = tokens + gate(self.attention.project_output(attended), &gate_msa);
        if let (Some(self_attention), Some(second)) = (&self.self_attention, second_attention) {
            let input = normed.modulate(second.shift_msa2, second.scale_msa2);
            tokens = tokens + gate(self_attention.self_attention(input), &second.gate_msa2);
        }
        let Some(mlp) = &self.mlp else {
            return tokens;
        };
        let input = layer_norm(tokens.clone()).modulate(shift_mlp, scale_mlp);
        tokens + gate(mlp.forward(input), &gate_mlp)
    }
}

/// One stream's adaLN modulation vectors, each `[B, hidden]`, named as in SD3 (`msa`: the
/// joint attention, `mlp`: the feed-forward network, `msa2`: MMDiT-X's second attention).
struct Modulation {
    /// Shift of the attention input.
    shift_msa: Tensor<2>,
    /// Scale of the attention input (applied as `1 + scale`).
    scale_msa: Tensor<2>,
    /// Everything after the attention; absent on the last block's context side.
    residual: Option<ResidualModulation>,
}

/// The modulation of a stream's residual branches after the joint attention.
struct ResidualModulation {
    /// Gate of the attention output's residual.
    gate_msa: Tensor<2>,
    /// Shift of the MLP input.
    shift_mlp: Tensor<2>,
    /// Scale of the MLP input.
    scale_mlp: Tensor<2>,
    /// Gate of the MLP output's residual.
    gate_mlp: Tensor<2>,
    /// MMDiT-X's second self-attention, on image streams that have one.
    second_attention: Option<SecondAttentionModulation>,
}

/// The modulation of MMDiT-X's image-only second self-attention.
struct SecondAttentionModulation {
    /// Shift of its input.
    shift_msa2: Tensor<2>,
    /// Scale of its input.
    scale_msa2: Tensor<2>,
    /// Gate of its output's residual.
    gate_msa2: Tensor<2>,
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
        let image_modulation = self.image.modulation(conditioning);
        let image_normed = layer_norm(image.clone());
        let image_input =
            image_normed.modulate(image_modulation.shift_msa, image_modulation.scale_msa);
        let context_modulation = self.context.modulation(conditioning);
        let context_normed = layer_norm(context.clone());
        let context_input =
            context_normed.modulate(context_modulation.shift_msa, context_modulation.scale_msa);
        let [context_attended, image_attended] = joint_attention(
            self.context.attention.qkv(context_input),
            self.image.attention.qkv(image_input),
        );
        let image_residual = image_modulation
            .residual
            .expect("the image stream always continues after the attention");
        let image = self
            .image
            .finish(image, image_normed, image_attended, image_residual);
        let context = context_modulation.residual.map(|residual| {
            self.context
                .finish(context, context_normed, context_attended, residual)
        });
        (context, image)
    }
}
