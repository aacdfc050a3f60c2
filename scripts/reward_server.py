#!/usr/bin/env python3
"""A reference server of UniRL's reward-service protocol that scores PickScore.

    python scripts/reward_server.py MODEL_FOLDER [--host 127.0.0.1] [--port 8000]

MODEL_FOLDER is a local transformers CLIP folder (config, weights, tokenizer and image
processor files), e.g. PickScore_v1 with the CLIP-H processor files beside it. Nothing is
downloaded.

Protocol (docs/rewards.md): POST /score with the JSON body
    {"requests": [{"history": [{"text": PROMPT, "image_b64": BASE64_IMAGE}],
                   "required_rewards": ["pickscore"], "metadata": null}, ...]}
answers
    {"results": [{"pickscore": {"pickscore": SCORE}}, ...], "errors": [{}, ...]}
where SCORE = exp(logit_scale) * cos(text, image) / 26, PickScore as UniRL and flow_grpo
scale it. A request for another reward gets its name in that sample's `errors`; a body
that is not such a request gets HTTP 400; a failure while scoring gets HTTP 500.
GET /health answers {"status": "ok", "rewards": {"pickscore": ["pickscore"]}}.
Standard library HTTP server, one request at a time.
"""

import argparse
import base64
import io
import json
import sys
import traceback
from http.server import BaseHTTPRequestHandler, HTTPServer

import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

REWARD = "pickscore"
# PickScore's logits are divided by 26 in UniRL's and flow_grpo's scorers.
PICKSCORE_DIVISOR = 26.0


class BadRequest(ValueError):
    """The body is not a score request."""


class PickScore:
    """PickScore of (prompt, image) pairs with a local CLIP model."""

    def __init__(self, folder):
        self.model = CLIPModel.from_pretrained(folder).eval()
        self.processor = CLIPProcessor.from_pretrained(folder)

    @torch.inference_mode()
    def __call__(self, prompts, images):
        image_inputs = self.processor(images=images, return_tensors="pt")
        text_inputs = self.processor(
            text=prompts, padding=True, truncation=True, max_length=77, return_tensors="pt"
        )
        image_features = self.model.get_image_features(**image_inputs)
        text_features = self.model.get_text_features(**text_inputs)
        # transformers 5 may wrap the projected features in an output object.
        image_features = getattr(image_features, "pooler_output", image_features)
        text_features = getattr(text_features, "pooler_output", text_features)
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        cosine = (image_features * text_features).sum(dim=-1)
        return (self.model.logit_scale.exp() * cosine / PICKSCORE_DIVISOR).tolist()


def parse_requests(body):
    """The (prompt, image, wanted rewards) of every request in a /score body."""
    try:
        payload = json.loads(body)
        requests = payload["requests"]
        if not isinstance(requests, list):
            raise BadRequest("`requests` is not a list")
        samples = []
        for index, request in enumerate(requests):
            turn = request["history"][-1]
            image = Image.open(io.BytesIO(base64.b64decode(turn["image_b64"]))).convert("RGB")
            samples.append((turn["text"], image, list(request["required_rewards"])))
        return samples
    except BadRequest:
        raise
    except (KeyError, IndexError, TypeError, ValueError, OSError) as error:
        raise BadRequest(f"not a score request: {error!r}") from error


def score_answer(scorer, samples):
    """The /score answer for parsed samples."""
    results = [{} for _ in samples]
    errors = [{} for _ in samples]
    wanted = [i for i, (_, _, rewards) in enumerate(samples) if REWARD in rewards]
    if wanted:
        scores = scorer([samples[i][0] for i in wanted], [samples[i][1] for i in wanted])
        for i, score in zip(wanted, scores):
            results[i][REWARD] = {REWARD: float(score)}
    for i, (_, _, rewards) in enumerate(samples):
        for name in rewards:
            if name != REWARD:
                errors[i][name] = f"reward {name!r} is not served here (only {REWARD!r})"
    return {"results": results, "errors": errors}


def make_handler(scorer):
    class Handler(BaseHTTPRequestHandler):
        def send_json(self, status, value):
            body = json.dumps(value).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path.rstrip("/") == "/health":
                self.send_json(200, {"status": "ok", "rewards": {REWARD: [REWARD]}})
            else:
                self.send_json(404, {"detail": f"no route {self.path}"})

        def do_POST(self):
            if self.path.rstrip("/") != "/score":
                self.send_json(404, {"detail": f"no route {self.path}"})
                return
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            try:
                samples = parse_requests(body)
            except BadRequest as error:
                self.send_json(400, {"detail": str(error)})
                return
            try:
                self.send_json(200, score_answer(scorer, samples))
            except Exception:  # noqa: BLE001 - any scoring failure is the server's
                traceback.print_exc()
                self.send_json(500, {"detail": traceback.format_exc(limit=3)})

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="local CLIP model folder (transformers format)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    scorer = PickScore(args.model)
    server = HTTPServer((args.host, args.port), make_handler(scorer))
    print(f"serving {REWARD} from {args.model} at http://{args.host}:{args.port}", file=sys.stderr)
    server.serve_forever()


if __name__ == "__main__":
    main()
