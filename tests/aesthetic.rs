//! The aesthetic predictor's head against PyTorch (scripts/aesthetic_fixture.py): the
//! published `nn.Sequential` layout (dropouts between the linear layers, so indices 0, 2, 4,
//! 6, 7) at small widths, read from `torch.save`'s `.pth` and from safetensors.

mod common;

use std::path::{Path, PathBuf};

use burn::prelude::*;
use common::relative_error;
use flow_rl::Error;
use flow_rl::models::aesthetic::{AestheticMlpConfig, AestheticWeights};
use safetensors::SafeTensors;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/aesthetic")
        .join(name)
}

fn expected(name: &str) -> (Vec<f32>, Vec<usize>) {
    let bytes = std::fs::read(fixture("expected.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let view = file.tensor(name).unwrap();
    let values = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (values, view.shape().to_vec())
}

#[test]
fn scores_equal_pytorch_from_the_pth_and_the_safetensors_file() {
    let device = Device::default();
    let (embeddings, shape) = expected("embeddings");
    let (scores, _) = expected("scores");
    let input = Tensor::<2>::from_data(TensorData::new(embeddings, shape), &device);
    for file in ["mlp.pth", "mlp.safetensors"] {
        let weights = AestheticWeights::open(fixture(file)).unwrap();
        assert_eq!(
            weights.infer_config().unwrap(),
            AestheticMlpConfig::new()
                .with_input(8)
                .with_hidden(vec![16, 8, 6, 4])
        );
        let mlp = weights.load(&device).unwrap();
        let ours = mlp.forward(input.clone()).unwrap();
        let ours = ours.into_data().try_to_vec::<f32>().unwrap();
        let error = relative_error(&ours, &scores);
        eprintln!("{file}: {error:e}");
        assert!(error < 1e-5, "{file}: {error:e}");
    }
}

#[test]
fn bad_input_gets_named_errors() {
    let device = Device::default();
    let mlp = AestheticWeights::open(fixture("mlp.pth"))
        .unwrap()
        .load(&device)
        .unwrap();
    let error = mlp.forward(Tensor::zeros([2, 768], &device)).unwrap_err();
    assert!(error.to_string().contains("[B, 8]"), "{error}");

    // The VAE fixture is no aesthetic head: every odd key is listed.
    let vae = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vae/single.safetensors");
    match AestheticWeights::open(vae).unwrap_err() {
        Error::WeightMismatch { problems, .. } => assert!(problems.len() > 10, "{problems:?}"),
        other => panic!("{other}"),
    }
    let error = AestheticWeights::open(fixture("missing.pth")).unwrap_err();
    assert!(matches!(error, Error::Io { .. }), "{error}");
    let error = AestheticMlpConfig::new()
        .with_hidden(vec![4, 0])
        .init(&device)
        .unwrap_err();
    assert!(error.to_string().contains("positive widths"), "{error}");
}
