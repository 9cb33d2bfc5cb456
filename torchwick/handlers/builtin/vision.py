"""``VisionHandler``: image decoding and the standard transforms with PIL and torch only.

Each request's input (``data`` or ``body``) may be image bytes (any format PIL reads), a
base64 string of such bytes, a JSON object with a ``data`` field holding either, or a nested
list of floats used as the ``[C, H, W]`` tensor as is. Decoded images keep their mode (a
grayscale PNG stays ``L``, an RGBA PNG stays ``RGBA``), as TorchServe's ``VisionHandler``
passes them on, and go through ``image_processing`` when a subclass sets one (TorchServe
handlers assign a torchvision ``Compose`` there: ``ToTensor`` then gives one channel for
``L``). Without one they go through ``ImageTransform``, the built-in transform for the
3-channel models of the default handlers: converted to RGB, shorter side resized to
``resize`` (bilinear), centre crop ``crop_size``, scaled to [0, 1], ImageNet-normalised.
``handler: {resize: N|null, crop_size: N|null, normalize: true|false}`` in the model-config
overrides the class defaults.

Failure mode: a request whose input cannot be decoded, is too large for PIL's decompression
bomb limit, or does not give a 3-D tensor is rejected with ``InvalidInput`` (400) naming the
problem; the rest of the batch runs.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..base_handler import BaseHandler
from ..context import Context
from ..errors import InvalidInput

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def decode_image(raw: bytes | bytearray, max_pixels: int | None = None) -> Image.Image:
    """The decoded PIL image in its own mode (``L``, ``RGB``, ``RGBA``, ``P``...), or
    ``InvalidInput``. The pixels are loaded here, so a truncated file fails here. An image
    whose header declares more than ``max_pixels`` pixels is refused before any pixel is
    decoded (a small PNG can declare gigapixels)."""
    if not raw:
        raise InvalidInput("the image is empty")
    try:
        with Image.open(io.BytesIO(bytes(raw))) as opened:
            width, height = opened.size
            if max_pixels is not None and width * height > max_pixels:
                raise InvalidInput(
                    f"the image has {width}x{height} pixels, more than max_image_pixels "
                    f"({max_pixels})"
                )
            opened.load()
            # copy(): the returned image must outlive the ``with`` that closes the file.
            return opened.copy()
    except Image.DecompressionBombError as exc:
        raise InvalidInput(f"the image is too large to decode: {exc}") from None
    except UnidentifiedImageError:
        # PIL's own text names a BytesIO object and its address: useless to a client.
        raise InvalidInput("the input is not a decodable image (unknown format)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidInput(f"the input is not a decodable image ({exc})") from None


def resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
    """Scale so that the shorter side is ``size`` (the longer side is truncated, not rounded)."""
    width, height = image.size
    if min(width, height) == size:
        return image
    if width <= height:
        new_size = (size, int(size * height / width))
    else:
        new_size = (int(size * width / height), size)
    return image.resize(new_size, Image.Resampling.BILINEAR)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """The central ``size`` x ``size`` square (zero-padded where the image is smaller)."""
    width, height = image.size
    left = round((width - size) / 2.0)
    top = round((height - size) / 2.0)
    return image.crop((left, top, left + size, top + size))


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """``[3, H, W]`` float tensor in [0, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


class ImageTransform:
    """Resize -> centre crop -> to tensor -> normalise; each step optional."""

    def __init__(
        self,
        resize: int | None = 256,
        crop_size: int | None = 224,
        mean: tuple[float, ...] | None = IMAGENET_MEAN,
        std: tuple[float, ...] | None = IMAGENET_STD,
    ) -> None:
        self.resize = resize
        self.crop_size = crop_size
        self.mean = mean
        self.std = std

    def __call__(self, image: Image.Image) -> torch.Tensor:
        # The default handlers serve 3-channel models: grayscale, palette and RGBA images are
        # converted here (TorchServe's default transform fails on them instead).
        if image.mode != "RGB":
            image = image.convert("RGB")
        if self.resize:
            image = resize_shorter_side(image, self.resize)
        if self.crop_size:
            image = center_crop(image, self.crop_size)
        tensor = image_to_tensor(image)
        if self.mean is not None and self.std is not None:
            mean = torch.tensor(self.mean).view(-1, 1, 1)
            std = torch.tensor(self.std).view(-1, 1, 1)
            tensor = (tensor - mean) / std
        return tensor


class VisionHandler(BaseHandler):
    """Base for image handlers: per-request decoding and batching (see module docstring)."""

    #: ``preprocess`` reads only the rows and fixed settings (see ``handlers.staged``).
    pipeline_safe = True

    #: A subclass may set a PIL-image -> tensor callable (e.g. a torchvision ``Compose``).
    image_processing: Callable[[Image.Image], torch.Tensor] | None = None
    resize_size: int | None = 256
    crop_size: int | None = 224
    normalize = True
    #: Most pixels of one decoded image (the server's ``max_image_pixels``, set at initialize).
    max_pixels: int | None = 50_000_000

    def __init__(self) -> None:
        super().__init__()
        self.transform = ImageTransform(self.resize_size, self.crop_size)

    def initialize(self, context: Context) -> None:
        super().initialize(context)
        config = self.handler_config
        normalize = bool(config.get("normalize", self.normalize))
        self.transform = ImageTransform(
            config.get("resize", self.resize_size),
            config.get("crop_size", self.crop_size),
            IMAGENET_MEAN if normalize else None,
            IMAGENET_STD if normalize else None,
        )
        self.max_pixels = context.system_properties.get("max_image_pixels", self.max_pixels)
        if not context.system_properties.get("limit_max_image_pixels", True):
            # TorchServe's switch for very large images: lifts PIL's (process-wide) limit
            # and torchwick's max_image_pixels.
            Image.MAX_IMAGE_PIXELS = None
            self.max_pixels = None

    def image_from_request(self, row: Any) -> torch.Tensor:
        """One request's ``[C, H, W]`` tensor (``InvalidInput`` on anything unusable)."""
        value = self.request_payload(row)
        if isinstance(value, dict) and "data" in value:
            value = value["data"]
        if isinstance(value, str):
            try:
                value = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidInput(
                    "text input must be a base64-encoded image; send raw image bytes otherwise"
                ) from None
        if isinstance(value, (bytes, bytearray)):
            image = decode_image(value, self.max_pixels)
            processing = self.image_processing or self.transform
            tensor = processing(image)
        elif isinstance(value, list):
            try:
                tensor = torch.tensor(value, dtype=torch.float32)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise InvalidInput(f"the list input is not a regular tensor: {exc}") from None
        else:
            raise InvalidInput(
                "expected image bytes, a base64 string or a nested list of floats, "
                f"got {type(value).__name__}"
            )
        if tensor.dim() != 3:
            raise InvalidInput(f"expected a [C, H, W] image, got shape {list(tensor.shape)}")
        return self.check_sample_shape(tensor)

    def preprocess(self, data: list[dict[str, Any]]) -> Any:
        return self.batch_tensors(self.map_requests(data, self.image_from_request))
