//! The T5 v1.1 encoder's architecture.

use burn::prelude::*;

use super::T5Encoder;
use crate::error::{Error, Result};

/// The architecture of a T5 v1.1 encoder (gated-GELU feed-forward, untied RMS norms, relative
/// position buckets), as `transformers`' `T5Config` names its fields.
///
/// [`T5Config::xxl`] is SD3.5's third text encoder; [`T5Weights::infer_config`](super::T5Weights::infer_config)
/// reads any other size from a checkpoint's shapes.
#[derive(Config, Debug, PartialEq)]
pub struct T5Config {
    /// Rows of the token embedding (the vocabulary, padded).
    pub vocab_size: usize,
    /// The width of the residual stream.
    pub d_model: usize,
    /// The width of one attention head.
    pub d_kv: usize,
    /// Attention heads per layer.
    pub num_heads: usize,
    /// The feed-forward's hidden width.
    pub d_ff: usize,
    /// Encoder blocks.
    pub num_layers: usize,
    /// Buckets of the relative position bias (half for keys before the query, half after).
    #[config(default = 32)]
    pub relative_attention_num_buckets: usize,
    /// Distances from this one on share the last bucket.
    #[config(default = 128)]
    pub relative_attention_max_distance: usize,
    /// The epsilon of every RMS norm.
    #[config(default = 1e-6)]
    pub layer_norm_epsilon: f64,
}

impl T5Config {
    /// T5-XXL v1.1 (google/t5-v1_1-xxl, SD3.5's `text_encoder_3`): 24 layers, d_model 4096,
    /// 64 heads of 64, d_ff 10240, 32128 embedding rows; 4.76 B parameters.
    pub fn xxl() -> Self {
        Self::new(32128, 4096, 64, 64, 10240, 24)
    }

    /// The width of all heads together, `num_heads · d_kv`.
    pub fn inner_dim(&self) -> usize {
        self.num_heads * self.d_kv
    }

    /// The number of parameters: embedding, the bias table, and per block the attention,
    /// the feed-forward and two norm weights, then the final norm.
    pub fn num_params(&self) -> usize {
        let attention = 4 * self.d_model * self.inner_dim();
        let feed_forward = 3 * self.d_model * self.d_ff;
        let block = attention + feed_forward + 2 * self.d_model;
        self.vocab_size * self.d_model
            + self.relative_attention_num_buckets * self.num_heads
            + self.num_layers * block
            + self.d_model
    }

    /// Fails on a zero size, an odd bucket count, or a max distance that leaves no room for
    /// the logarithmic buckets.
    pub fn validate(&self) -> Result<()> {
        for (name, value) in [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("d_kv", self.d_kv),
            ("num_heads", self.num_heads),
            ("d_ff", self.d_ff),
            ("num_layers", self.num_layers),
        ] {
            if value == 0 {
                return Err(Error::invalid(name, value, "at least 1"));
            }
        }
        let buckets = self.relative_attention_num_buckets;
        if buckets < 4 || !buckets.is_multiple_of(2) {
            return Err(Error::invalid(
                "relative_attention_num_buckets",
                buckets,
                "an even number, at least 4 (half for each direction)",
            ));
        }
        if self.relative_attention_max_distance <= buckets / 4 {
            return Err(Error::invalid(
                "relative_attention_max_distance",
                self.relative_attention_max_distance,
                format!("more than num_buckets / 4 = {}", buckets / 4),
            ));
        }
        if !(self.layer_norm_epsilon > 0.0 && self.layer_norm_epsilon.is_finite()) {
            return Err(Error::invalid(
                "layer_norm_epsilon",
                self.layer_norm_epsilon,
                "a positive finite number",
            ));
        }
        Ok(())
    }

    /// A randomly initialised encoder in f32 (load real weights with
    /// [`T5Weights`](super::T5Weights)).
    pub fn init(&self, device: &Device) -> Result<T5Encoder> {
        self.validate()?;
        Ok(T5Encoder::new(self, device))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xxl_has_the_published_parameter_count() {
        // transformers: sum(p.numel()) of T5EncoderModel(t5-v1_1-xxl config) = 4,762,310,656.
        assert_eq!(T5Config::xxl().num_params(), 4_762_310_656);
        assert!(T5Config::xxl().validate().is_ok());
        let odd = T5Config::xxl().with_relative_attention_num_buckets(31);
        assert!(matches!(odd.validate(), Err(Error::InvalidArgument { .. })));
    }
}
