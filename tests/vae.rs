//! The SD3 VAE decoder against diffusers' `AutoencoderKL.decode`: a tiny VAE with SD3's
//! layout (16 latent channels, no post-quant conv, blocks [4, 8, 8], 2 norm groups) and
//! every parameter random (tests/fixtures/vae, made by scripts/vae_fixture.py), as a
//! diffusers `vae/` folder and as an ldm single file under `first_stage_model.`, decoding
//! non-square latents [3, 16, 3, 5].

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::prelude::*;
use burn::tensor::{DType, FloatDType};
use common::relative_error;
use flow_rl::Error;
use flow_rl::models::vae::{VaeDecoder, VaeDecoderConfig, VaeWeights};
use flow_rl::reward::LatentDecoder;
use safetensors::SafeTensors;

/// f32 against diffusers in f32: the same operations in another order.
const F32_TOLERANCE: f32 = 1e-4;
/// bf16 weights and activations (GroupNorm and attention scores in f32) against diffusers in
/// f32: every weight and activation carries a rounding error up to 2⁻⁹ ≈ 2e-3 through ten
/// convolutions of random weights; the measured worst case over every pixel is 4.1e-2.
const BF16_TOLERANCE: f32 = 5e-2;
/// f16 likewise, with 2⁻¹¹ ≈ 4.9e-4 rounding; measured 9.5e-3.
const F16_TOLERANCE: f32 = 2e-2;

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/vae")
        .join(path)
}

/// The fixture's latents, clamped pixels and u8 images (HWC), with their shapes.
struct Expected {
    latents: (Vec<f32>, Vec<usize>),
    pixels: (Vec<f32>, Vec<usize>),
    images: Vec<u8>,
}

impl Expected {
    fn load() -> Self {
        let bytes = std::fs::read(fixture("expected.safetensors")).unwrap();
        let file = SafeTensors::deserialize(&bytes).unwrap();
        let floats = |name: &str| {
            let view = file.tensor(name).unwrap();
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (values, view.shape().to_vec())
        };
        Self {
            latents: floats("latents"),
            pixels: floats("pixels"),
            images: file.tensor("images").unwrap().data().to_vec(),
        }
    }

    fn latents(&self, device: &Device) -> Tensor<4> {
        let (values, shape) = &self.latents;
        Tensor::from_data(TensorData::new(values.clone(), shape.clone()), device)
    }
}

fn layouts() -> [PathBuf; 2] {
    [fixture("diffusers"), fixture("single.safetensors")]
}

fn fixture_config() -> VaeDecoderConfig {
    VaeDecoderConfig::new(vec![4, 8, 8]).with_norm_groups(2)
}

fn load(path: &Path, dtype: Option<FloatDType>, device: &Device) -> VaeDecoder {
    let weights = VaeWeights::open(path).unwrap();
    let decoder = fixture_config().init(device).unwrap();
    weights.load_into(decoder, dtype).unwrap()
}

fn host(tensor: Tensor<4>) -> Vec<f32> {
    tensor
        .cast(DType::F32)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
}

fn image_bytes(images: &[image::RgbImage]) -> Vec<u8> {
    images
        .iter()
        .flat_map(|image| image.as_raw().clone())
        .collect()
}

#[test]
fn both_layouts_decode_as_diffusers_does() {
    let device = Device::default();
    let expected = Expected::load();
    for path in layouts() {
        let vae = load(&path, None, &device);
        let pixels = vae.decode(expected.latents(&device)).unwrap();
        assert_eq!(pixels.dims().to_vec(), expected.pixels.1, "{path:?}");
        let error = relative_error(&host(pixels), &expected.pixels.0);
        eprintln!("{path:?}: f32 relative error {error}");
        assert!(error < F32_TOLERANCE, "{path:?}: relative error {error}");
        let images = vae.decode_images(expected.latents(&device), 3).unwrap();
        assert_eq!(images[0].dimensions(), (20, 12));
        assert_eq!(image_bytes(&images), expected.images, "{path:?}");
    }
}

