"""Golden values for the aesthetic predictor's head (src/models/aesthetic.rs, tested in
tests/aesthetic.rs).

The published predictor (improved-aesthetic-predictor's `sac+logos+ava1-l14-linearMSE.pth`) is
`nn.Sequential(Linear(768, 1024), Dropout, Linear(1024, 128), Dropout, Linear(128, 64), Dropout,
Linear(64, 16), Linear(16, 1))` saved with `torch.save(state_dict)` under `layers.`. This writes
the same layout at widths 8 → 16 → 8 → 6 → 4 → 1, random weights, to tests/fixtures/aesthetic/:
  mlp.pth                  torch.save of the state dict (keys layers.{0,2,4,6,7}.*)
  mlp.safetensors          the same tensors
  expected.safetensors     embeddings [5, 8] (L2-normalised) and the scores [5] in eval mode
Run with the peer venv: /work/peer-venv/bin/python scripts/aesthetic_fixture.py
"""

import os

import torch
from safetensors.torch import save_file
from torch import nn

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "aesthetic")


class Predictor(nn.Module):
    def __init__(self, widths):
        super().__init__()
        first, second, third, fourth, fifth = widths
        self.layers = nn.Sequential(
            nn.Linear(first, second),
            nn.Dropout(0.2),
            nn.Linear(second, third),
            nn.Dropout(0.2),
            nn.Linear(third, fourth),
            nn.Dropout(0.1),
            nn.Linear(fourth, fifth),
            nn.Linear(fifth, 1),
        )

    def forward(self, embeddings):
        return self.layers(embeddings)


def main():
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    model = Predictor([8, 16, 8, 6, 4]).eval()
    with torch.no_grad():
        # Weights of unit-ish gain so that every layer, bias included, moves the score.
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.6)
    state = model.state_dict()
    torch.save(state, os.path.join(OUT, "mlp.pth"))
    save_file({key: value.contiguous() for key, value in state.items()}, os.path.join(OUT, "mlp.safetensors"))
    embeddings = torch.randn(5, 8)
    embeddings = embeddings / embeddings.norm(dim=-1, keepdim=True)
    with torch.no_grad():
        scores = model(embeddings).squeeze(1)
    save_file({"embeddings": embeddings, "scores": scores}, os.path.join(OUT, "expected.safetensors"))
    print(sorted(state), scores)


if __name__ == "__main__":
    main()
