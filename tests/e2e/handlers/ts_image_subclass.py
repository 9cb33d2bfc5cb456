"""A subclass of TorchServe's ``ImageClassifier`` with its own transform and postprocess,
as in TorchServe's MNIST example: the answer is the class index alone."""

import numpy as np
import torch
from PIL import Image
from ts.torch_handler.image_classifier import ImageClassifier


class ToSmallTensor:
    """PIL image -> [3, 32, 32] float tensor in [0, 1] (what a torchvision Compose does)."""

    def __call__(self, image):
        image = image.convert("RGB").resize((32, 32), Image.BILINEAR)
        array = np.asarray(image, dtype=np.float32) / 255.0
        return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class DigitLikeClassifier(ImageClassifier):
    image_processing = ToSmallTensor()

    def postprocess(self, data):
        return data.argmax(1).tolist()