#[test]
fn the_config_is_inferred_from_config_json_and_from_shapes() {
    let from_json = VaeWeights::open(fixture("diffusers"))
        .unwrap()
        .infer_config()
        .unwrap();
    assert_eq!(from_json, fixture_config());
    // A single file cannot tell the group count: SD3's 32 is assumed, which does not divide
    // this fixture's widths, so it must be given (as `load` above does).
    let err = VaeWeights::open(fixture("single.safetensors"))
        .unwrap()
        .infer_config()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    assert!(
        err.to_string().contains("[4, 8, 8]") && err.to_string().contains("norm_groups 32"),
        "{err}"
    );
    // A diffusers root folder is read through its vae/.
    let root = tempfile::tempdir().unwrap();
    let vae = root.path().join("vae");
    std::fs::create_dir(&vae).unwrap();
    for file in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(fixture("diffusers").join(file), vae.join(file)).unwrap();
    }
    let device = Device::default();
    let loaded = VaeWeights::open(root.path())
        .unwrap()
        .load(None, &device)
        .unwrap();
    assert_eq!(loaded.config(), &fixture_config());
}

#[test]
fn bf16_stays_close() {
    let device = Device::default();
    let expected = Expected::load();
    let vae = load(&layouts()[1], Some(FloatDType::BF16), &device);
    assert_eq!(vae.activation_dtype(), DType::BF16);
    let pixels = vae.decode(expected.latents(&device)).unwrap();
    assert_eq!(pixels.dtype(), DType::F32);
    let error = relative_error(&host(pixels), &expected.pixels.0);
    eprintln!("bf16 relative error {error}");
    assert!(error < BF16_TOLERANCE, "relative error {error}");
    let cast = load(&layouts()[0], None, &device).with_dtype(FloatDType::BF16);
    let again = host(cast.decode(expected.latents(&device)).unwrap());
    assert!(relative_error(&again, &expected.pixels.0) < BF16_TOLERANCE);
}

#[test]
fn chunked_decoding_equals_one_pass() {
    let device = Device::default();
    let expected = Expected::load();
    let vae = load(&layouts()[0], None, &device);
    let whole = vae.decode_images(expected.latents(&device), 3).unwrap();
    for chunk in [1, 2, 5] {
        let chunked = vae.decode_images(expected.latents(&device), chunk).unwrap();
        assert_eq!(chunked, whole, "chunk {chunk}");
    }
    let err = vae.decode_images(expected.latents(&device), 0).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
}

#[test]
fn the_image_decoder_gives_the_same_images_through_a_latent_decoder() {
    let device = Device::default();
    let expected = Expected::load();
    let vae = load(&layouts()[1], None, &device);
    let decoder = LatentDecoder::new(vae, 3, 5)
        .unwrap()
        .with_chunk_size(2)
        .unwrap();
    let samples = expected.latents(&device).reshape([3, 16 * 3 * 5]);
    let images = decoder.images(&samples).unwrap();
    assert_eq!(image_bytes(&Arc::unwrap_or_clone(images)), expected.images);
}

#[test]
fn a_wrong_channel_count_is_a_shape_error() {
    let device = Device::default();
    let vae = VaeDecoderConfig::tiny().init(&device).unwrap();
    let err = vae
        .decode(Tensor::zeros([1, 4, 2, 2], &device))
        .unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    assert!(err.to_string().contains("16"), "{err}");
    let pixels = vae.decode(Tensor::zeros([2, 16, 3, 2], &device)).unwrap();
    assert_eq!(pixels.dims(), [2, 3, 6, 4]);
    let bad = VaeDecoderConfig::new(vec![12, 24]).with_norm_groups(8);
    assert!(matches!(
        bad.init(&device),
        Err(Error::InvalidArgument { .. })
    ));
}

