"""A TorchServe 0.12 handler doing what its built-in ``image_classifier`` does, without
torchvision: decode (PIL), resize the shorter side to 256 (bilinear), centre-crop 224, scale to
[0, 1], ImageNet-normalise, forward, softmax, top 5.

Used by ``gpu_benchmark.py`` where TorchServe's Python has no working torchvision (its
built-in ``image_classifier`` imports it); the same steps as torchwick's ``image_classifier``,
so the two servers do the same work per request.
"""

import io

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from PIL import Image
from ts.torch_handler.base_handler import BaseHandler

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def _transform(raw):
    image = Image.open(io.BytesIO(raw)).convert("RGB")
    width, height = image.size
    size = (256, int(256 * height / width)) if width <= height else (int(256 * width / height), 256)
    image = image.resize(size, Image.BILINEAR)
    left = round((image.size[0] - 224) / 2.0)
    top = round((image.size[1] - 224) / 2.0)
    image = image.crop((left, top, left + 224, top + 224))
    tensor = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
    return (tensor.float().div_(255.0) - MEAN) / STD


class PilImageClassifier(BaseHandler):
    def preprocess(self, data):
        images = []
        for row in data:
            raw = row.get("data") or row.get("body")
            images.append(_transform(bytes(raw)))
        return torch.stack(images).to(self.device)

    def postprocess(self, data):
        probabilities = F.softmax(data.float(), dim=1)
        values, classes = torch.topk(probabilities, 5, dim=1)
        return [
            {str(c): v for c, v in zip(cs, vs, strict=True)}
            for cs, vs in zip(classes.tolist(), values.tolist(), strict=True)
        ]