/// The single file rewritten with one decoder key renamed and one mis-shaped.
#[test]
fn weight_mismatches_list_renamed_and_mis_shaped_keys() {
    let bytes = std::fs::read(fixture("single.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let renamed = "first_stage_model.decoder.mid.attn_1.q.weight";
    let reshaped = "first_stage_model.decoder.conv_in.bias";
    let short = vec![0u8; 4 * 7];
    let mut tensors = Vec::new();
    for (name, view) in file.tensors() {
        let (name, view) = match name.as_str() {
            key if key == renamed => (
                "first_stage_model.decoder.mid.attn_1.query.weight".into(),
                view,
            ),
            key if key == reshaped => (
                name.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![7], &short)
                    .unwrap(),
            ),
            _ => (name, view),
        };
        tensors.push((name, view));
    }
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("broken.safetensors");
    std::fs::write(&path, safetensors::serialize(tensors, None).unwrap()).unwrap();
    let device = Device::default();
    let decoder = fixture_config().init(&device).unwrap();
    let Err(Error::WeightMismatch { problems, .. }) =
        VaeWeights::open(&path).unwrap().load_into(decoder, None)
    else {
        panic!("expected WeightMismatch");
    };
    let kinds: Vec<(&str, &str)> = problems
        .iter()
        .map(|p| (p.key.as_str(), p.kind()))
        .collect();
    assert!(kinds.contains(&(renamed, "missing")), "{kinds:?}");
    assert!(
        kinds.contains(&(
            "first_stage_model.decoder.mid.attn_1.query.weight",
            "unexpected"
        )),
        "{kinds:?}"
    );
    assert!(kinds.contains(&(reshaped, "mis-shaped")), "{kinds:?}");
    assert_eq!(problems.len(), 3, "{kinds:?}");
}

#[test]
fn a_post_quant_conv_is_refused() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("sdxl_vae.safetensors");
    let data = vec![0u8; 16];
    let view = |shape: Vec<usize>| {
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, &data).unwrap()
    };
    let bytes = safetensors::serialize(
        [
            ("decoder.conv_in.weight", view(vec![4])),
            ("post_quant_conv.weight", view(vec![4])),
        ],
        None,
    )
    .unwrap();
    std::fs::write(&path, bytes).unwrap();
    let err = VaeWeights::open(&path).unwrap_err().to_string();
    assert!(err.contains("post_quant_conv"), "{err}");
    let empty = tempfile::tempdir().unwrap();
    let err = VaeWeights::open(empty.path()).unwrap_err().to_string();
    assert!(err.contains("diffusion_pytorch_model.safetensors"), "{err}");
}

/// SD3's decoder has diffusers' parameter count (49,545,475 in 138 tensors, counted from
/// `AutoencoderKL(block_out_channels=[128, 256, 512, 512], latent_channels=16, …).decoder`)
/// and upsamples ×8.
#[test]
fn the_sd3_preset_has_diffusers_parameter_count() {
    use burn::module::Module;
    use burn::store::ModuleSnapshot;
    let device = Device::default();
    let vae = VaeDecoderConfig::sd3().init(&device).unwrap();
    assert_eq!(vae.num_params(), 49_545_475);
    assert_eq!(vae.collect(None, None, false).len(), 138);
    let pixels = vae.decode(Tensor::zeros([1, 16, 2, 3], &device)).unwrap();
    assert_eq!(pixels.dims(), [1, 3, 16, 24]);
}

#[test]
fn f16_stays_close() {
    let device = Device::default();
    let expected = Expected::load();
    let vae = load(&layouts()[0], Some(FloatDType::F16), &device);
    assert_eq!(vae.activation_dtype(), DType::F16);
    let pixels = host(vae.decode(expected.latents(&device)).unwrap());
    let error = relative_error(&pixels, &expected.pixels.0);
    eprintln!("f16 relative error {error}");
    assert!(error < F16_TOLERANCE, "relative error {error}");
}
